"""Exclusive locks on a Dagster instance's storage, held by one process for as long as it lives.

``mail-pipeline daemon`` takes one before it starts ``dagster-daemon run``
(:mod:`mail_pipeline.services.daemon_guard`), so a second daemon for the same instance refuses
to start:

- PostgreSQL storage (:class:`AdvisoryLock`): a session-level ``pg_try_advisory_lock`` on
  :data:`DAEMON_LOCK_KEY` in the Dagster storage database, on a connection of its own in
  autocommit mode - an idle session, never an idle transaction that would hold back vacuum.
  PostgreSQL releases it when the session ends: the holder exits or is killed (the kernel
  closes its socket), or its host vanishes (the session's TCP keepalives notice a dead peer
  within about two minutes). Advisory locks belong to one database, so two instances on two
  databases of one server never meet. The URL must reach PostgreSQL itself or a session-mode
  pooler: through a transaction-mode pooler a session lock means nothing.
- SQLite storage (:class:`FileLock`): ``fcntl.flock`` on a file in ``DAGSTER_HOME``, which the
  kernel releases when the holding process dies. The file stays; only the lock comes and goes.

Both take the lock without waiting: :meth:`acquire` returns ``None`` when it got the lock, or
says who holds it. :meth:`verify` raises :class:`LockLost` when a held lock is no longer
held: a PostgreSQL session cut by a server restart or a failover, a lock file removed or
replaced (a new file is a new lock that someone else could take).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from mail_pipeline.db.engine import normalize_url

#: The advisory lock key of "the dagster-daemon of this instance": the bytes ``maildaem``.
DAEMON_LOCK_KEY = int.from_bytes(b"maildaem", "big")
#: The lock file's name in ``DAGSTER_HOME`` (SQLite storage).
DAEMON_LOCK_FILE = "mail-pipeline-daemon.lock"

_HOLDER_QUERY = text(
    """
    SELECT a.pid, a.application_name, a.client_addr, a.backend_start
    FROM pg_locks AS l
    LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = CAST(:high AS bigint)::oid
      AND l.objid = CAST(:low AS bigint)::oid
      AND l.objsubid = 1
    """
)
_HELD_BY_ME = text(
    """
    SELECT count(*) FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
      AND classid = CAST(:high AS bigint)::oid
      AND objid = CAST(:low AS bigint)::oid
      AND objsubid = 1
    """
)


class LockLost(RuntimeError):
    """A lock this process held is no longer held."""


def this_process() -> str:
    """How a holder names itself: host and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class AdvisoryLock:
    """A session-level advisory lock in a PostgreSQL database."""

    def __init__(self, url: str, key: int = DAEMON_LOCK_KEY) -> None:
        self.url = url
        self.key = key
        parsed = make_url(url)
        self.description = (
            f"PostgreSQL advisory lock {key} in database {parsed.database!r} on "
            f"{parsed.host or 'the local socket'}"
        )
        self._connection: Connection | None = None

    @property
    def _key_parts(self) -> dict[str, int]:
        # A bigint key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
        return {"high": (self.key >> 32) & 0xFFFFFFFF, "low": self.key & 0xFFFFFFFF}

    def acquire(self) -> str | None:
        """Take the lock: ``None`` when taken, else who holds it."""
        engine = create_engine(
            normalize_url(self.url),
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,
            connect_args={
                "application_name": f"mail-pipeline daemon {this_process()}"[:63],
                "connect_timeout": 10,
                # The client notices a dead server, as the server notices a dead client.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 6,
            },
        )
        connection = engine.connect()
        try:
            # The server drops the session, and so the lock, soon after the host vanished.
            for setting, value in (
                ("tcp_keepalives_idle", 30),
                ("tcp_keepalives_interval", 10),
                ("tcp_keepalives_count", 6),
            ):
                connection.execute(text(f"SET {setting} = {value}"))
            if (connection.dialect.server_version_info or (0,)) >= (14,):
                # An idle session is what holding the lock looks like: never time it out.
                connection.execute(text("SET idle_session_timeout = 0"))
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            ).scalar_one()
            if taken:
                self._connection = connection
                return None
            return self._holder(connection)
        finally:
            if self._connection is None:
                connection.close()

    def _holder(self, connection: Connection) -> str:
        row = connection.execute(_HOLDER_QUERY, self._key_parts).first()
        if row is None:  # released between the attempt and this look
            return "a session that just released it"
        pid, application, client, since = row
        parts = [f"PostgreSQL backend {pid}"]
        if application:
            parts.append(f"({application})")
        if client is not None:
            parts.append(f"from {client}")
        if since is not None:
            parts.append(f"connected since {since:%Y-%m-%d %H:%M:%S %Z}".rstrip())
        return " ".join(parts)

    def verify(self) -> None:
        if self._connection is None:
            raise LockLost(f"{self.description} is not held")
        try:
            held = self._connection.execute(_HELD_BY_ME, self._key_parts).scalar_one()
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            first_line = (str(cause).splitlines() or [""])[0]
            raise LockLost(
                f"the session holding the {self.description} ended "
                f"({type(cause).__name__}: {first_line})"
            ) from exc
        if not held:
            raise LockLost(f"the {self.description} is no longer held by this session")

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(SQLAlchemyError):
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        with contextlib.suppress(SQLAlchemyError):
            connection.close()


class FileLock:
    """``flock`` on a file; the file says who holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"lock file {path}"
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock: ``None`` when taken, else who holds it. Raises ``OSError`` when
        the file cannot be opened (its directory is missing or not writable)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            return holder or "a process that has not written its name yet"
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.pwrite(fd, f"{this_process()} since {since}\n".encode(), 0)
        self._fd = fd
        return None

    def verify(self) -> None:
        if self._fd is None:
            raise LockLost(f"the {self.description} is not held")
        held = os.fstat(self._fd)
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            raise LockLost(f"the {self.description} was removed") from None
        if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            raise LockLost(f"the {self.description} was replaced by another file")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file drops the flock


def instance_lock(postgres_url: str | None, dagster_home: Path) -> AdvisoryLock | FileLock:
    """The daemon lock of an instance: advisory on its PostgreSQL storage database, else a
    lock file in its ``DAGSTER_HOME``."""
    if postgres_url:
        return AdvisoryLock(postgres_url)
    return FileLock(dagster_home / DAEMON_LOCK_FILE)
