"""The rules of the brand-facing reporting store, as plain Python.

Window
    A sync rewrites an organization's campaign-day rows of the last :data:`REPORTING_DAYS`
    New York days, today included (:func:`reporting_window`); older rows keep what the last
    sync that covered them wrote (the daily metrics of old days change only by a backfill;
    a backfill older than the window reaches the store by a sync with more ``days``). The
    per-campaign totals are always rewritten whole.

Rows of a campaign-day
    One row per currency the day's attributed orders or spend were in; the day's mailed,
    delivered and returned counts are on the row of the first of these currencies
    (alphabetically) and zero on the others, so summing rows never counts a postcard twice.
    A day with postcard activity and no money has one row in :data:`NO_CURRENCY`.

Figures
    CPA and ROAS of a row or a campaign are ``domain.metrics.cost_per_acquisition`` and
    ``return_on_ad_spend`` of the same currency's amounts; none when there are no orders or
    no spend. A campaign's totals are in its results' currency, or none when its spend and
    revenue span several currencies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from mail_pipeline.domain.metrics import DayRange, Verdict, day_of

#: New York days a sync rewrites, today included.
REPORTING_DAYS = 35
#: ISO 4217's code for "no currency involved": a campaign-day with postcards and no money.
NO_CURRENCY = "XXX"
#: At most this many characters of a failure's reason are stored.
ERROR_MAX = 2000

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_VERDICTS = frozenset(v.value for v in Verdict)


class SyncStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"


def reporting_window(now: datetime, days: int = REPORTING_DAYS) -> DayRange:
    """The New York days a sync at ``now`` rewrites: ``days`` of them, ending today."""
    if days < 1:
        raise ValueError(f"a sync covers at least one day, not {days}")
    today = day_of(now)
    return DayRange(today - timedelta(days=days - 1), today)


def check_currency(currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise ValueError(f"a currency is three capital letters (ISO 4217), not {currency!r}")
    return currency


def check_count(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{name} is a count, never negative: {value}")
    return value


def check_ratio(name: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value}")
    return value


def check_verdict(value: str | None) -> str | None:
    if value is not None and value not in _VERDICTS:
        raise ValueError(f"unknown verdict {value!r}")
    return value


def check_lift(low: float | None, lift: float | None, high: float | None) -> None:
    for name, value in (("lift_low", low), ("lift", lift), ("lift_high", high)):
        check_ratio(name, value)
        if value is not None and not -1 <= value <= 1:
            raise ValueError(f"{name} is a difference of proportions, in [-1, 1]: {value}")
    if None not in (low, lift, high) and not low <= lift <= high:  # type: ignore[operator]
        raise ValueError(f"the lift {lift} is outside its interval [{low}, {high}]")


@dataclass(frozen=True)
class DayFigures:
    """One campaign-day in one currency, as the reporting store keeps it."""

    campaign_id: int
    day: date
    currency: str
    mailed: int = 0
    delivered: int = 0
    returned: int = 0
    orders: int = 0
    revenue_minor: int = 0
    spend_minor: int = 0

    def __post_init__(self) -> None:
        check_currency(self.currency)
        for name in ("mailed", "delivered", "returned", "orders", "spend_minor"):
            check_count(name, getattr(self, name))
        check_count("revenue_minor", self.revenue_minor)


def error_text(reason: str) -> str:
    """A failure's reason as stored: at most :data:`ERROR_MAX` characters."""
    reason = reason.strip() or "(no reason given)"
    return reason if len(reason) <= ERROR_MAX else reason[: ERROR_MAX - 1] + "…"
