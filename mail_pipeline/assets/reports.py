"""Brand reports as partitioned assets, and the schedules that send them.

- ``weekly_reports``: one partition per week Saturday..Friday (``partitions.
  weekly_report_partitions``; the key is the Saturday). One run handles every active
  organization: those on the weekly cadence get the week, those on the biweekly cadence the
  two weeks ending that Friday when it is one of their Fridays, and are skipped otherwise.
- ``bfcm_reports``: one partition per New York day of the BFCM season (``partitions.
  bfcm_report_partitions``: November 1 - December 10); every active organization gets that
  day's report.

Each run calls ``services.reports.run_reports``: an organization's failure does not stop the
others; the run fails afterwards, naming them in its failure's metadata. Re-running a
partition never sends a report twice (the ``reports`` row and its status decide). Charts and
the standalone HTML are kept under ``<archive_folder>/<weekly|bfcm>/<partition>/<slug>/``.

Schedules (New York time): ``weekly_reports_schedule`` on Fridays at 03:00 materializes the
last week that is over - the one ending the *previous* Friday, since the week ending that
very Friday has not ended at 03:00 - and ``bfcm_reports_schedule`` at 01:30 every day
materializes the day before, skipping days outside the season.
"""

import base64
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from mail_pipeline.domain.reports import (
    bfcm_day,
    bfcm_report_due,
    cadence_period,
    latest_friday_ended,
    week_of,
    week_over,
)
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import MAX_ROWS, Metadata
from mail_pipeline.jobs.runs import check_named_job_launch
from mail_pipeline.partitions import (
    BFCM_SEASON_START,
    BUSINESS_TIMEZONE,
    bfcm_report_partitions,
    weekly_report_partitions,
)
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.resources.reports import ReportEmailResource
from mail_pipeline.services.report_rendering import format_money, format_ratio
from mail_pipeline.services.reports import ReportRunResult, run_reports, week_to_date_due

GROUP = "reports"
STAGE = "analytics"
METRICS = [
    dg.AssetKey("daily_order_metrics"),
    dg.AssetKey("daily_recipient_metrics"),
    dg.AssetKey("campaign_results"),
]
NEW_YORK = ZoneInfo(BUSINESS_TIMEZONE)


class WeeklyReportConfig(dg.Config):
    #: Send the report of a week that is not over yet, as it stands (the week's report is
    #: then never sent again). Off: such a partition fails with the reason.
    week_to_date: bool = False


def week_friday(partition_key: str) -> date:
    """The Friday a weekly partition (keyed by its Saturday) ends on."""
    return date.fromisoformat(partition_key) + timedelta(days=6)


def week_partition_key(friday: date) -> str:
    return (friday - timedelta(days=6)).isoformat()


def bfcm_season_start(year: int) -> date:
    return date(year, *BFCM_SEASON_START)


def _table(result: ReportRunResult) -> str:
    rows = [
        "| organization | outcome | status | sent | attributed orders | revenue | ROAS |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in result.reports[:MAX_ROWS]:
        figures = report.figures
        if figures is None:
            numbers = ["", "", "", ""]
        else:
            current = figures.current
            numbers = [
                f"{current.sent:,}",
                f"{current.attributed_orders:,}",
                format_money(current.attributed_revenue_minor, figures.currency),
                format_ratio(current.roas),
            ]
        cells = [report.slug, str(report.outcome), report.status or "", *numbers]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if len(result.reports) > MAX_ROWS:
        rows.append(f"| ... {len(result.reports) - MAX_ROWS} more | | | | | | |")
    return "\n".join(rows)


def report_metadata(result: ReportRunResult, folder: Path) -> Metadata:
    """Counts, a summary table, and the first organization's first chart."""
    metadata: Metadata = {
        "generated": result.generated,
        "sent": result.sent,
        "already_sent": result.already_sent,
        "skipped": result.skipped,
        "failed": result.failed,
        "reports": dg.MetadataValue.md(_table(result)),
        "folder": dg.MetadataValue.path(str(folder)),
    }
    if result.failures:
        metadata["failures"] = dg.MetadataValue.json(result.failures)
    first = next((r for r in result.reports if r.files), None)
    if first is not None:
        png = next(path for path in first.files if path.suffix == ".png")
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        metadata["first_chart"] = dg.MetadataValue.md(
            f"**{first.slug}** ({png.name})\n\n![{png.stem}](data:image/png;base64,{encoded})"
        )
        metadata["first_report"] = dg.MetadataValue.path(str(png.parent / "report.html"))
    return metadata


def _materialization(result: ReportRunResult, folder: Path) -> dg.MaterializeResult:
    metadata = report_metadata(result, folder)
    if result.failures:
        raise dg.Failure(
            description="reports failed for "
            + ", ".join(f"{slug} ({reason})" for slug, reason in result.failures.items()),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key="weekly_reports",
    group_name=GROUP,
    partitions_def=weekly_report_partitions,
    deps=METRICS,
    kinds={"python", "email"},
    tags={tags.STAGE: STAGE},
    description="Every active organization's weekly (or biweekly) report for the week "
    "Saturday..Friday: generated, kept as PNG charts and HTML, and emailed at most once.",
)
def weekly_reports(
    context: dg.AssetExecutionContext,
    config: WeeklyReportConfig,
    database: Database,
    queues: QueuesResource,
    report_email: ReportEmailResource,
) -> dg.MaterializeResult:
    check_named_job_launch(context)
    friday = week_friday(context.partition_key)
    if not week_over(friday, datetime.now(NEW_YORK).date()) and not config.week_to_date:
        raise dg.Failure(
            description=f"the week ending {friday} is not over: its report would be sent "
            "with part of the week, and never again (a report is sent once). Wait for the "
            "Friday schedule, or set week_to_date: true to send it as it stands."
        )
    folder = Path(report_email.archive_folder) / "weekly" / context.partition_key
    result = run_reports(
        database.session,
        lambda organization: cadence_period(friday, organization.cadence),
        report_email.delivery(queues),
        folder,
        log=context.log,
    )
    return _materialization(result, folder)


@dg.asset(
    key="bfcm_reports",
    group_name=GROUP,
    partitions_def=bfcm_report_partitions,
    deps=METRICS,
    kinds={"python", "email"},
    tags={tags.STAGE: STAGE},
    description="Every active organization's Black Friday / Cyber Monday report of one day "
    "of the season (through December 10), emailed at most once.",
)
def bfcm_reports(
    context: dg.AssetExecutionContext,
    database: Database,
    queues: QueuesResource,
    report_email: ReportEmailResource,
) -> dg.MaterializeResult:
    check_named_job_launch(context)
    day = date.fromisoformat(context.partition_key)
    due = bfcm_report_due(day, bfcm_season_start(day.year))
    folder = Path(report_email.archive_folder) / "bfcm" / context.partition_key
    result = run_reports(
        database.session,
        lambda _organization: bfcm_day(day) if due else None,
        report_email.delivery(queues),
        folder,
        log=context.log,
    )
    return _materialization(result, folder)


weekly_reports_job = dg.define_asset_job(
    "weekly_reports_job",
    selection=[weekly_reports],
    tags=tags.job_tags(STAGE, max_runtime=3600, retries=2),
    description="Generate and send the weekly reports of one week (a partition).",
)
bfcm_reports_job = dg.define_asset_job(
    "bfcm_reports_job",
    selection=[bfcm_reports],
    tags=tags.job_tags(STAGE, max_runtime=3600, retries=2),
    description="Generate and send the BFCM reports of one day (a partition).",
)


def _today(context: dg.ScheduleEvaluationContext) -> date:
    return context.scheduled_execution_time.astimezone(NEW_YORK).date()


@dg.schedule(
    cron_schedule="0 3 * * 5",
    execution_timezone=BUSINESS_TIMEZONE,
    job=weekly_reports_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Fridays 03:00 New York: the reports of the last week that is over (ending "
    "the previous Friday).",
)
def weekly_reports_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    key = week_partition_key(latest_friday_ended(_today(context)))
    return dg.RunRequest(run_key=f"weekly-reports-{key}", partition_key=key)


@dg.schedule(
    cron_schedule="30 1 * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=bfcm_reports_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="01:30 New York every day: the BFCM reports of the day before, during the "
    "season (November 1 - December 10); skipped otherwise.",
)
def bfcm_reports_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    day = _today(context) - timedelta(days=1)
    if not bfcm_report_due(day, bfcm_season_start(day.year)):
        return dg.SkipReason(f"{day} is outside the BFCM season (Nov 1 - Dec 10)")
    key = day.isoformat()
    return dg.RunRequest(run_key=f"bfcm-reports-{key}", partition_key=key)


@dg.sensor(
    job=weekly_reports_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Local only: once this week's postcards and attributed orders are in the "
    "daily metrics, sends each brand this week's report as it stands (week_to_date), once; "
    "production sends a week's report after it ends (weekly_reports_schedule).",
)
def sandbox_weekly_reports(
    context: dg.SensorEvaluationContext, database: Database
) -> dg.RunRequest | dg.SkipReason:
    saturday = week_of(datetime.now(NEW_YORK).date()).first
    if not week_to_date_due(database.session, saturday):
        return dg.SkipReason(
            "no postcard mailed or order attributed this week yet, or its report exists"
        )
    key = saturday.isoformat()
    return dg.RunRequest(
        run_key=f"sandbox-weekly-reports-{key}",
        partition_key=key,
        run_config={"ops": {"weekly_reports": {"config": {"week_to_date": True}}}},
        tags={tags.REQUESTED_BY: "sandbox_weekly_reports", tags.REASON: "local demo"},
    )


ASSETS = [weekly_reports, bfcm_reports]
JOBS = [weekly_reports_job, bfcm_reports_job]
SCHEDULES = [weekly_reports_schedule, bfcm_reports_schedule]
#: Local and test environments only (``definitions.py``).
SANDBOX_SENSORS = [sandbox_weekly_reports]
