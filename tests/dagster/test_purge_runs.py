"""``purge_finished_runs``: old finished runs go with their event logs; queued and running
runs, and runs newer than the cut-off, stay."""

import time
from datetime import UTC, datetime

import dagster as dg
import pytest

from mail_pipeline.jobs.runs import purge_finished_runs


@dg.op
def works() -> None:
    return None


@dg.op(config_schema={"fail": bool})
def may_fail(context: dg.OpExecutionContext) -> None:
    if context.op_config["fail"]:
        raise RuntimeError("asked to fail")


@dg.job
def tiny_job() -> None:
    works()


@dg.job
def failing_job() -> None:
    may_fail()


def _run(instance: dg.DagsterInstance, fail: bool = False) -> str:
    result = failing_job.execute_in_process(
        instance=instance,
        run_config={"ops": {"may_fail": {"config": {"fail": fail}}}},
        raise_on_error=False,
    )
    return result.run_id


def test_old_finished_runs_go_with_their_logs_and_the_rest_stay() -> None:
    with dg.instance_for_test() as instance:
        old_ok = tiny_job.execute_in_process(instance=instance).run_id
        old_failed = _run(instance, fail=True)
        waiting = instance.create_run_for_job(job_def=tiny_job).run_id  # NOT_STARTED
        time.sleep(0.05)
        cut_off = datetime.now(UTC)
        time.sleep(0.05)
        new_ok = _run(instance)
        assert instance.all_logs(old_ok), "a finished run has events to purge"

        listed = purge_finished_runs(instance, created_before=cut_off, dry_run=True, page=1)
        assert listed == [old_ok, old_failed], "oldest first, across pages"
        assert instance.get_run_by_id(old_ok) is not None, "a dry run deletes nothing"

        deleted = purge_finished_runs(instance, created_before=cut_off, page=1)

        assert deleted == [old_ok, old_failed]
        assert instance.get_run_by_id(old_ok) is None
        assert instance.get_run_by_id(old_failed) is None
        assert instance.all_logs(old_ok) == []
        assert instance.get_run_by_id(waiting) is not None, "a run not finished stays"
        assert instance.get_run_by_id(new_ok) is not None, "newer than the cut-off"
        assert purge_finished_runs(instance, created_before=cut_off) == []


def test_the_command_keeps_recent_runs_and_refuses_a_zero_age(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mail_pipeline.cli import main

    with dg.instance_for_test() as instance:  # DAGSTER_HOME points at it meanwhile
        recent = tiny_job.execute_in_process(instance=instance).run_id
        assert main(["purge-runs", "--older-than-days", "1"]) == 0
        assert "deleted 0 finished runs" in capsys.readouterr().out
        assert instance.get_run_by_id(recent) is not None
        assert main(["purge-runs", "--older-than-days", "0"]) == 2
