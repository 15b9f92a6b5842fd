"""Daily metrics and campaign results as assets, and the schedule that keeps them fresh.

- ``daily_order_metrics`` and ``daily_recipient_metrics``: one partition per New York day
  (``partitions.daily_partitions``). Any range of days is ONE run
  (``partitions.daily_backfill_policy``): the asset reads its partition time window and
  computes every day of it in one pass, replacing those days' rows.
- ``campaign_results``: every campaign's spend, CPA, ROAS and lift, recomputed from the base
  tables (a refund or a late attribution of any day shows at once).
- ``daily_metrics_schedule``: every 15 minutes (New York time), one run of
  ``daily_metrics_job`` that refreshes today's partition - and yesterday's until 06:00 the
  next morning (``domain.metrics.days_to_refresh``) - and the campaign results.

Backfill any range from the UI (the asset's Partitions tab -> Materialize -> a range, which
launches one run) or the CLI:

    dagster asset materialize -m mail_pipeline.definitions \\
      --select daily_order_metrics,daily_recipient_metrics --partition-range 2026-11-01...2026-11-30

Each asset's checks run with every materialization, on the days it wrote (non-blocking: the
rows are stored either way, and a failed check is red in the UI).
"""

from typing import Any

import dagster as dg
import pandas as pd

from mail_pipeline.domain.metrics import DayRange, days_to_refresh, major_units
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import MAX_ROWS, Metadata
from mail_pipeline.jobs.runs import check_named_job_launch
from mail_pipeline.partitions import BUSINESS_TIMEZONE, daily_backfill_policy, daily_partitions
from mail_pipeline.resources.database import Database
from mail_pipeline.services.metrics import (
    CampaignResultsRefresh,
    CheckOutcome,
    refresh_campaign_results,
    refresh_order_metrics,
    refresh_recipient_metrics,
)

GROUP = "metrics"
ORDERS = dg.AssetKey("orders")
ATTRIBUTIONS = dg.AssetKey("attributions")
RECIPIENTS = dg.AssetKey("recipients")
#: The run queue's stage for the data half (``dagster.yaml``).
STAGE = "analytics"
#: Dagster's tags for a run over a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

ORDERS_RECONCILE = "reconciles_with_orders"
REVENUE_NOT_NEGATIVE = "revenue_not_negative"
RECIPIENTS_RECONCILE = "reconciles_with_recipients"
RATES_ARE_PROPORTIONS = "rates_are_proportions"


def _days(context: dg.AssetExecutionContext) -> DayRange:
    window = context.partition_time_window
    return DayRange.of_window(window.start, window.end)


def _check(name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    metadata: Metadata = {"summary": outcome.summary}
    if outcome.mismatches:
        metadata["first_problems"] = dg.MetadataValue.md(
            "\n".join(f"- {problem}" for problem in outcome.mismatches)
        )
    return dg.AssetCheckResult(
        check_name=name, passed=outcome.passed, description=outcome.summary, metadata=metadata
    )


def _money(amounts: dict[str, int]) -> str:
    return ", ".join(f"{major_units(v, c)} {c}" for c, v in sorted(amounts.items())) or "none"


@dg.asset(
    key="daily_order_metrics",
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    deps=[ORDERS, ATTRIBUTIONS],
    kinds={"sql", "pandas"},
    check_specs=[
        dg.AssetCheckSpec(
            ORDERS_RECONCILE,
            asset="daily_order_metrics",
            description="The days' totals equal the orders, attributions and holdout matches "
            "they come from (orders, cancelled orders and revenue per organization and "
            "currency; orders and revenue per campaign and method).",
        ),
        dg.AssetCheckSpec(
            REVENUE_NOT_NEGATIVE,
            asset="daily_order_metrics",
            description="No revenue figure of the days is negative.",
        ),
    ],
    description="Per New York day, organization, campaign (or none) and currency: orders, "
    "revenue net of refunds (cancelled orders left out), attributed orders and revenue by "
    "method (offer code, email, address) and orders matched to holdout recipients.",
)
def daily_order_metrics(
    context: dg.AssetExecutionContext, database: Database
) -> dg.MaterializeResult:
    check_named_job_launch(context)
    days = _days(context)
    result = refresh_order_metrics(database.session, days)
    context.log.info("order metrics of %s: %s rows, %s orders", days, result.rows, result.orders)
    return dg.MaterializeResult(
        metadata={
            "days": str(days),
            "dagster/row_count": result.rows,
            "orders": result.orders,
            "cancelled_orders": result.cancelled_orders,
            "revenue": _money(result.revenue_by_currency),
            **{f"{m}_orders": n for m, n in result.attributed_orders.items()},
            "holdout_orders": result.holdout_orders,
        },
        check_results=[
            _check(ORDERS_RECONCILE, result.reconciliation),
            _check(REVENUE_NOT_NEGATIVE, result.revenue_not_negative),
        ],
    )


@dg.asset(
    key="daily_recipient_metrics",
    group_name=GROUP,
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    deps=[RECIPIENTS],
    kinds={"sql", "pandas"},
    check_specs=[
        dg.AssetCheckSpec(
            RECIPIENTS_RECONCILE,
            asset="daily_recipient_metrics",
            description="The days' totals equal the recipients and mailpieces they come "
            "from: recipients created and mailed, recipients at the end of the last day, "
            "postcards accepted and spend per currency, per organization.",
        )
    ],
    description="Per New York day and campaign: recipients created, proofed, mailed, "
    "delivered, returned and errored that day, postcards the printers accepted, recipients "
    "by status at the end of the day; and spend per currency (table daily_spend).",
)
def daily_recipient_metrics(
    context: dg.AssetExecutionContext, database: Database
) -> dg.MaterializeResult:
    check_named_job_launch(context)
    days = _days(context)
    result = refresh_recipient_metrics(database.session, days)
    context.log.info("recipient metrics of %s: %s rows", days, result.rows)
    return dg.MaterializeResult(
        metadata={
            "days": str(days),
            "dagster/row_count": result.rows,
            "spend_rows": result.spend_rows,
            **result.transitions,
            "spend": _money(result.spend_by_currency),
        },
        check_results=[_check(RECIPIENTS_RECONCILE, result.reconciliation)],
    )


def _percent(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{100 * value:.2f}%"


def results_table(refresh: CampaignResultsRefresh) -> str:
    """The headline figures of the first campaigns, as a markdown table."""
    lines = [
        "| campaign | mailed | holdout | converted (mailed) | converted (holdout) "
        "| lift [95% CI] | verdict | spend | CPA | ROAS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = refresh.rows()
    for row in rows[:MAX_ROWS]:
        lift = "-"
        if row["lift"] is not None and not pd.isna(row["lift"]):
            low, high = _percent(row["lift_low"]), _percent(row["lift_high"])
            lift = f"{_percent(row['lift'])} [{low}, {high}]"
        currency = row["currency"] if isinstance(row["currency"], str) else None
        spend = f"{major_units(row['spend_minor'], currency)} {currency}" if currency else "-"
        cpa = roas = "-"
        if currency and row["cpa_minor"] is not None and not pd.isna(row["cpa_minor"]):
            cpa = major_units(round(row["cpa_minor"]), currency)
        if row["roas"] is not None and not pd.isna(row["roas"]):
            roas = f"{row['roas']:.2f}"
        lines.append(
            f"| {row['campaign_id']} | {row['mailed_recipients']} | {row['holdout_recipients']} "
            f"| {_percent(row['mailed_rate'])} | {_percent(row['holdout_rate'])} | {lift} "
            f"| {row['verdict']} | {spend} | {cpa} | {roas} |"
        )
    if len(rows) > MAX_ROWS:
        lines.append(f"| ... | {len(rows) - MAX_ROWS} more | | | | | | | | |")
    return "\n".join(lines)


@dg.asset(
    key="campaign_results",
    group_name=GROUP,
    # It reads the base tables (distinct converted recipients; a refund shows at once), and
    # is refreshed in the same run as the daily metrics, after them: the graph shows both.
    deps=["daily_order_metrics", "daily_recipient_metrics", ATTRIBUTIONS, RECIPIENTS],
    kinds={"sql", "pandas", "statsmodels"},
    check_specs=[
        dg.AssetCheckSpec(
            RATES_ARE_PROPORTIONS,
            asset="campaign_results",
            description="Conversion rates are in [0, 1]; the lift and its interval in "
            "[-1, 1], the lift inside its interval.",
        )
    ],
    description="Per campaign: spend, CPA, ROAS, conversion of mailed vs holdout recipients "
    "and the lift with its 95% interval (Newcomb), or why it is too few to tell.",
)
def campaign_results(database: Database) -> dg.MaterializeResult:
    refresh = refresh_campaign_results(database.session)
    verdicts = refresh.verdicts()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": refresh.campaigns,
            **{f"campaigns_{v}": n for v, n in sorted(verdicts.items())},
            "results": dg.MetadataValue.md(results_table(refresh)),
        },
        check_results=[_check(RATES_ARE_PROPORTIONS, refresh.rates)],
    )


daily_metrics_job = dg.define_asset_job(
    "daily_metrics_job",
    selection=dg.AssetSelection.assets(
        daily_order_metrics, daily_recipient_metrics, campaign_results
    ),
    tags=tags.job_tags(STAGE, max_runtime=3600),
    description="Refresh the daily metrics of a range of days (one run) and the campaign results.",
)

ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def refresh_request(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """The one run of a tick: the days ``domain.metrics.days_to_refresh`` names, as a
    partition (today) or a range of partitions (yesterday and today)."""
    days = days_to_refresh(context.scheduled_execution_time)
    first, last = days[0].isoformat(), days[-1].isoformat()
    run_key = f"daily-metrics-{context.scheduled_execution_time.isoformat()}"
    run_tags = {tags.STAGE: STAGE, tags.REQUESTED_BY: "daily_metrics_schedule"}
    if first == last:
        return dg.RunRequest(run_key=run_key, partition_key=last, tags=run_tags)
    return dg.RunRequest(
        run_key=run_key, tags={**run_tags, RANGE_START_TAG: first, RANGE_END_TAG: last}
    )


@dg.schedule(
    cron_schedule="*/15 * * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=daily_metrics_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes: one run refreshing today's daily metrics (and "
    "yesterday's until 06:00 New York time, for late orders) and the campaign results; "
    "skipped while the previous tick's run has not finished.",
)
def daily_metrics_schedule(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    busy = context.instance.get_runs_count(
        dg.RunsFilter(
            job_name=daily_metrics_job.name,
            statuses=ACTIVE,
            tags={tags.REQUESTED_BY: "daily_metrics_schedule"},
        )
    )
    if busy:
        return dg.SkipReason("the previous refresh of the daily metrics has not finished")
    return refresh_request(context)


ASSETS = [daily_order_metrics, daily_recipient_metrics, campaign_results]
#: The checks are specs of the assets above (they run with every materialization, on the days
#: it wrote), so there is no separate check definition to wire.
ASSET_CHECKS: list[dg.AssetChecksDefinition] = []
JOBS = [daily_metrics_job]
SCHEDULES = [daily_metrics_schedule]
