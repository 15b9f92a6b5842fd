"""Profile enrichment as a job: every 10 minutes, each organization's recipients not yet
proofed get the CDP properties their designs print (rules: ``domain.profile_enrichment``;
use case: ``services.profile_enrichment``).

``list_organizations_to_enrich`` fans out one ``enrich_organization_profiles`` step per
organization (mapping key: the organization id); ``summarize_profile_enrichment`` collects
them. An organization whose CDP cannot be read fails alone: its step returns the failure,
the others finish, and the summary then turns the run red naming every failed organization
(``failed_organizations`` in its metadata). Re-running is harmless: what was written is
skipped for 24 hours, and a repeated write stores the same values.

On demand, for some organizations (the ``requested_by`` and ``reason`` tags are required
outside the schedule):

    dagster job launch -w workspace.yaml -j profile_enrichment_job \\
      --config-json '{"ops": {"list_organizations_to_enrich": {"config":
                       {"organization_ids": [3]}}}}' \\
      --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "new design"}'
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.runs import check_launch
from mail_pipeline.partitions import BUSINESS_TIMEZONE
from mail_pipeline.resources.cdp import CdpResource
from mail_pipeline.resources.database import Database
from mail_pipeline.services.profile_enrichment import (
    DEFAULT_LIMIT,
    EnrichmentResult,
    ProfileEnrichmentFailed,
    enrich_organization,
    organizations_to_enrich,
)

STAGE = "sync"
COUNTS = ("checked", "fetched", "not_found", "properties_set", "missing", "dropped")


class ProfileEnrichmentConfig(dg.Config):
    #: Only these organizations (default: every organization with recipients due).
    organization_ids: list[int] = []
    #: Recipients checked per organization in this run (the next run does the rest).
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class EnrichmentTask:
    organization_id: int
    limit: int
    #: One moment for the whole run: the 24-hour rule is applied as of it.
    now: datetime


@dataclass(frozen=True)
class OrganizationOutcome:
    organization_id: int
    counts: dict[str, Any]
    #: Why the organization failed (its CDP could not be read); None when it succeeded.
    failure: str | None = None


@dg.op(out=dg.DynamicOut(EnrichmentTask))
def list_organizations_to_enrich(
    context: dg.OpExecutionContext, config: ProfileEnrichmentConfig, database: Database
) -> Iterator[dg.DynamicOutput[EnrichmentTask]]:
    """One step per organization with recipients due whose designs print CDP properties."""
    check_launch(context)
    now = datetime.now(UTC)
    organization_ids = organizations_to_enrich(database.session, now)
    if config.organization_ids:
        organization_ids = [o for o in organization_ids if o in set(config.organization_ids)]
    context.log.info(
        "%d organization(s) to enrich: %s",
        len(organization_ids),
        ", ".join(map(str, organization_ids)) or "none",
    )
    for organization_id in organization_ids:
        yield dg.DynamicOutput(
            EnrichmentTask(organization_id, config.limit, now), mapping_key=str(organization_id)
        )


@dg.op
def enrich_organization_profiles(
    context: dg.OpExecutionContext, task: EnrichmentTask, database: Database, cdp: CdpResource
) -> dg.Output[OrganizationOutcome]:
    """Fetch and store one organization's design properties; a CDP failure is returned (the
    summary fails the run once every organization is done)."""
    try:
        result = enrich_organization(
            database.session, cdp, task.organization_id, task.now, task.limit
        )
    except ProfileEnrichmentFailed as failed:
        context.log.error("profile enrichment failed: %s", failed)
        outcome = OrganizationOutcome(
            task.organization_id, failed.result.metadata(), failure=failed.reason
        )
        return dg.Output(outcome, metadata={**outcome.counts, "failure": failed.reason})
    except Exception as error:  # isolated per organization (a database error too)
        context.log.exception("profile enrichment of %s failed", task.organization_id)
        reason = f"{type(error).__name__}: {str(error)[:300]}"
        outcome = OrganizationOutcome(
            task.organization_id,
            EnrichmentResult(task.organization_id).metadata(),
            failure=reason,
        )
        return dg.Output(outcome, metadata={**outcome.counts, "failure": reason})
    _log_result(context, result)
    outcome = OrganizationOutcome(task.organization_id, result.metadata())
    return dg.Output(outcome, metadata=outcome.counts)


def _log_result(context: dg.OpExecutionContext, result: EnrichmentResult) -> None:
    for reason in result.reasons:
        context.log.warning("property dropped: %s", reason)
    if result.invalid_designs:
        context.log.warning(
            "campaigns with an invalid design, not enriched: %s",
            ", ".join(map(str, result.invalid_designs)),
        )


@dg.op
def summarize_profile_enrichment(
    context: dg.OpExecutionContext, outcomes: list[OrganizationOutcome]
) -> dg.Output[None]:
    """Totals over the organizations; fails the run when any organization failed."""
    totals = {key: sum(int(o.counts.get(key, 0)) for o in outcomes) for key in COUNTS}
    failed = {o.organization_id: o.failure for o in outcomes if o.failure is not None}
    metadata: dict[str, Any] = {
        "organizations": len(outcomes),
        **totals,
        "failed_organizations": sorted(failed),
    }
    if failed:
        raise dg.Failure(
            description="profile enrichment failed for "
            + "; ".join(f"organization {org}: {reason}" for org, reason in sorted(failed.items())),
            metadata=metadata,
            allow_retries=False,
        )
    context.log.info("profile enrichment: %s", totals)
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=600),
    description="Fetch the CDP properties designs print for recipients not yet proofed, "
    "per organization (every 10 minutes).",
)
def profile_enrichment_job() -> None:
    summarize_profile_enrichment(
        list_organizations_to_enrich().map(enrich_organization_profiles).collect()
    )


@dg.schedule(
    cron_schedule="*/10 * * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=profile_enrichment_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes: CDP properties for recipients not yet proofed.",
)
def profile_enrichment_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"profile-enrichment-{context.scheduled_execution_time.isoformat()}",
        tags={tags.REQUESTED_BY: "schedule"},
    )


JOBS = [profile_enrichment_job]
SCHEDULES = [profile_enrichment_schedule]
