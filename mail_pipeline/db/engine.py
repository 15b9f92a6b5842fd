"""Engines and transactions.

``engine_for(url)`` builds one engine per URL per process (cached, created on first use,
never at import). SQLite gets WAL, a busy timeout and enforced foreign keys so the sensors,
runs and webserver of ``dagster dev`` can share one file; PostgreSQL URLs are pointed at the
psycopg 3 driver. ``unit_of_work`` is the one place that begins, commits and rolls back.

No personal data leaves through an error: every engine is made with
``hide_parameters=True`` (a failed statement's exception and log line show the SQL, never the
bound values - a recipient's email and address), and PostgreSQL's ``DETAIL:`` line ("Failing
row contains (...)", "Key (email)=(...) already exists") is cut from the message of the
driver's exception (``_without_row_detail``). The detail stays readable on purpose through
``exc.orig.diag.message_detail``; the constraint name (``diag.constraint_name``) is enough to
say what went wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker


def dialect_insert(session: Session) -> Any:
    """``insert`` of the session's dialect (PostgreSQL or SQLite), which has ``ON CONFLICT``
    (``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"mail_pipeline runs on PostgreSQL or SQLite, not {name}")


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` use psycopg 3; other URLs pass through."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Writers take the lock when the transaction starts, not on first write: a read that
    # is followed by a write in the same transaction can then never deadlock on upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


_engines: dict[str, Engine] = {}
_sessions: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """The process's engine for ``url``, created on first use."""
    url = normalize_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def dispose_engine(url: str) -> None:
    """Close the pooled connections of ``url`` and forget its engine (tests, shutdown)."""
    url = normalize_url(url)
    with _lock:
        engine = _engines.pop(url, None)
        _sessions.pop(url, None)
    if engine is not None:
        engine.dispose()


#: libpq settings every PostgreSQL connection gets unless its URL says otherwise: a server
#: that does not answer fails a connection attempt after 10 s, and TCP keepalives find a
#: connection whose server vanished without a word (a network partition, a host gone)
#: within about a minute, instead of leaving a run or a lease renewal waiting on it for
#: hours (the kernel's default).
PG_CONNECT_DEFAULTS: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False, "isolation_level": None},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        hide_parameters=True,
        connect_args={k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in parsed.query},
    )
    event.listen(engine, "handle_error", _without_row_detail)
    return engine


def _without_row_detail(context: ExceptionContext) -> None:
    """Drop PostgreSQL's ``DETAIL:`` line, which quotes the failing row's values, from the
    text of the driver's exception and of the SQLAlchemy exception that wraps it (so from
    logs and run failures that print either)."""
    _drop_detail_lines(context.original_exception)
    if context.sqlalchemy_exception is not None:
        _drop_detail_lines(context.sqlalchemy_exception)


def _drop_detail_lines(error: BaseException) -> None:
    if not error.args or not isinstance(error.args[0], str):
        return
    lines = error.args[0].splitlines()
    kept = [line for line in lines if not line.lstrip().startswith("DETAIL:")]
    if len(kept) != len(lines):
        error.args = ("\n".join(kept), *error.args[1:])


def _session_factory(url: str) -> sessionmaker[Session]:
    key = normalize_url(url)
    factory = _sessions.get(key)
    if factory is None:
        factory = _sessions[key] = sessionmaker(bind=engine_for(url), expire_on_commit=False)
    return factory


@contextmanager
def unit_of_work(url: str) -> Iterator[Session]:
    """A session in one transaction: committed when the block ends, rolled back on error."""
    session = _session_factory(url)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


#: What services take to open a transaction: ``Database.session`` or ``partial(unit_of_work,
#: url)``; each call is one unit of work.
SessionFactory = Callable[[], AbstractContextManager[Session]]
