"""Which kind of environment an app database serves (``app_environment``), and the check that
keeps each process to its own kind (the rules are in :mod:`mail_pipeline.domain.environments`).

- :func:`check_database_environment` runs before the first unit of work a process opens on a
  URL (``resources.database.Database.session`` and the CLI call it); it reads the stamp once
  per process, URL and environment kind, then answers from memory, so a sensor ticking every
  few seconds does not pay a query for it.
- :func:`check_before_migration` and :func:`stamp_after_migration` surround
  ``db.migrate.upgrade``: a migration never touches a database of the wrong kind, and leaves
  an unstamped database stamped with the migrating process's kind.
"""

from __future__ import annotations

import socket
import sys
import threading

from sqlalchemy import Connection, exists, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from mail_pipeline.db.engine import engine_for, normalize_url
from mail_pipeline.db.models import AppEnvironment, Organization
from mail_pipeline.domain.environments import Environment, database_refusal, stamp_refusal

_checked: set[tuple[str, Environment]] = set()
_lock = threading.Lock()


class DatabaseEnvironmentRefused(RuntimeError):
    """This process must not use (or migrate) this database; the message says why."""

    def __init__(self, url: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"refusing the database {_safe(url)}: {reason}")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def read_stamp(connection: Connection) -> Environment | None:
    """The kind the database serves, or None if it is not stamped (or predates the table)."""
    if not inspect(connection).has_table(AppEnvironment.__tablename__):
        return None
    return connection.execute(
        select(AppEnvironment.environment).where(AppEnvironment.id == 1)
    ).scalar_one_or_none()


def check_database_environment(url: str, process: Environment) -> None:
    """Raise :class:`DatabaseEnvironmentRefused` unless a ``process``-kind process may use the
    database at ``url``. Cached per process: only the first call per URL and kind reads."""
    key = (normalize_url(url), process)
    if key in _checked:
        return
    with engine_for(url).connect() as connection:
        stamp = read_stamp(connection)
    reason = database_refusal(process, stamp)
    if reason is not None:
        raise DatabaseEnvironmentRefused(url, reason)
    with _lock:
        _checked.add(key)


def forget_checks() -> None:
    """Forget what was checked (tests that restamp a database)."""
    with _lock:
        _checked.clear()


def check_before_migration(url: str, process: Environment) -> None:
    """Refuse to migrate a database stamped for a kind this process must not use. An
    unstamped or brand-new database may be migrated (it is stamped afterwards)."""
    with engine_for(url).connect() as connection:
        stamp = read_stamp(connection)
    if stamp is not None:
        reason = database_refusal(process, stamp)
        if reason is not None:
            raise DatabaseEnvironmentRefused(url, reason)


def stamp_after_migration(url: str, process: Environment, stamped_by: str | None = None) -> None:
    """Stamp an unstamped database with ``process``'s kind (a stamped one keeps its stamp:
    :func:`check_before_migration` already accepted it)."""
    engine = engine_for(url)
    with engine.begin() as connection:
        if not inspect(connection).has_table(AppEnvironment.__tablename__):
            return  # migrated to a revision before the table: the next upgrade stamps
        if read_stamp(connection) is not None:
            return
        holds_data = bool(connection.scalar(select(exists().select_from(Organization))))
        reason = stamp_refusal(process, holds_data)
        if reason is not None:
            raise DatabaseEnvironmentRefused(url, reason)
        try:
            with connection.begin_nested():
                connection.execute(
                    insert(AppEnvironment).values(
                        id=1,
                        environment=process,
                        stamped_by=(stamped_by or _who())[:200],
                    )
                )
        except IntegrityError:
            pass  # another migrate stamped it at the same moment; checked below
    check_before_migration(url, process)


def _who() -> str:
    command = " ".join(sys.argv[:2]) or "python"
    return f"{socket.gethostname()}: {command}"
