"""The wrapper around dagster-daemon, with a cheap child instead of a real daemon: it passes
SIGTERM/SIGINT on and exits with the child's status, exits when the child dies, never leaves
the child running when it is killed itself, and stops the child when its lock is lost.

The wrapper runs in a process of its own (``GUARD``) as under a supervisor, since it
installs signal handlers and the kernel kills its child when it dies.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mail_pipeline.db.instance_locks import FileLock
from mail_pipeline.services.daemon_guard import (
    EXIT_CANNOT_START,
    EXIT_LOCK_LOST,
    DaemonAlreadyRunning,
    exit_status,
    run_guarded,
)
from tests.supervision.conftest import STARTUP, alive, wait_for

GUARD = """
import sys
from pathlib import Path
from mail_pipeline.db.instance_locks import FileLock
from mail_pipeline.services.daemon_guard import run_guarded
sys.exit(run_guarded(FileLock(Path(sys.argv[1])), sys.argv[2:], verify_every=0.2))
"""
#: A child that writes its pid, then waits; SIGTERM makes it exit 7, SIGINT 8.
CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
signal.signal(signal.SIGINT, lambda *_: sys.exit(8))
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(600)
"""


def _guard(tmp_path: Path, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", GUARD, str(tmp_path / "daemon.lock"), *command],
        stderr=subprocess.PIPE,
        text=True,
    )


def _guarded_child(tmp_path: Path, name: str = "child") -> tuple[subprocess.Popen[str], int]:
    pidfile = tmp_path / f"{name}.pid"
    guard = _guard(tmp_path, sys.executable, "-c", CHILD, str(pidfile))
    wait_for(lambda: pidfile.exists() and pidfile.read_text(), STARTUP, "the child to start")
    return guard, int(pidfile.read_text())


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 7), (signal.SIGINT, 8)])
def test_signal_is_passed_to_the_child_and_its_status_returned(
    tmp_path: Path, signum: int, status: int
) -> None:
    guard, child = _guarded_child(tmp_path)
    guard.send_signal(signum)
    assert guard.wait(timeout=STARTUP) == status
    assert not alive(child)
    assert "the daemon stopped (exit status" in guard.communicate()[1]
    # The lock went with the wrapper.
    lock = FileLock(tmp_path / "daemon.lock")
    assert lock.acquire() is None
    lock.release()


@pytest.mark.parametrize(
    ("child", "status"),
    [
        ("import sys; sys.exit(5)", 5),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL),
        # Ending on its own is a failure even with status 0: supervisors restart on failure.
        ("pass", 1),
    ],
)
def test_the_wrapper_ends_when_its_child_does(tmp_path: Path, child: str, status: int) -> None:
    guard = _guard(tmp_path, sys.executable, "-c", child)
    assert guard.wait(timeout=STARTUP) == status
    assert "ended on its own" in guard.communicate()[1]


def test_a_killed_wrapper_takes_its_child_and_its_lock_along(tmp_path: Path) -> None:
    guard, child = _guarded_child(tmp_path)
    guard.send_signal(signal.SIGKILL)
    guard.wait()
    wait_for(lambda: not alive(child), 10, "the child to die with its parent")
    successor, _ = _guarded_child(tmp_path, "successor")  # a restarted wrapper takes over at once
    successor.send_signal(signal.SIGTERM)
    assert successor.wait(timeout=STARTUP) == 7


def test_a_lost_lock_stops_the_child(tmp_path: Path) -> None:
    guard, child = _guarded_child(tmp_path)
    (tmp_path / "daemon.lock").unlink()  # a new file would be a new lock anyone can take
    assert guard.wait(timeout=STARTUP) == EXIT_LOCK_LOST
    assert not alive(child)
    assert "was removed; stopping the daemon" in guard.communicate()[1]


def test_a_second_holder_is_refused_and_the_first_keeps_its_lock(tmp_path: Path) -> None:
    guard, child = _guarded_child(tmp_path)
    try:
        with pytest.raises(DaemonAlreadyRunning, match=f"pid {guard.pid}") as refused:
            run_guarded(FileLock(tmp_path / "daemon.lock"), ["true"])
        assert "Only one daemon may run per instance" in str(refused.value)
        assert alive(child) and guard.poll() is None
    finally:
        guard.send_signal(signal.SIGTERM)
        guard.wait(timeout=STARTUP)


def test_a_command_that_cannot_start_releases_the_lock(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "daemon.lock")
    messages: list[str] = []
    status = run_guarded(lock, [str(tmp_path / "no-such-program")], report=messages.append)
    assert status == EXIT_CANNOT_START
    assert "cannot start" in messages[-1]
    assert lock.acquire() is None
    lock.release()


def test_exit_status_is_the_shells() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 143
