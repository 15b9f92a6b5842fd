"""What the Dagster instance says about runs in flight (used by sensors for backpressure),
and the purge of old finished runs."""

from datetime import datetime

import dagster as dg

from mail_pipeline.jobs.tags import on_demand_problem

ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def active_runs(
    instance: dg.DagsterInstance, *, job_name: str | None = None, tags: dict[str, str] | None = None
) -> int:
    return instance.get_runs_count(
        dg.RunsFilter(job_name=job_name, tags=tags or {}, statuses=ACTIVE)
    )


def active_run_tag_values(instance: dg.DagsterInstance, *, job_name: str, tag: str) -> set[str]:
    """The values of ``tag`` on the runs of ``job_name`` that are queued, starting or
    running."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=ACTIVE))
    return {run.tags[tag] for run in runs if tag in run.tags}


def active_run_ids(instance: dg.DagsterInstance, *, tags: dict[str, str]) -> list[str]:
    """Ids of the runs with these tags that are queued, starting or running."""
    return [run.run_id for run in instance.get_runs(dg.RunsFilter(tags=tags, statuses=ACTIVE))]


def longest_running_run(instance: dg.DagsterInstance, *, job_name: str) -> str | None:
    """The id of the run of ``job_name`` that started first among those running now."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.STARTED])
    )
    started = [(r.start_time, r.dagster_run.run_id) for r in records if r.start_time]
    return min(started)[1] if started else None


WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]


def queued_runs(instance: dg.DagsterInstance, *, tags: dict[str, str]) -> int:
    """Runs with these tags that wait to start (the run queue is durable: they will)."""
    return instance.get_runs_count(dg.RunsFilter(tags=tags, statuses=WAITING))


def fail_run(instance: dg.DagsterInstance, run_id: str, reason: str) -> bool:
    """Mark a run that is not finished as failed, with ``reason``; False when there is no
    such run or it already ended (a run outside Dagster, or one that finished)."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return False
    instance.report_run_failed(run, message=reason)
    return True


#: How a lock holder that is a Dagster run is named (``SyncSettings.holder``).
RUN_HOLDER_PREFIX = "run:"


def run_has_ended(instance: dg.DagsterInstance, holder: str) -> bool:
    """Whether a lock's ``holder`` is a Dagster run (``run:<id>``) that has ended - succeeded,
    failed (its worker died and the run monitoring or recovery said so), was canceled - or
    that the instance does not know. Any other holder (a tool, a test) is never judged
    ended: its lock waits out its lease."""
    if not holder.startswith(RUN_HOLDER_PREFIX):
        return False
    run = instance.get_run_by_id(holder.removeprefix(RUN_HOLDER_PREFIX))
    return run is None or run.is_finished


def check_launch(
    context: dg.OpExecutionContext | dg.AssetExecutionContext, *, always: bool = False
) -> None:
    """Fail the run, saying how to launch it, when a person launched it without saying who
    and why (``tags.on_demand_problem``)."""

    problem = on_demand_problem(context.run.tags, always=always)
    if problem:
        raise dg.Failure(description=problem)


def check_named_job_launch(context: dg.AssetExecutionContext) -> None:
    """For an asset: :func:`check_launch` when the run is of a named job (``orders_job``,
    ``attribution_job``, ``daily_metrics_job`` launched from the launchpad or ``dagster job
    launch``). Materializations from the asset graph and ``dagster asset materialize`` run
    Dagster's implicit asset job (a ``__`` name); the CLI gives them no way to carry tags,
    so they are not refused."""
    if not context.run.job_name.startswith("__"):
        check_launch(context)


#: Runs that ended: the ones a purge may delete (a queued or running run never is).
FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]


def purge_finished_runs(
    instance: dg.DagsterInstance,
    *,
    created_before: datetime,
    dry_run: bool = False,
    page: int = 100,
) -> list[str]:
    """Delete the finished runs created before ``created_before`` with their event logs (the
    instance's ``delete_run``), oldest first, ``page`` at a time; return their ids. With
    ``dry_run`` nothing is deleted. Runs still queued or in progress are never touched. The
    app's own history (recipients, mailpieces) is not Dagster's and is kept."""
    found: list[str] = []
    cursor: str | None = None
    filters = dg.RunsFilter(statuses=FINISHED, created_before=created_before)
    while True:
        records = instance.get_run_records(
            filters=filters, limit=page, ascending=True, cursor=cursor if dry_run else None
        )
        if not records:
            return found
        for record in records:
            run_id = record.dagster_run.run_id
            if not dry_run:
                instance.delete_run(run_id)
            found.append(run_id)
        cursor = records[-1].dagster_run.run_id
        if len(records) < page:
            return found
