"""The embedded default's launcher tells the run monitoring when a run worker is dead."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster import DagsterEvent, DagsterEventType
from dagster._core.launcher.base import WorkerStatus
from dagster._core.test_utils import instance_for_test

from mail_pipeline.run_launcher import LocalRunLauncher, worker_status

LAUNCHER = {"module": "mail_pipeline.run_launcher", "class": "LocalRunLauncher"}


@dg.op
def _noop() -> None:
    pass


@dg.job
def _a_job() -> None:
    _noop()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with instance_for_test(overrides={"run_launcher": LAUNCHER}) as it:
        yield it


def _started_run(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    run = instance.create_run_for_job(_a_job)
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.RUN_START.value, job_name=_a_job.name, pid=pid
        ),
        run.run_id,
    )
    started = instance.get_run_by_id(run.run_id)
    assert started is not None
    return started


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_instance_loads_the_launcher_and_the_monitoring_may_ask_it(
    instance: dg.DagsterInstance,
) -> None:
    assert isinstance(instance.run_launcher, LocalRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health


def test_a_run_whose_worker_lives_is_running(instance: dg.DagsterInstance) -> None:
    run = _started_run(instance, os.getpid())
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status is WorkerStatus.RUNNING
    assert health.run_worker_id == str(os.getpid())


def test_a_run_whose_worker_is_gone_is_failed_with_the_pid_in_the_reason(
    instance: dg.DagsterInstance,
) -> None:
    pid = _dead_pid()
    run = _started_run(instance, pid)
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status is WorkerStatus.FAILED
    assert f"pid {pid}" in (health.msg or "")


def test_a_run_that_has_not_started_is_never_failed_on_a_guess(
    instance: dg.DagsterInstance,
) -> None:
    run = instance.create_run_for_job(_a_job)
    assert instance.run_launcher.check_run_worker_health(run).status is WorkerStatus.RUNNING


def test_a_zombie_worker_is_failed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # exited but not reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as stat:
            if stat.read().split(") ")[1].startswith("Z"):
                break
        time.sleep(0.05)
    try:
        status, message = worker_status(child.pid, time.time())
        assert status is WorkerStatus.FAILED
        assert "exited" in message
    finally:
        child.wait()


def test_a_pid_taken_by_a_later_process_is_not_the_worker() -> None:
    # This process started long after a run said to have started an hour ago under its pid.
    status, message = worker_status(os.getpid(), time.time() - 3600)
    assert status is WorkerStatus.FAILED
    assert "another process now has its pid" in message


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_the_monitoring_daemon_fails_the_run_of_a_dead_worker(
    instance: dg.DagsterInstance,
) -> None:
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    run = _started_run(instance, _dead_pid())
    record = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))[0]
    assert record.dagster_run.status is dg.DagsterRunStatus.STARTED
    with WorkspaceProcessContext(instance, None) as workspace:  # type: ignore[arg-type]
        monitor_started_run(
            instance, workspace.create_request_context(), record, logging.getLogger(__name__)
        )
    after = instance.get_run_by_id(run.run_id)
    assert after is not None
    assert after.status is dg.DagsterRunStatus.FAILURE
