"""What the Dagster instance says about runs in flight (used by sensors for backpressure)."""

import dagster as dg

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
