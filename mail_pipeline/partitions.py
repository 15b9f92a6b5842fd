"""Every partitions definition, declared once and imported wherever it is used.

Business days are US/Eastern (seed 000: "All schedules run in US/Eastern timezone"); the
IANA name ``America/New_York`` is the same zone.
"""

from __future__ import annotations

import dagster as dg

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
