"""One SQLite file shared by the processes of ``dagster dev`` (the sandbox vendors' state, the
local queues): WAL mode and a busy timeout across processes, one connection behind a lock
within a process, immediate (write-locked) transactions so read-then-write is atomic.
Opening is lazy: constructing does no I/O; the first query creates the file and the schema.
``":memory:"`` gives a private database for tests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SharedSqlite:
    def __init__(self, path: str | Path, schema: str, *, rows_as_mappings: bool = False) -> None:
        self.path = str(path)
        self._schema = schema
        self._rows_as_mappings = rows_as_mappings
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._depth = 0

    @property
    def conn(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=30, check_same_thread=False, isolation_level=None
                )
                if self._rows_as_mappings:
                    conn.row_factory = sqlite3.Row
                if self.path != ":memory:":
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.executescript(self._schema)
                self._conn = conn
            return self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction: committed at the end, rolled back on error.

        Re-entrant: a transaction opened inside another (by the same thread, which holds the
        lock) joins it, so several writes can be made atomic by wrapping them in one."""
        with self._lock:
            conn = self.conn
            if self._depth:
                self._depth += 1
                try:
                    yield conn
                finally:
                    self._depth -= 1
                return
            conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a read-only query (one statement sees one snapshot)."""
        with self._lock:
            yield self.conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
