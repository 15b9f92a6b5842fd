"""The run-failure sensor: every failed run is recorded per organization and stage, and
people are told once (``services.alerts``; rules: ``domain.alerts``; channels: the
``notifications`` resource - Slack or email in production, the local outbox otherwise).

Each tick reads the runs that failed since the cursor (the last failed run's update time,
minus a minute of overlap: a run recorded twice is recorded once), with the error of its
first failed step. The first tick of a new deployment looks back one hour only, so turning
the sensor on does not announce last month's failures.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from mail_pipeline.domain.alerts import Failure
from mail_pipeline.jobs import tags
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.notifications import NotificationResource
from mail_pipeline.services.alerts import record_and_notify

#: Failed runs read per tick (the rest on the next).
RUNS_PER_TICK = 200
OVERLAP = timedelta(minutes=1)
FIRST_LOOK_BACK = timedelta(hours=1)


def _root_cause(error: Any) -> str:
    """The innermost error of Dagster's wrapping ("Error occurred while executing op ...")
    as "Type: message"."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = (error.message or "").strip()
    name = getattr(error, "cls_name", None)
    if not name:
        return message
    # "dagster._core.definitions.events.Failure: ..." -> "Failure: ..."
    head, separator, rest = message.partition(": ")
    if separator and (head == name or head.endswith(f".{name}")):
        message = rest
    return f"{name}: {message}"


def _error(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first failed step's error (its root cause), else the run failure's message."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if event is not None and error is not None:
            return f"{event.step_key}: {_root_cause(error)}"
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
        if entry.dagster_event and entry.dagster_event.message:
            return entry.dagster_event.message
    return "the run failed (no error recorded)"


def _organization(run_tags: dict[str, str]) -> int | None:
    value = run_tags.get(tags.ORGANIZATION) or run_tags.get(tags.SYNC_ORG) or ""
    return int(value) if value.strip().isdigit() else None


def failed_runs(
    instance: dg.DagsterInstance, since: datetime, limit: int = RUNS_PER_TICK
) -> tuple[list[Failure], datetime]:
    """Runs that failed (updated) after ``since``, oldest first, and the newest update time."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since),
        limit=limit,
        order_by="update_timestamp",
        ascending=True,
    )
    failures = []
    newest = since
    for record in records:
        run = record.dagster_run
        updated = record.update_timestamp.replace(tzinfo=record.update_timestamp.tzinfo or UTC)
        newest = max(newest, updated)
        ended = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else updated
        failures.append(
            Failure(
                run_id=run.run_id,
                job=run.job_name,
                stage=run.tags.get(tags.STAGE),
                organization_id=_organization(dict(run.tags)),
                organization_name=None,
                error=_error(instance, run.run_id),
                failed_at=ended,
            )
        )
    return failures, newest


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run per organization and stage, and notifies once per "
    "run (a digest when many fail together) through the notifications resource.",
)
def run_failure_alerts(
    context: dg.SensorEvaluationContext,
    database: Database,
    notifications: NotificationResource,
) -> dg.SensorResult:
    now = datetime.now(UTC)
    since = (
        datetime.fromisoformat(context.cursor) - OVERLAP
        if context.cursor
        else now - FIRST_LOOK_BACK
    )
    failures, newest = failed_runs(context.instance, since)
    try:
        outcome = record_and_notify(
            database.session, failures, notifications.notifier(), notifications.plan, now
        )
    finally:
        notifications.close()
    cursor = max(newest, since + OVERLAP).isoformat()
    if outcome.error is not None:
        # Recorded all the same; the tick turns red with the channel's reason, and the
        # runs are announced on a later tick.
        raise dg.Failure(
            description=f"could not send a run-failure alert ({outcome.waiting} runs wait): "
            f"{outcome.error}"
        )
    summary = (
        f"{len(failures)} failed runs read, {outcome.recorded} new; {outcome.sent} messages "
        f"sent for {outcome.runs_notified} runs"
    )
    context.log.info(summary)
    return dg.SensorResult(skip_reason=dg.SkipReason(summary), cursor=cursor)
