"""The real thing, briefly: ``mail-pipeline daemon`` runs dagster-daemon for a small code
location on an SQLite instance; its heartbeats show one daemon alive, a second
``mail-pipeline daemon`` refuses to start, and SIGTERM stops both wrapper and daemon
cleanly (exit status 0)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from mail_pipeline.services.daemon_guard import EXIT_REFUSED
from mail_pipeline.services.daemon_heartbeats import DaemonReport, Verdict, watch
from tests.supervision.conftest import BIN, STARTUP, environment, start, wait_for

DEFINITIONS = "import dagster as dg\n\ndefs = dg.Definitions()\n"
WORKSPACE = "load_from:\n  - python_file: definitions.py\n"
#: The watch's window: it ends early, once the test has seen what it waits for (the daemon's
#: first heartbeats, which come as each daemon thread starts).
WATCH = 600.0


@pytest.mark.slow
def test_real_daemon_under_the_guard(dagster_home: Path, tmp_path: Path) -> None:
    (tmp_path / "definitions.py").write_text(DEFINITIONS)
    (tmp_path / "workspace.yaml").write_text(WORKSPACE)
    env = environment(dagster_home)
    command = [str(BIN / "mail-pipeline"), "daemon", "-w", "workspace.yaml"]

    reports: list[DaemonReport] = []
    seen_enough = threading.Event()

    def clock() -> float:  # jumps to the window's end once the test has seen enough
        return time.time() + (WATCH if seen_enough.is_set() else 0)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        watcher = threading.Thread(
            target=lambda: reports.append(
                watch(instance.get_daemon_heartbeats, window=WATCH, poll=0.2, clock=clock)
            )
        )
        watcher.start()
        daemon = start(command, env, tmp_path / "daemon.log", cwd=tmp_path)
        try:
            required = set(instance.get_required_daemon_types())
            assert {"SENSOR", "SCHEDULER", "BACKFILL"} <= required
            wait_for(
                lambda: required <= set(instance.get_daemon_heartbeats()),
                STARTUP,
                "the first heartbeat of every daemon type",
            )
            heartbeats = instance.get_daemon_heartbeats()
            # One process, one id, shared by all its daemon threads.
            assert len({h.daemon_id for h in heartbeats.values()}) == 1

            second = subprocess.run(
                command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=STARTUP
            )
            assert second.returncode == EXIT_REFUSED, second.stderr
            assert "another dagster-daemon already runs" in second.stderr
            assert f"pid {daemon.pid}" in second.stderr
            seen_enough.set()
            watcher.join()
        finally:
            daemon.send_signal(signal.SIGTERM)
            status = daemon.wait(timeout=STARTUP)
    log = (tmp_path / "daemon.log").read_text()
    assert status == 0, log
    assert "Received interrupt, shutting down daemon threads" in log
    assert "the daemon stopped (exit status 0)" in log
    (report,) = reports
    assert report.verdict is Verdict.ONE_ALIVE, report.lines()
    assert report.writers == (next(iter(heartbeats.values())).daemon_id,)
