"""Attribution as an asset: every order credited to at most one mailed recipient of its
organization (offer code, then email, then address, inside the campaign's window), and
matched the same way to holdout recipients, every 5 minutes.

The rules are ``domain.attribution``'s; the work is ``services.attribution.attribute_orders``
(incremental: the orders changed since each organization's watermark, idempotent). The
checks below run with every materialization of ``attribution_job``, and can be run alone
from the UI.
"""

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import Metadata
from mail_pipeline.jobs.runs import active_runs, check_named_job_launch
from mail_pipeline.partitions import BUSINESS_TIMEZONE
from mail_pipeline.resources.database import Database
from mail_pipeline.services.attribution import AttributionResult, attribute_orders
from mail_pipeline.services.attribution_checks import (
    Finding,
    attributions_in_window,
    credited_once_within_organization,
    revenue_not_negative,
)

GROUP = "orders_and_attribution"


def _metadata(result: AttributionResult) -> Metadata:
    metadata: Metadata = {
        "orders_examined": result.orders_examined,
        "attributed_by_offer_code": result.code_redemptions,
        "attributed_by_email": result.attributed.get("email", 0),
        "attributed_by_address": result.attributed.get("address", 0),
        "responder_matches": result.responder_matches,
        "holdout_matches": result.holdout_matched,
        "attributions_inserted": result.attribution_writes.inserted,
        "attributions_updated": result.attribution_writes.updated,
        "attributions_removed": result.attribution_writes.removed,
        "holdout_matches_inserted": result.holdout_writes.inserted,
        "holdout_matches_updated": result.holdout_writes.updated,
        "holdout_matches_removed": result.holdout_writes.removed,
        "seconds": round(result.seconds, 3),
    }
    if result.examined_through is not None:
        metadata["examined_through"] = result.examined_through.isoformat()
    for currency, minor in result.revenue_minor.items():
        metadata[f"attributed_revenue_minor_{currency}"] = minor
    return metadata


class AttributionConfig(dg.Config):
    """An on-demand run for some organizations only (default: every organization waiting)."""

    organization_ids: list[int] = []


@dg.asset(
    key="attributions",
    group_name=GROUP,
    deps=[dg.AssetKey("orders"), dg.AssetKey("recipients")],
    kinds={"pandas", "sql"},
    description="Orders credited to mailed recipients (attributions: offer code, email or "
    "address, inside the campaign's window) and matched to holdout recipients "
    "(holdout_matches). Incremental: orders changed since each organization's watermark; "
    "idempotent.",
)
def attributions(
    context: dg.AssetExecutionContext, config: AttributionConfig, database: Database
) -> dg.MaterializeResult:
    check_named_job_launch(context)
    result = attribute_orders(database.session, organization_ids=config.organization_ids or None)
    context.log.info(
        "attribution: %s orders examined, %s by offer code, %s by email or address, "
        "%s holdout matches",
        result.orders_examined,
        result.code_redemptions,
        result.responder_matches,
        result.holdout_matched,
    )
    return dg.MaterializeResult(metadata=_metadata(result))


def _result(finding: Finding) -> dg.AssetCheckResult:
    metadata: Metadata = {"violations": finding.count}
    if finding.order_ids:
        metadata["example_order_ids"] = dg.MetadataValue.json(finding.order_ids)
    return dg.AssetCheckResult(
        passed=finding.count == 0, description=finding.description, metadata=metadata
    )


@dg.asset_check(
    asset=attributions,
    blocking=True,
    description="No order is credited twice (in attributions, or in holdout_matches), and "
    "every credit's order, recipient and campaign exist and are of the credit's organization "
    "(the credit tables have no foreign keys: this check holds their references).",
)
def credited_once_in_own_organization(database: Database) -> dg.AssetCheckResult:
    return _result(credited_once_within_organization(database.session))


@dg.asset_check(
    asset=attributions,
    description="No attribution or holdout match has negative revenue.",
)
def attributed_revenue_not_negative(database: Database) -> dg.AssetCheckResult:
    return _result(revenue_not_negative(database.session))


@dg.asset_check(
    asset=attributions,
    description="Every attribution is to a mailed recipient (Sent or Received) and inside "
    "its window: sent_at <= ordered_at < sent_at + the campaign's attribution window.",
)
def attributions_inside_window(database: Database) -> dg.AssetCheckResult:
    return _result(attributions_in_window(database.session))


#: Materializes ``attributions``; its checks run in the same run.
attribution_job = dg.define_asset_job(
    "attribution_job",
    selection=dg.AssetSelection.assets(attributions),
    tags=tags.job_tags("attribution", max_runtime=1800),
    description="Credit new and changed orders to mailed recipients, match them to holdout "
    "recipients, and check the result.",
)


@dg.schedule(
    name="attribution_schedule",
    cron_schedule="*/5 * * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=attribution_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Attribution every 5 minutes; skipped while the previous run is in flight.",
)
def attribution_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if active_runs(context.instance, job_name=attribution_job.name):
        return dg.SkipReason("the previous attribution run is still queued or running")
    return dg.RunRequest(tags={tags.STAGE: "attribution", tags.REQUESTED_BY: "schedule"})


ASSETS = [attributions]
ASSET_CHECKS = [
    credited_once_in_own_organization,
    attributed_revenue_not_negative,
    attributions_inside_window,
]
JOBS = [attribution_job]
SCHEDULES = [attribution_schedule]
