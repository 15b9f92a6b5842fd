"""The reporting sync as a job: every 7.5 minutes, each organization's reporting store (the
tables the brand's dashboard reads) is refreshed from the daily metrics and campaign
results (``services.reporting_sync``).

- ``list_organizations`` names the active organizations with campaigns and fans out, one
  mapped ``sync_reporting`` per organization (mapping key ``org_<id>``).
- ``sync_reporting`` syncs one; a failure stays that organization's: it is recorded in
  ``reporting_syncs`` (``failed``, with the reason) and returned as a failure record, so the
  other organizations are synced all the same.
- ``summarize_reporting_sync`` runs once all of them have ended, reports the totals and the
  failed organizations, and then fails the run (red) if any failed.

Schedule: Dagster's cron has minute resolution, so 7.5 minutes alternates 8 and 7:
:00 :08 :15 :23 :30 :38 :45 :53 each hour (eight runs an hour, 7.5 minutes on average),
New York time. A tick is skipped while a run of the job is still queued or running.

On demand, for some organizations (``requested_by`` and ``reason`` tags required):

    dagster job launch -w workspace.yaml -j reporting_sync_job \\
      --config-json '{"ops": {"list_organizations": {"config": {"organization_ids": [7],
                       "days": 90}}}}' \\
      --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "backfill"}'
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from mail_pipeline.domain.alerts import summarize_error
from mail_pipeline.domain.reporting import REPORTING_DAYS
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import Metadata
from mail_pipeline.jobs.runs import active_runs, check_launch
from mail_pipeline.partitions import BUSINESS_TIMEZONE
from mail_pipeline.resources.database import Database
from mail_pipeline.services import reporting_sync

#: The run queue's stage of the data half (as ``assets.metrics``).
STAGE = "analytics"
REQUESTED_BY_SCHEDULE = "reporting_sync_schedule"
#: 7.5 minutes at minute resolution: gaps of 8 then 7 minutes.
CRON_SCHEDULE = ["0,15,30,45 * * * *", "8,23,38,53 * * * *"]


class ReportingSyncConfig(dg.Config):
    #: Only these organizations (default: every active organization with campaigns).
    organization_ids: list[int] = []
    #: New York days rewritten, today included.
    days: int = REPORTING_DAYS


@dataclass(frozen=True)
class Organization:
    """One organization to sync, with the run's settings."""

    organization_id: int
    days: int


@dataclass(frozen=True)
class Outcome:
    """How one organization's sync ended."""

    organization_id: int
    day_rows: int = 0
    campaign_rows: int = 0
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@dg.op(out=dg.DynamicOut(Organization))
def list_organizations(
    context: dg.OpExecutionContext, config: ReportingSyncConfig, database: Database
) -> Iterator[dg.DynamicOutput[Organization]]:
    """The organizations to sync, one mapped sync each."""
    check_launch(context)
    ids = config.organization_ids or reporting_sync.organizations_to_sync(database.session)
    context.log.info("syncing the reporting store of %s organizations", len(ids))
    for organization_id in ids:
        yield dg.DynamicOutput(
            Organization(organization_id, config.days), mapping_key=f"org_{organization_id}"
        )


@dg.op
def sync_reporting(
    context: dg.OpExecutionContext, organization: Organization, database: Database
) -> Outcome:
    """Sync one organization; a failure is recorded and returned, not raised, so that it
    stops no other organization (the summary fails the run)."""
    organization_id = organization.organization_id
    now = datetime.now(UTC)
    try:
        counts = reporting_sync.sync_organization(
            database.session, organization_id, now, days=organization.days
        )
    except Exception as error:  # isolated per organization; the summary fails the run
        reason = summarize_error(f"{type(error).__name__}: {error}")
        context.log.exception("reporting sync of organization %s failed", organization_id)
        try:
            reporting_sync.record_failure(database.session, organization_id, now, reason)
        except Exception:  # the database itself may be what failed; the run still says so
            context.log.exception("could not record the failure of %s", organization_id)
        context.add_output_metadata({"organization_id": organization_id, "error": reason})
        return Outcome(organization_id, error=reason)
    context.add_output_metadata(
        {
            "organization_id": organization_id,
            "days": str(counts.days),
            "day_rows": counts.day_rows,
            "campaign_rows": counts.campaign_rows,
        }
    )
    return Outcome(organization_id, counts.day_rows, counts.campaign_rows)


def _failures_table(failed: list[Outcome]) -> dg.MetadataValue:
    rows = ["| organization | reason |", "|---|---|"]
    rows += [f"| {o.organization_id} | {(o.error or '').replace('|', '/')} |" for o in failed]
    return dg.MetadataValue.md("\n".join(rows))


@dg.op
def summarize_reporting_sync(context: dg.OpExecutionContext, outcomes: list[Outcome]) -> None:
    """Totals of the run; fails it, naming them, when any organization failed."""
    failed = sorted((o for o in outcomes if o.failed), key=lambda o: o.organization_id)
    metadata: Metadata = {
        "organizations": len(outcomes),
        "synced": len(outcomes) - len(failed),
        "failed": len(failed),
        "failed_organizations": ", ".join(str(o.organization_id) for o in failed) or "none",
        "day_rows": sum(o.day_rows for o in outcomes),
        "campaign_rows": sum(o.campaign_rows for o in outcomes),
    }
    if failed:
        raise dg.Failure(
            description=f"the reporting sync failed for {len(failed)} of {len(outcomes)} "
            f"organizations: {metadata['failed_organizations']}",
            metadata={**metadata, "failures": _failures_table(failed)},
            allow_retries=False,
        )
    context.add_output_metadata(metadata)


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=900),
    description="Refresh each organization's reporting store (the brand's dashboard) from "
    "the daily metrics and campaign results: the last 35 New York days and the campaign "
    "totals (every 7.5 minutes).",
)
def reporting_sync_job() -> None:
    summarize_reporting_sync(list_organizations().map(sync_reporting).collect())


@dg.schedule(
    cron_schedule=CRON_SCHEDULE,
    execution_timezone=BUSINESS_TIMEZONE,
    job=reporting_sync_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 7.5 minutes (:00 :08 :15 :23 :30 :38 :45 :53 New York): sync every "
    "organization's reporting store; skipped while the previous run has not finished.",
)
def reporting_sync_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    busy = active_runs(context.instance, job_name=reporting_sync_job.name)
    if busy:
        return dg.SkipReason(f"{busy} reporting sync run(s) still queued or running")
    return dg.RunRequest(
        run_key=f"reporting-sync-{context.scheduled_execution_time.isoformat()}",
        tags={tags.REQUESTED_BY: REQUESTED_BY_SCHEDULE},
    )


JOBS = [reporting_sync_job]
SCHEDULES = [reporting_sync_schedule]
