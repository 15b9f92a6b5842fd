"""The instance locks: one holder at a time, who holds it is said, a dead holder's lock is
free again, and a lock that is no longer held is noticed (SQLite's lock file always,
PostgreSQL's advisory lock when a server is there)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import normalize_url
from mail_pipeline.db.instance_locks import (
    DAEMON_LOCK_FILE,
    AdvisoryLock,
    FileLock,
    LockLost,
    instance_lock,
)
from tests.supervision.conftest import STARTUP, wait_for

HOLDER = """
import sys, time
from pathlib import Path
from mail_pipeline.db.instance_locks import instance_lock
lock = instance_lock(sys.argv[1] or None, Path(sys.argv[2]))
assert lock.acquire() is None
print("held", flush=True)
time.sleep(600)
"""


def _hold_in_other_process(url: str | None, home: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url or "", str(home)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_instance_lock_is_advisory_on_postgres_storage_and_a_file_otherwise(
    tmp_path: Path,
) -> None:
    on_postgres = instance_lock("postgresql+psycopg2://u@db.internal:5432/dagster", tmp_path)
    assert isinstance(on_postgres, AdvisoryLock)
    assert "database 'dagster' on db.internal" in on_postgres.description
    on_sqlite = instance_lock(None, tmp_path)
    assert isinstance(on_sqlite, FileLock)
    assert on_sqlite.path == tmp_path / DAEMON_LOCK_FILE


def test_file_lock_has_one_holder_and_says_who(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    assert first.acquire() is None
    holder = second.acquire()
    assert holder is not None
    assert f"pid {os.getpid()}" in holder and "since" in holder
    first.verify()
    first.release()
    assert second.acquire() is None
    second.release()


def test_file_lock_of_a_killed_holder_is_free_again(dagster_home: Path) -> None:
    holder = _hold_in_other_process(None, dagster_home)
    lock = instance_lock(None, dagster_home)
    try:
        refused = lock.acquire()
        assert refused is not None and f"pid {holder.pid}" in refused
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.acquire() is None
    lock.release()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_file_lock_noticed_lost_when_its_file_goes(tmp_path: Path, how: str) -> None:
    path = tmp_path / "x.lock"
    lock = FileLock(path)
    assert lock.acquire() is None
    path.unlink()
    if how == "replaced":
        path.write_text("someone else\n")
    with pytest.raises(LockLost, match=how):
        lock.verify()
    lock.release()


def test_advisory_lock_has_one_holder_per_database_and_says_who(
    postgres_database: str, postgres_server: str
) -> None:
    first, second = AdvisoryLock(postgres_database), AdvisoryLock(postgres_database)
    assert first.acquire() is None
    try:
        holder = second.acquire()
        assert holder is not None
        assert "PostgreSQL backend" in holder
        assert f"mail-pipeline daemon {os.uname().nodename} pid {os.getpid()}"[:40] in holder
        first.verify()
        # Another database of the same server is another instance: its lock is free.
        other = AdvisoryLock(
            sa.engine.make_url(postgres_server)
            .set(drivername="postgresql+psycopg")
            .render_as_string(hide_password=False)
        )
        assert other.acquire() is None
        other.release()
    finally:
        first.release()
    assert second.acquire() is None
    second.release()


def test_advisory_lock_of_a_killed_holder_is_free_again(
    postgres_database: str, tmp_path: Path
) -> None:
    holder = _hold_in_other_process(postgres_database, tmp_path)
    lock = AdvisoryLock(postgres_database)
    try:
        assert lock.acquire() is not None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The server ends the session when it reads the closed socket: at once, or nearly.
    wait_for(lambda: lock.acquire() is None, STARTUP, "the killed holder's lock to be freed")
    lock.release()


def test_advisory_lock_noticed_lost_when_its_session_is_cut(postgres_database: str) -> None:
    lock = AdvisoryLock(postgres_database)
    assert lock.acquire() is None
    engine = sa.create_engine(normalize_url(postgres_database), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        cut = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name LIKE 'mail-pipeline daemon%'"
            )
        ).all()
    engine.dispose()
    assert cut == [(True,)]
    time.sleep(0.2)
    with pytest.raises(LockLost, match="session holding"):
        lock.verify()
    lock.release()
