"""Orders as an asset: every organization's orders, synced from its source of record.

Two paths materialize the one ``orders`` asset (seed 000's two order tasks), each one run per
tick whatever the number of organizations:

- ``orders_schedule`` every 5 minutes: organizations whose orders come from Klaviyo or Ometria;
- ``shopify_orders_sensor`` every 10 seconds: organizations on Shopify, one run at a time.

An operator re-syncs one organization, or one organization's range of days, from the
launchpad or the CLI (``since``/``until`` are days in America/New_York, ``until`` included):

    dagster job launch -w workspace.yaml -j orders_job \\
      --config-json '{"ops": {"orders": {"config": {"organization_ids": [1],
                       "since": "2026-11-01", "until": "2026-11-07"}}}}' \\
      --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "refunds"}'

One organization's failure never stops the others; the run lists it in its metadata and
fails red once everything else is stored.
"""

from datetime import date

import dagster as dg

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import SOURCE_PREFERENCE, day_window
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import MAX_ROWS, Metadata
from mail_pipeline.jobs.runs import active_runs, check_named_job_launch
from mail_pipeline.partitions import BUSINESS_TIMEZONE
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.orders import OrderSourcesResource
from mail_pipeline.services.order_sync import (
    OrderSyncResult,
    Window,
    organizations_reading,
    stale_sources,
    sync_orders,
)

GROUP = "orders_and_attribution"
#: Which path a run of ``orders_job`` is (one run of each path at a time).
ORDERS_PATH = "mail_pipeline/orders_path"
PERIODIC_SOURCES = [IntegrationKind.KLAVIYO.value, IntegrationKind.OMETRIA.value]
SHOPIFY_SOURCES = [IntegrationKind.SHOPIFY.value]


class OrdersConfig(dg.Config):
    #: Only these organizations (default: every active organization).
    organization_ids: list[int] = []
    #: Only organizations whose source of record is one of these (default: all sources).
    sources: list[str] = []
    #: Re-read a range of days (America/New_York; ``until`` included) instead of syncing
    #: from the watermark; the watermark does not move.
    since: str | None = None
    until: str | None = None


def _window(config: OrdersConfig) -> Window | None:
    if config.since is None:
        if config.until is not None:
            raise dg.Failure("`until` needs `since`: give the first day of the range too")
        return None
    try:
        since, until = day_window(
            date.fromisoformat(config.since),
            date.fromisoformat(config.until) if config.until else None,
            BUSINESS_TIMEZONE,
        )
    except ValueError as exc:
        raise dg.Failure(f"the range of days is not valid: {exc}") from exc
    return Window(since, until)


def _kinds(config: OrdersConfig) -> list[IntegrationKind]:
    try:
        return [IntegrationKind(s) for s in config.sources] or list(SOURCE_PREFERENCE)
    except ValueError as exc:
        known = ", ".join(k.value for k in SOURCE_PREFERENCE)
        raise dg.Failure(f"unknown order source ({exc}); known: {known}") from exc


def _metadata(result: OrderSyncResult) -> Metadata:
    rows = ["| organization | source | read since | new | changed | rejected | error |"]
    rows.append("|---|---|---|---|---|---|---|")
    for o in result.outcomes[:MAX_ROWS]:
        error = (o.error or "").replace("|", "/")
        rows.append(
            f"| {o.organization_id} | {o.source} | {o.read_since:%Y-%m-%d %H:%M} | "
            f"{o.inserted} | {o.changed} | {o.rejected} | {error} |"
        )
    if len(result.outcomes) > MAX_ROWS:
        rows.append(f"| ... | {len(result.outcomes) - MAX_ROWS} more | | | | | |")
    metadata: Metadata = {
        "organizations": len(result.outcomes),
        "orders_new": result.inserted,
        "orders_changed": result.changed,
        "orders_rejected": result.rejected,
        "failed_organizations": len(result.failures),
        "sources": dg.MetadataValue.md("\n".join(rows)),
    }
    rejected = [r for o in result.outcomes for r in o.rejected_named][:MAX_ROWS]
    if rejected:
        metadata["rejected_orders"] = dg.MetadataValue.json(rejected)
    return metadata


@dg.asset(
    key="orders",
    group_name=GROUP,
    deps=["klaviyo_placed_orders", "ometria_orders", "shopify_orders"],
    kinds={"sql"},
    description="Every organization's orders from its source of record (Shopify, else "
    "Ometria, else Klaviyo), upserted on (organization, source, order id); incremental by a "
    "watermark per organization and source, re-reading the last 2 hours for late events.",
)
def orders(
    context: dg.AssetExecutionContext,
    config: OrdersConfig,
    database: Database,
    order_sources: OrderSourcesResource,
) -> dg.MaterializeResult:
    check_named_job_launch(context)
    result = sync_orders(
        database.session,
        order_sources,
        kinds=_kinds(config),
        organization_ids=config.organization_ids or None,
        window=_window(config),
    )
    metadata = _metadata(result)
    context.log.info(
        "orders: %s organizations, %s new, %s changed, %s rejected, %s failed",
        len(result.outcomes),
        result.inserted,
        result.changed,
        result.rejected,
        len(result.failures),
    )
    if result.failures:
        # The other organizations' orders are stored; the run turns red so it is seen.
        raise dg.Failure(
            description="; ".join(
                f"organization {f.organization_id} ({f.source}): {f.error}"
                for f in result.failures[:MAX_ROWS]
            ),
            metadata=metadata,
            allow_retries=False,
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=orders,
    description="Every organization's order source synced recently (Shopify within 10 "
    "minutes, Klaviyo and Ometria within 20); a stale one is a warning naming it.",
)
def orders_are_fresh(database: Database) -> dg.AssetCheckResult:
    stale = stale_sources(database.session)
    rows = ["| organization | source | last success | last error |", "|---|---|---|---|"]
    for s in stale[:MAX_ROWS]:
        when = f"{s.last_success_at:%Y-%m-%d %H:%M} UTC" if s.last_success_at else "never"
        rows.append(
            f"| {s.organization_id} | {s.source} | {when} | "
            f"{(s.last_error or '').replace('|', '/')[:200]} |"
        )
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "stale: " + ", ".join(f"organization {s.organization_id} ({s.source})" for s in stale)
            if stale
            else "every organization's orders are fresh"
        ),
        metadata={"stale_sources": len(stale), "sources": dg.MetadataValue.md("\n".join(rows))},
    )


orders_job = dg.define_asset_job(
    "orders_job",
    selection=dg.AssetSelection.assets(orders),
    tags=tags.job_tags("orders", max_runtime=3600),
    description="Sync orders (one run for every organization, or the ones the config names).",
)


def _path_run(path: str, sources: list[str]) -> dg.RunRequest:
    return dg.RunRequest(
        run_config=dg.RunConfig(ops={"orders": OrdersConfig(sources=sources)}),
        tags={tags.STAGE: "orders", ORDERS_PATH: path, tags.REQUESTED_BY: path},
    )


@dg.schedule(
    cron_schedule="*/5 * * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=orders_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Orders of organizations on Klaviyo or Ometria, every 5 minutes, one run.",
)
def orders_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if active_runs(context.instance, job_name=orders_job.name, tags={ORDERS_PATH: "periodic"}):
        return dg.SkipReason("the previous order sync is still running")
    return _path_run("periodic", PERIODIC_SOURCES)


@dg.sensor(
    job=orders_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Orders of organizations on Shopify: a new run as soon as the previous one "
    "ended (every 10 seconds at most), one at a time.",
)
def shopify_orders_sensor(
    context: dg.SensorEvaluationContext, database: Database
) -> dg.SensorResult:
    if active_runs(context.instance, job_name=orders_job.name, tags={ORDERS_PATH: "shopify"}):
        return dg.SensorResult(skip_reason=dg.SkipReason("a Shopify order sync is running"))
    if not organizations_reading(database.session, [IntegrationKind.SHOPIFY]):
        return dg.SensorResult(skip_reason=dg.SkipReason("no organization reads Shopify"))
    return dg.SensorResult(run_requests=[_path_run("shopify", SHOPIFY_SOURCES)])


ASSETS = [orders]
ASSET_CHECKS = [orders_are_fresh]
JOBS = [orders_job]
SCHEDULES = [orders_schedule]
SENSORS = [shopify_orders_sensor]
