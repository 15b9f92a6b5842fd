"""Every partitions definition, declared once and imported wherever it is used.

Business days are US/Eastern (seed 000: "All schedules run in US/Eastern timezone"); the
IANA name ``America/New_York`` is the same zone.
"""

from __future__ import annotations

import dagster as dg

from mail_pipeline.settings import bfcm_season_start

BUSINESS_TIMEZONE = "America/New_York"
HISTORY_START = "2025-01-01"

#: One partition per US/Eastern calendar day: order and recipient aggregates, BFCM reports.
#: Today is a partition from its first minute (``end_offset=1``), so the daily metrics can
#: refresh it while it is still going on.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=HISTORY_START, timezone=BUSINESS_TIMEZONE, end_offset=1
)

#: Any range of daily partitions is backfilled as one run that computes all its days in one
#: pass, never one run per day.
daily_backfill_policy = dg.BackfillPolicy.single_run()

#: One partition per organization (slug), added when an organization is created or synced.
organization_partitions = dg.DynamicPartitionsDefinition(name="organizations")

#: One partition per report week, Saturday 00:00 to the next Saturday 00:00 New York time
#: (the week Saturday..Friday that ``domain.reports`` names by its Friday). A key is the
#: week's Saturday: ``2026-11-21`` is the week ending Friday 2026-11-27. The first is the
#: first whole week of the metrics' history.
#: The week in progress is a partition too (``end_offset=1``), but ``weekly_reports`` refuses
#: it unless asked for a week-to-date report (``WeeklyReportConfig.week_to_date``).
weekly_report_partitions = dg.WeeklyPartitionsDefinition(
    start_date="2025-01-04", day_offset=6, timezone=BUSINESS_TIMEZONE, end_offset=1
)

#: The first day of every BFCM season (month, day): November 1 unless the deployment says
#: otherwise (``MAIL_PIPELINE_BFCM_SEASON_START=MM-DD``). The season runs through December 10
#: (``domain.reports.BFCM_LAST_DAY``). A fixed day rather than the Monday before
#: Thanksgiving, so the partitions are declared once for every year (by cron exclusions) and
#: the week before Black Friday is always in the season.
BFCM_SEASON_START = bfcm_season_start()


def _outside_bfcm_season() -> list[str]:
    """Cron strings of the days outside every season: January to the start, Dec 11-31."""
    month, day = BFCM_SEASON_START
    crons = [f"0 0 * 1-{month - 1} *", "0 0 11-31 12 *"]
    if day > 1:
        crons.append(f"0 0 1-{day - 1} {month} *")
    return crons


#: One partition per New York day of a BFCM season (:data:`BFCM_SEASON_START` through
#: December 10 of each year); every other day of the year is excluded. A day is a partition
#: once it has ended.
bfcm_report_partitions = dg.DailyPartitionsDefinition(
    start_date=f"2025-{BFCM_SEASON_START[0]:02d}-{BFCM_SEASON_START[1]:02d}",
    timezone=BUSINESS_TIMEZONE,
    exclusions=_outside_bfcm_season(),
)
