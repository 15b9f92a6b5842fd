"""Address enrichment as jobs, schedules and a sensor (rules: ``domain.address_enrichment``;
use cases: ``services.address_enrichment``). Times are New York.

- ``address_enrichment_job`` at 01:00, 07:00, 13:00 and 19:00 (``address_enrichment_schedule``):
  claims the AddressEnrichable recipients of every organization into batches, answers what
  the cache knows and submits the rest to Faraday. On demand for some organizations:

      dagster job launch -w workspace.yaml -j address_enrichment_job \\
        --config-json '{"ops": {"start_enrichment_batches":
                          {"config": {"organization_ids": [3]}}}}' \\
        --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "new list"}'

- ``enrichment_results_job``, launched by ``enrichment_batches_sensor`` every 2 minutes while
  a batch is open (and no such run is in flight): polls the open batches, applies the ready
  ones (matched -> Pending with the address, unmatched -> Skipped with why), returns failed
  and overdue ones (6 h) to AddressEnrichable.
- ``enrichment_cache_cleanup_job`` daily at 04:10 (``enrichment_cache_cleanup_schedule``):
  deletes cached answers older than 90 days.

Each run's metadata has the counts (batches, recipients claimed, from the cache, submitted,
matched, unmatched, refused, returned); an organization whose batches could not be started or
polled is named, and fails the run after the others were done. No event per recipient.
"""

from datetime import UTC, datetime

import dagster as dg

from mail_pipeline.domain.address_enrichment import ENRICHMENT_CRON, ENRICHMENT_TIMEZONE
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.runs import active_runs, check_launch
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.enrichment import PROVIDER, AddressEnrichmentResource
from mail_pipeline.services.address_enrichment import (
    EnrichmentOutcome,
    delete_expired_cache,
    open_batch_count,
    poll_batches,
    start_batches,
)

STAGE = "sync"
MAINTENANCE = "maintenance"
POLL_INTERVAL_SECONDS = 120


class EnrichmentConfig(dg.Config):
    """Limit an on-demand run to some organizations (default: every one waiting)."""

    organization_ids: list[int] = []


def _report(context: dg.OpExecutionContext, outcome: EnrichmentOutcome) -> dg.Output[None]:
    metadata: dict[str, dg.RawMetadataValue] = {
        name: getattr(outcome, name)
        for name in (
            "batches_started",
            "batches_completed",
            "batches_returned",
            "claimed",
            "submitted",
            "from_cache",
            "matched",
            "unmatched",
            "refused",
            "returned",
            "gave_up",
            "not_covered",
        )
    }
    metadata["failed_organizations"] = len(outcome.failed)
    if outcome.failed:
        lines = [f"- organization {org}: {why}" for org, why in sorted(outcome.failed.items())]
        metadata["failures"] = dg.MetadataValue.md("\n".join(lines))
    context.add_output_metadata(metadata)
    if outcome.failed:
        names = ", ".join(str(org) for org in sorted(outcome.failed))
        raise dg.Failure(
            description=f"address enrichment failed for organization(s) {names}; the others "
            "were done (their batches wait for the next run)",
            metadata=metadata,
        )
    return dg.Output(None)


@dg.op(out=dg.Out(dg.Nothing))
def start_enrichment_batches(
    context: dg.OpExecutionContext,
    config: EnrichmentConfig,
    database: Database,
    address_enrichment: AddressEnrichmentResource,
) -> dg.Output[None]:
    """Claim AddressEnrichable recipients into batches per organization and submit them."""
    check_launch(context)
    with address_enrichment.enricher() as enricher:
        outcome = start_batches(
            database.session,
            enricher,
            provider=PROVIDER,
            organization_ids=tuple(config.organization_ids),
        )
    return _report(context, outcome)


@dg.op(out=dg.Out(dg.Nothing))
def poll_enrichment_batches(
    context: dg.OpExecutionContext,
    database: Database,
    address_enrichment: AddressEnrichmentResource,
) -> dg.Output[None]:
    """Apply the answers of the batches that are ready; return failed and overdue ones."""
    with address_enrichment.enricher() as enricher:
        outcome = poll_batches(database.session, enricher)
    return _report(context, outcome)


@dg.op(out=dg.Out(dg.Nothing))
def delete_expired_enrichment_cache(
    context: dg.OpExecutionContext, database: Database
) -> dg.Output[None]:
    """Delete cached enrichment answers older than 90 days."""
    deleted = delete_expired_cache(database.session)
    context.add_output_metadata({"deleted": deleted})
    return dg.Output(None)


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=3600, retries=2),
    description="Claim AddressEnrichable recipients into batches (per organization) and "
    "submit them to Faraday (01:00, 07:00, 13:00, 19:00 New York).",
)
def address_enrichment_job() -> None:
    start_enrichment_batches()


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=1800),
    description="Poll the open address-enrichment batches and apply the ready ones.",
)
def enrichment_results_job() -> None:
    poll_enrichment_batches()


@dg.job(
    tags=tags.job_tags(MAINTENANCE, max_runtime=900, retries=2),
    description="Delete cached address-enrichment answers older than 90 days (daily).",
)
def enrichment_cache_cleanup_job() -> None:
    delete_expired_enrichment_cache()


address_enrichment_schedule = dg.ScheduleDefinition(
    name="address_enrichment_schedule",
    job=address_enrichment_job,
    cron_schedule=ENRICHMENT_CRON,
    execution_timezone=ENRICHMENT_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="01:00, 07:00, 13:00 and 19:00 New York: start address-enrichment batches.",
)

enrichment_cache_cleanup_schedule = dg.ScheduleDefinition(
    name="enrichment_cache_cleanup_schedule",
    job=enrichment_cache_cleanup_job,
    cron_schedule="10 4 * * *",
    execution_timezone=ENRICHMENT_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 04:10 New York: delete enrichment answers older than 90 days.",
)


@dg.sensor(
    job=enrichment_results_job,
    minimum_interval_seconds=POLL_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="While an address-enrichment batch is open, launch a run that polls the "
    "vendor every 2 minutes (one at a time).",
)
def enrichment_batches_sensor(
    context: dg.SensorEvaluationContext, database: Database
) -> dg.RunRequest | dg.SkipReason:
    if not open_batch_count(database.session):
        return dg.SkipReason("no address-enrichment batch is open")
    if active_runs(context.instance, job_name=enrichment_results_job.name):
        return dg.SkipReason("the previous poll of the open batches has not finished")
    now = datetime.now(UTC)
    return dg.RunRequest(
        run_key=f"enrichment-poll-{now:%Y%m%dT%H%M%S}",
        tags={tags.REQUESTED_BY: "enrichment_batches_sensor"},
    )


JOBS = [address_enrichment_job, enrichment_results_job, enrichment_cache_cleanup_job]
SCHEDULES = [address_enrichment_schedule, enrichment_cache_cleanup_schedule]
SENSORS = [enrichment_batches_sensor]
