"""The embedded default's run launcher: Dagster's own, plus a health check of its workers.

``DefaultRunLauncher`` asks the code server to start each run as a local process, but it
cannot tell Dagster's run monitoring whether that process still lives. A run worker killed
with ``SIGKILL`` (the OOM killer, a crash, a person) then stays ``STARTED`` for ever - until
its ``dagster/max_runtime`` - and holds its stage's slot in the run queue: one killed status
run stops every status update for ten minutes, one killed sync run blocks its
organization's syncs for half an hour.

:class:`LocalRunLauncher` launches exactly as the default does and answers
:meth:`check_run_worker_health` from the operating system. The run's ``RUN_START`` event
carries the pid of the process that started it (every Dagster event records its pid); that
process is *running* while it exists, is not a zombie, and started before the run did (a
later process with the same number is another program). Otherwise the worker is *failed*,
and the monitoring daemon (``run_monitoring`` in ``dagster.yaml``, every 30 s) marks the run
failed, which frees its slot; the leases and the sensors then give its work to a new run.

The check reads this machine's process table, so it holds only where the run workers live
on the daemon's machine: the embedded default and the production-like mode. Production's
``EcsRunLauncher`` (and Kubernetes') checks its own tasks. When the answer cannot be known
(no ``RUN_START`` yet, an unreadable event log) the worker counts as running: a live run is
never failed on a guess.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

#: A process may start this long after the run's start event was written and still be the
#: run's (clock tick rounding); one starting later is a reused pid.
START_SLACK_SECONDS = 2.0


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_state(pid: int) -> tuple[str, float | None] | None:
    """``(state letter, start time in epoch seconds)`` of ``pid``, or ``None`` when no such
    process exists. Without ``/proc`` the start time is ``None``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        raw = ""
    if not raw:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?", None
    fields = raw[raw.rindex(")") + 2 :].split()
    boot = _boot_time()
    started = None if boot is None else boot + int(fields[19]) / _clock_ticks()
    return fields[0], started


def worker_status(pid: int, run_started_at: float) -> tuple[WorkerStatus, str]:
    """Whether the process ``pid`` that started a run at ``run_started_at`` still runs it."""
    state = process_state(pid)
    if state is None:
        return WorkerStatus.FAILED, f"the run worker (pid {pid}) is gone"
    letter, started = state
    if letter in ("Z", "X"):
        return WorkerStatus.FAILED, f"the run worker (pid {pid}) has exited"
    if started is not None and started > run_started_at + START_SLACK_SECONDS:
        return (
            WorkerStatus.FAILED,
            f"the run worker (pid {pid}) is gone; another process now has its pid",
        )
    return WorkerStatus.RUNNING, f"the run worker (pid {pid}) is alive"


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers' health the run monitoring can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        try:
            records = self._instance.get_records_for_run(
                run.run_id, of_type=DagsterEventType.RUN_START, limit=1
            ).records
        except Exception as exc:  # noqa: BLE001 - an unreadable log is not a dead worker
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"cannot tell: {exc}")
        if not records or records[0].event_log_entry.dagster_event is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run has not started yet")
        entry = records[0].event_log_entry
        pid = entry.dagster_event.pid if entry.dagster_event else None
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the start event has no pid")
        status, message = worker_status(pid, entry.timestamp)
        return CheckRunHealthResult(status, message, run_worker_id=str(pid))
