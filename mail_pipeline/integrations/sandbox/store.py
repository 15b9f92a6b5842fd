"""Durable state for the sandbox vendors.

A sandbox stands in for a vendor, and a vendor remembers: which idempotency keys it has seen,
which postcards it accepted, which webhooks it still owes. Under ``dagster dev`` the sensors,
runs and the webserver are separate processes, so that memory lives in one SQLite file (WAL,
busy timeout) that all of them share; tests use ``":memory:"``.

The store is a small document store: ``(collection, key) -> JSON document``, insertion order
kept in ``seq``, and an optional ``due_at`` for things that happen later (webhooks, batch
completions), taken once with :meth:`SandboxStore.pop_due`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mail_pipeline.integrations.sqlite_file import SharedSqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL,
    UNIQUE (collection, key)
);
CREATE INDEX IF NOT EXISTS docs_due ON docs (collection, due_at) WHERE due_at IS NOT NULL;
"""


class SandboxStore(SharedSqlite):
    def __init__(self, path: str | Path = ":memory:") -> None:
        super().__init__(path, _SCHEMA)

    def insert_if_absent(
        self, collection: str, key: str, doc: dict[str, Any], *, due_at: float | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Store ``doc`` unless the key exists; return the stored doc and whether it was new."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM docs WHERE collection = ? AND key = ?", (collection, key)
            ).fetchone()
            if row is not None:
                return json.loads(row[0]), False
            conn.execute(
                "INSERT INTO docs (collection, key, doc, created_at, due_at) VALUES (?,?,?,?,?)",
                (collection, key, json.dumps(doc), time.time(), due_at),
            )
            return doc, True

    def put(
        self, collection: str, key: str, doc: dict[str, Any], *, due_at: float | None = None
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO docs (collection, key, doc, created_at, due_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (collection, key) DO UPDATE SET doc = excluded.doc, "
                "due_at = excluded.due_at",
                (collection, key, json.dumps(doc), time.time(), due_at),
            )

    def get(self, collection: str, key: str) -> dict[str, Any] | None:
        with self.reading() as conn:
            row = conn.execute(
                "SELECT doc FROM docs WHERE collection = ? AND key = ?", (collection, key)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def delete(self, collection: str, key: str) -> bool:
        with self.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM docs WHERE collection = ? AND key = ?", (collection, key)
            )
            return cur.rowcount > 0

    def scan(
        self, collection: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """Documents in insertion order after ``after_seq``: ``(seq, key, doc)``."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT seq, key, doc FROM docs WHERE collection = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (collection, after_seq, limit),
            ).fetchall()
        return [(seq, key, json.loads(doc)) for seq, key, doc in rows]

    def count(self, collection: str) -> int:
        with self.reading() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM docs WHERE collection = ?", (collection,)
            ).fetchone()
        return int(row[0])

    def clear(self, collection: str) -> int:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM docs WHERE collection = ?", (collection,)).rowcount

    def pop_due(
        self, collection: str, *, now: float | None = None, limit: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """Take (delete and return) the documents whose ``due_at`` has passed, oldest first."""
        now = time.time() if now is None else now
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT seq, key, doc FROM docs WHERE collection = ? AND due_at IS NOT NULL "
                "AND due_at <= ? ORDER BY due_at, seq LIMIT ?",
                (collection, now, limit),
            ).fetchall()
            if rows:
                conn.executemany("DELETE FROM docs WHERE seq = ?", [(r[0],) for r in rows])
        return [(key, json.loads(doc)) for _seq, key, doc in rows]
