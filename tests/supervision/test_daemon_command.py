"""``mail-pipeline daemon`` as supervisors run it, with a cheap child in place of
dagster-daemon (``--wrapped-command``): the lock is the instance's - a lock file in
``DAGSTER_HOME`` on SQLite storage, an advisory lock in the storage database on PostgreSQL
(the URL read from the instance's ``dagster.yaml``, ``DAGSTER_PG_URL``) - a second daemon is
refused with a readable message and exit status 3, and a SIGKILLed holder's successor takes
over."""

from __future__ import annotations

import argparse
import signal
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from mail_pipeline.cli import main
from mail_pipeline.db.engine import normalize_url
from mail_pipeline.services.daemon_guard import EXIT_LOCK_LOST, EXIT_REFUSED
from mail_pipeline.supervision import _daemon_command
from tests.supervision.conftest import (
    BIN,
    STARTUP,
    alive,
    dagster_cli_answer,
    environment,
    start,
    wait_for,
)

#: The child: writes its pid, then sleeps until signalled.
CHILD = "sh -c 'echo $$ > {pidfile}; exec sleep 600'"


def _daemon(
    env: dict[str, str], tmp_path: Path, name: str, *extra: str
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    pidfile, log = tmp_path / f"{name}.pid", tmp_path / f"{name}.log"
    command = [
        str(BIN / "mail-pipeline"),
        "daemon",
        "--wrapped-command",
        CHILD.format(pidfile=pidfile),
        *extra,
    ]
    return start(command, env, log), pidfile, log


def _child_pid(pidfile: Path, wrapper: subprocess.Popen[bytes], log: Path) -> int:
    def started() -> bool:
        assert wrapper.poll() is None, log.read_text()
        return pidfile.exists() and pidfile.read_text().strip() != ""

    wait_for(started, STARTUP, "the wrapped command to start")
    return int(pidfile.read_text())


def _one_daemon_at_a_time(env: dict[str, str], tmp_path: Path, lock: str) -> None:
    first, first_pidfile, first_log = _daemon(env, tmp_path, "first")
    try:
        first_child = _child_pid(first_pidfile, first, first_log)
        assert f"holding the {lock}" in first_log.read_text()

        second, second_pidfile, second_log = _daemon(env, tmp_path, "second")
        assert second.wait(timeout=STARTUP) == EXIT_REFUSED
        refusal = second_log.read_text()
        assert "another dagster-daemon already runs for this Dagster instance" in refusal
        assert f"pid {first.pid}" in refusal
        assert not second_pidfile.exists()  # its command never ran
        assert alive(first_child)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    wait_for(lambda: not alive(first_child), 10, "the killed wrapper's child to die with it")

    third, third_pidfile, third_log = _daemon(env, tmp_path, "third")
    try:
        third_child = _child_pid(third_pidfile, third, third_log)
    finally:
        third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=STARTUP) == 128 + signal.SIGTERM  # sleep's death, passed on
    assert not alive(third_child)


@pytest.mark.slow
def test_one_daemon_per_instance_on_sqlite_storage(dagster_home: Path, tmp_path: Path) -> None:
    _one_daemon_at_a_time(
        environment(dagster_home),
        tmp_path,
        f"lock file {dagster_home / 'mail-pipeline-daemon.lock'}",
    )


@pytest.mark.slow
def test_one_daemon_per_instance_on_postgres_storage(
    postgres_home: tuple[Path, str], tmp_path: Path
) -> None:
    home, url = postgres_home
    database = sa.engine.make_url(url).database
    _one_daemon_at_a_time(
        environment(home, DAGSTER_PG_URL=url),
        tmp_path,
        f"PostgreSQL advisory lock 7881696737136567661 in database {database!r}",
    )


def test_a_cut_session_stops_the_daemon(postgres_home: tuple[Path, str], tmp_path: Path) -> None:
    """A server restart or failover ends the lock's session: the lock is gone, so the daemon
    stops (exit status 4) and its supervisor starts it again, under a new lock."""
    home, url = postgres_home
    env = environment(home, DAGSTER_PG_URL=url)
    wrapper, pidfile, log = _daemon(env, tmp_path, "cut", "--verify-every", "0.2")
    child = _child_pid(pidfile, wrapper, log)
    engine = sa.create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() "
                "AND application_name LIKE 'mail-pipeline daemon%'"
            )
        )
    engine.dispose()
    assert wrapper.wait(timeout=STARTUP) == EXIT_LOCK_LOST
    assert not alive(child)
    assert "stopping the daemon, since another one may now start" in log.read_text()


def test_a_lock_file_that_cannot_be_opened_is_a_clear_error(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    lock = dagster_home / "mail-pipeline-daemon.lock"
    lock.mkdir()  # a directory where the lock file should be: it cannot be opened
    assert main(["daemon", "--wrapped-command", "true"]) == 2
    assert f"mail-pipeline daemon: cannot take the lock file {lock}: " in capsys.readouterr().err


@pytest.mark.parametrize("command", ["daemon", "daemon-check"])
def test_no_dagster_home_is_a_clear_error(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main([command]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"mail-pipeline {command}: cannot ")
    assert "$DAGSTER_HOME is not set" in error


def test_the_wrapped_command_is_this_environments_dagster_daemon() -> None:
    args = argparse.Namespace(
        wrapped_command=None, workspace=["a.yaml", "b.yaml"], log_level=None, log_format="json"
    )
    command = _daemon_command(args)
    assert command == [
        str(BIN / "dagster-daemon"),
        "run",
        *("-w", "a.yaml", "-w", "b.yaml"),
        *("--log-format", "json"),
    ]
    status, answer = dagster_cli_answer(tuple(command))
    assert status == 0, answer
    args.wrapped_command = "sh -c 'sleep 1'"
    assert _daemon_command(args) == ["sh", "-c", "sleep 1"]
