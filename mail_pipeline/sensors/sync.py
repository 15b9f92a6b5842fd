"""The recipient sync's triggers: every 15 minutes (US/Eastern) for every organization with
sync candidates, and each minute for manual "sync now" requests."""

import dagster as dg

from mail_pipeline.domain.manual_sync import run_key
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.runs import active_runs
from mail_pipeline.jobs.sync import SyncConfig, sync_organization_job
from mail_pipeline.partitions import BUSINESS_TIMEZONE
from mail_pipeline.resources.database import Database
from mail_pipeline.services.manual_sync import RUN_GONE, pending_triggers, settle_abandoned
from mail_pipeline.services.sync import sync_candidates

#: The tag Dagster puts on a run a sensor launched with a run key.
RUN_KEY_TAG = "dagster/run_key"


@dg.schedule(
    cron_schedule="*/15 * * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=sync_organization_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="One sync run per organization with sync candidates; an organization "
    "whose previous sync is still queued or running is skipped.",
)
def recipient_sync_schedule(
    context: dg.ScheduleEvaluationContext, database: Database
) -> list[dg.RunRequest] | dg.SkipReason:
    candidates = sync_candidates(database.session)
    tick = context.scheduled_execution_time.isoformat()
    requests = []
    busy = []
    for organization_id in candidates:
        if active_runs(
            context.instance,
            job_name=sync_organization_job.name,
            tags={tags.SYNC_ORG: str(organization_id)},
        ):
            busy.append(organization_id)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"sync-{organization_id}-{tick}",
                run_config=dg.RunConfig(
                    ops={"sync_recipients": SyncConfig(organization_id=organization_id)}
                ),
                tags=tags.sync_tags(organization_id, "schedule"),
            )
        )
    if not requests:
        return dg.SkipReason(
            f"no organization to sync ({len(busy)} still syncing)"
            if busy
            else "no campaign is a sync candidate"
        )
    return requests


@dg.sensor(
    job=sync_organization_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a sync run for each manual 'sync now' request.",
)
def manual_sync_sensor(context: dg.SensorEvaluationContext, database: Database) -> dg.SensorResult:
    """Every pending request is asked for each tick; the run key (one per request and
    attempt) makes Dagster launch it once. No id cursor: on PostgreSQL a request can commit
    after one with a higher id, and a cursor would skip it for ever. A request leaves
    'pending' when its run starts. A request whose run ended without finishing it (its
    worker was lost, so the run could not say how it went) is launched again, up to
    ``domain.manual_sync.MAX_ATTEMPTS`` runs, then failed with the reason instead of staying
    open for ever (``services.manual_sync.settle_abandoned``)."""
    triggers = pending_triggers(database.session)
    settled = settle_abandoned(
        database.session,
        triggers,
        run_of_pending=lambda t: _run_of(context.instance, run_key(t.id, t.attempt)),
        run_status=lambda run_id: _status_of(context.instance, run_id),
    )
    for done in settled:
        context.log.warning(f"manual sync request {done.trigger_id}: {done.reason}")
    if settled:  # read again: a request launched again is pending on its next attempt
        triggers = pending_triggers(database.session)
    if not triggers:
        return dg.SensorResult(skip_reason=dg.SkipReason("no pending manual sync request"))
    requests = [
        dg.RunRequest(
            run_key=run_key(t.id, t.attempt),
            run_config=dg.RunConfig(
                ops={
                    "sync_recipients": SyncConfig(
                        organization_id=t.organization_id,
                        campaign_ids=[t.campaign_id],
                        manual_trigger_id=t.id,
                    )
                }
            ),
            tags=tags.sync_tags(t.organization_id, t.requested_by, t.reason or ""),
        )
        for t in triggers
    ]
    return dg.SensorResult(run_requests=requests)


def _run_of(instance: dg.DagsterInstance, run_key: str) -> tuple[str, str] | None:
    """The id and status of the run this sensor launched under ``run_key``, if any."""
    runs = instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    return (runs[0].run_id, runs[0].status.value) if runs else None


def _status_of(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    return run.status.value if run is not None else RUN_GONE
