"""The brand reports: which periods they cover, when they are due, and their figures.

Periods (New York days, as the daily metrics)
    A week is Saturday..Friday and is named by its Friday: the report for the week ending
    Friday F covers F-6..F and can be built once F has ended (:func:`latest_friday_ended`).
    An organization on the weekly CSM cadence gets a report every Friday. One on the
    biweekly cadence gets one every other Friday, covering the two weeks ending then: the
    Fridays a whole even number of weeks after :data:`BIWEEKLY_EPOCH` (Friday 3 January 2025,
    the first Friday of the metrics' history). A count of weeks from a fixed Friday, not the
    parity of the ISO week number, which repeats itself across a year of 53 ISO weeks (2026
    ends on week 53 and 2027 starts on week 1: two odd weeks in a row). A brand that moves
    from weekly to biweekly gets its next report on the next biweekly Friday; when that is
    the very next Friday, the two weeks it covers include one already reported: a week can be
    reported twice, never skipped.

    BFCM (Black Friday / Cyber Monday): every day from the season's start (the caller's, for
    example the Monday before :func:`black_friday`) through December 10 of that year gets a
    daily report covering that one day. Its charts show the seven days ending on it
    (:attr:`ReportPeriod.chart_days`), so a one-day report still shows a trend.

    A report compares its period with the previous one: the same number of days just before
    it (:func:`previous`). Biweekly reports have their own kind (``biweekly``), so a brand's
    weekly and biweekly reports starting on the same Saturday are two rows of ``reports``.

Figures (:func:`report_figures`, from the rows of the daily metrics tables)
    Sent, delivered and returned are recipients: those whose postcard was mailed
    (``sent_at``), delivered (``received_at``) or returned that day. Attributed orders and
    revenue are split into offer-code redemptions and responder matching (email and address
    together); spend is what the printers charged. CPA is spend per attributed order, ROAS
    attributed revenue per unit of spend (``domain.metrics``), both in the report's currency.
    The holdout lifts are each campaign's latest ``campaign_results`` (campaign lifetime, not
    the period), for the campaigns that mailed, were delivered or returned, spent or earned
    an attributed order during the period.

Currency
    The platform has no exchange rates, so a report's money is in one currency. If the
    attributed revenue and spend of the report's days (its period and the previous one) are
    all in one currency (``domain.metrics.single_currency``), that is it. If they span
    several, the report is in the brand's main currency: the one it paid for the most
    postcards in, then the one of the most orders, then the first alphabetically. Revenue,
    spend, CPA and ROAS are then the main currency's alone, and each other currency's
    attributed orders, revenue and spend of the period are listed beside them. With no money
    at all, the currency is any one the rows name, or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

import pandas as pd

from mail_pipeline.domain.campaigns import CsmCadence
from mail_pipeline.domain.metrics import (
    MATCH_TYPES,
    DayRange,
    Verdict,
    cost_per_acquisition,
    return_on_ad_spend,
    single_currency,
)

FRIDAY = 4  # date.weekday()
#: Biweekly reports are due on the Fridays an even number of weeks after this one.
BIWEEKLY_EPOCH = date(2025, 1, 3)
#: The last day of a BFCM season (month, day): its daily reports stop after it.
BFCM_LAST_DAY = (12, 10)
#: How many days a BFCM report's charts show, ending on the report's day.
BFCM_CHART_DAYS = 7


class ReportKind(StrEnum):
    WEEKLY = "weekly"
    BIWEEKLY = "biweekly"
    BFCM = "bfcm"


#: How many days a period of each kind covers.
PERIOD_DAYS = {ReportKind.WEEKLY: 7, ReportKind.BIWEEKLY: 14, ReportKind.BFCM: 1}


# --- periods ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportPeriod:
    """The New York days a report covers, ``first`` to ``last`` inclusive: a week or two
    ending on a Friday, or one BFCM day."""

    first: date
    last: date
    kind: ReportKind

    def __post_init__(self) -> None:
        length = (self.last - self.first).days + 1
        if length != PERIOD_DAYS[self.kind]:
            raise ValueError(
                f"a {self.kind} period has {PERIOD_DAYS[self.kind]} days, not {length}"
            )
        if self.kind != ReportKind.BFCM and self.last.weekday() != FRIDAY:
            raise ValueError(f"a {self.kind} period ends on a Friday, not on {self.last:%A}")

    @property
    def days(self) -> list[date]:
        return DayRange(self.first, self.last).days

    @property
    def chart_days(self) -> list[date]:
        """The days the charts show: the period, or for BFCM the week ending on its day."""
        if self.kind == ReportKind.BFCM:
            return DayRange(self.last - timedelta(days=BFCM_CHART_DAYS - 1), self.last).days
        return self.days

    def __len__(self) -> int:
        return PERIOD_DAYS[self.kind]

    def __str__(self) -> str:
        return f"{self.kind} {DayRange(self.first, self.last)}"


def _friday(day: date) -> date:
    if day.weekday() != FRIDAY:
        raise ValueError(f"{day} is a {day:%A}: weeks end on Fridays")
    return day


def week_ending(friday: date) -> ReportPeriod:
    """The week Saturday..``friday``."""
    return ReportPeriod(_friday(friday) - timedelta(days=6), friday, ReportKind.WEEKLY)


def latest_friday_ended(today: date) -> date:
    """The last Friday before ``today``: the end of the latest week that is over."""
    return today - timedelta(days=(today.weekday() - FRIDAY - 1) % 7 + 1)


def week_of(day: date) -> ReportPeriod:
    """The week Saturday..Friday that ``day`` falls in."""
    return week_ending(day + timedelta(days=(FRIDAY - day.weekday()) % 7))


def week_over(friday: date, today: date) -> bool:
    """Whether the week ending ``friday`` has ended by ``today`` (its report may be sent:
    a report is sent once, so a week still going on would be reported with part of it)."""
    return friday < today


def previous(period: ReportPeriod) -> ReportPeriod:
    """The period of the same kind just before ``period``."""
    step = timedelta(days=len(period))
    return ReportPeriod(period.first - step, period.last - step, period.kind)


def biweekly_friday(friday: date) -> bool:
    """Whether a biweekly report is due on ``friday``: an even number of weeks after
    :data:`BIWEEKLY_EPOCH`."""
    return (_friday(friday) - BIWEEKLY_EPOCH).days // 7 % 2 == 0


def report_due(friday: date, cadence: CsmCadence) -> bool:
    """Whether an organization on ``cadence`` gets a report for the week ending ``friday``."""
    return cadence == CsmCadence.WEEKLY or biweekly_friday(friday)


def cadence_period(friday: date, cadence: CsmCadence) -> ReportPeriod | None:
    """The period of the report due on ``friday`` for ``cadence``: the week, or the two
    weeks, ending then; ``None`` when no report is due."""
    if not report_due(friday, cadence):
        return None
    if cadence == CsmCadence.WEEKLY:
        return week_ending(friday)
    return ReportPeriod(friday - timedelta(days=13), friday, ReportKind.BIWEEKLY)


def input_days(period: ReportPeriod, previous_period: ReportPeriod | None = None) -> DayRange:
    """The days whose metrics rows a report reads: its previous period's (by default
    :func:`previous`), its own, and its charts'."""
    before = previous_period or previous(period)
    first = min(before.first, period.first, period.chart_days[0])
    return DayRange(first, max(before.last, period.last))


def weekly_partition_days(friday: date, cadence: CsmCadence = CsmCadence.WEEKLY) -> list[date]:
    """The daily partitions (New York days) the report for ``friday`` reads, oldest first:
    those that must be materialized before it is built; none when no report is due."""
    period = cadence_period(friday, cadence)
    return [] if period is None else input_days(period).days


def black_friday(year: int) -> date:
    """The day after the fourth Thursday of November (US Thanksgiving)."""
    first = date(year, 11, 1)
    thursday = first + timedelta(days=(3 - first.weekday()) % 7 + 21)
    return thursday + timedelta(days=1)


def bfcm_last_day(year: int) -> date:
    return date(year, *BFCM_LAST_DAY)


def bfcm_days(year: int, season_start: date) -> list[date]:
    """The days of the BFCM season of ``year`` that get a daily report: ``season_start``
    through December 10, inclusive."""
    if season_start.year != year or season_start > bfcm_last_day(year):
        raise ValueError(f"a {year} BFCM season starts in {year}, by December 10: {season_start}")
    return DayRange(season_start, bfcm_last_day(year)).days


def bfcm_report_due(day: date, season_start: date) -> bool:
    """Whether ``day`` (the day the report covers) gets a BFCM report: from the season's
    start through December 10 of its year."""
    return season_start <= day <= bfcm_last_day(season_start.year)


def bfcm_day(day: date) -> ReportPeriod:
    return ReportPeriod(day, day, ReportKind.BFCM)


# --- figures ----------------------------------------------------------------------------------

#: The attributions' methods that are responder matching, not a code redemption.
MATCHING = tuple(method for method in MATCH_TYPES if method != "offer_code")


@dataclass(frozen=True)
class PeriodTotals:
    """One period's figures; money in minor units of the report's currency."""

    sent: int = 0
    delivered: int = 0
    returned: int = 0
    offer_code_orders: int = 0
    offer_code_revenue_minor: int = 0
    matched_orders: int = 0
    matched_revenue_minor: int = 0
    spend_minor: int = 0
    #: Postcards their printer gave no price for: the spend (so CPA and ROAS) leaves them out.
    unpriced_postcards: int = 0

    @property
    def attributed_orders(self) -> int:
        return self.offer_code_orders + self.matched_orders

    @property
    def attributed_revenue_minor(self) -> int:
        return self.offer_code_revenue_minor + self.matched_revenue_minor

    @property
    def cpa_minor(self) -> float | None:
        """None when nothing was priced (a cost of 0 would be wrong, not cheap)."""
        if not self.spend_minor and self.unpriced_postcards:
            return None
        return cost_per_acquisition(self.spend_minor, self.attributed_orders)

    @property
    def roas(self) -> float | None:
        return return_on_ad_spend(self.attributed_revenue_minor, self.spend_minor)


#: The figures compared with the previous period, in the order a report lists them.
COMPARED_FIGURES = (
    "sent",
    "delivered",
    "returned",
    "offer_code_orders",
    "matched_orders",
    "attributed_orders",
    "offer_code_revenue_minor",
    "matched_revenue_minor",
    "attributed_revenue_minor",
    "spend_minor",
    "cpa_minor",
    "roas",
)


@dataclass(frozen=True)
class Change:
    """A figure of the period against the previous period's."""

    figure: str
    current: float | None
    previous: float | None

    @property
    def delta(self) -> float | None:
        if self.current is None or self.previous is None:
            return None
        return self.current - self.previous

    @property
    def percent(self) -> float | None:
        """The change in percent of the previous figure; ``None`` when that is zero or
        unknown."""
        if self.delta is None or not self.previous:
            return None
        return self.delta / abs(self.previous) * 100


@dataclass(frozen=True)
class OtherCurrency:
    """A currency other than the report's: its figures of the period, not converted."""

    currency: str
    attributed_orders: int
    attributed_revenue_minor: int
    spend_minor: int


@dataclass(frozen=True)
class DayFigures:
    """One day of the charts; money in the report's currency."""

    day: date
    mailed: int
    delivered: int
    attributed_revenue_minor: int
    spend_minor: int


@dataclass(frozen=True)
class CampaignLift:
    """A campaign's holdout comparison (``campaign_results``): the lift is the mailed
    group's conversion rate less the holdout's, with its 95% interval ``low``..``high``."""

    campaign_id: int
    mailed_recipients: int
    holdout_recipients: int
    mailed_rate: float | None
    holdout_rate: float | None
    lift: float | None
    low: float | None
    high: float | None
    verdict: Verdict
    reason: str | None


@dataclass(frozen=True)
class ReportFigures:
    """Everything a report shows, for one organization and period."""

    organization_id: int | None
    period: ReportPeriod
    previous_period: ReportPeriod
    #: The currency of every money figure; ``None`` when the rows name no currency.
    currency: str | None
    current: PeriodTotals
    previous: PeriodTotals
    #: The brand's other currencies' figures of the period, when it has several.
    other_currencies: tuple[OtherCurrency, ...]
    #: One entry per day of ``period.chart_days``.
    daily: tuple[DayFigures, ...]
    lifts: tuple[CampaignLift, ...]

    def change(self, figure: str) -> Change:
        if figure not in COMPARED_FIGURES:
            raise KeyError(figure)
        return Change(figure, getattr(self.current, figure), getattr(self.previous, figure))

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(self.change(figure) for figure in COMPARED_FIGURES)


def main_currency(
    money: Mapping[str, int], postcards: Mapping[str, int], orders: Mapping[str, int]
) -> str | None:
    """The report's currency (see the module's docstring): ``money`` is attributed revenue
    plus spend per currency, ``postcards`` and ``orders`` counts per currency."""
    only = single_currency(dict(money))
    if only is not None:
        return only
    candidates = {currency for currency, amount in money.items() if amount}
    if not candidates:
        candidates = set(postcards) | set(orders)
    if not candidates:
        return None
    return min(candidates, key=lambda c: (-postcards.get(c, 0), -orders.get(c, 0), c))


def _within(frame: pd.DataFrame, days: DayRange) -> pd.DataFrame:
    """The rows of ``days``, with ``day`` as dates (whatever the frame held)."""
    if frame.empty:
        return frame
    frame = frame.assign(day=pd.to_datetime(frame["day"]).dt.date)
    return frame.loc[(frame["day"] >= days.first) & (frame["day"] <= days.last)]


def _by_day(frame: pd.DataFrame, columns: list[str], days: list[date]) -> pd.DataFrame:
    """Sums of ``columns`` per day, one row for each of ``days`` (zeros where none)."""
    if frame.empty:
        return pd.DataFrame(0, index=pd.Index(days), columns=columns)
    sums = frame.groupby("day")[columns].sum()
    return sums.reindex(pd.Index(days), fill_value=0).astype("int64")


def _per_currency(frame: pd.DataFrame, column: str) -> dict[str, int]:
    if frame.empty:
        return {}
    return {str(k): int(v) for k, v in frame.groupby("currency")[column].sum().items()}


def _organization(*frames: pd.DataFrame) -> int | None:
    ids: set[int] = set()
    for frame in frames:
        if not frame.empty:
            ids |= {int(value) for value in frame["organization_id"].dropna().unique()}
    if len(ids) > 1:
        raise ValueError(f"a report is one organization's; the rows are of {sorted(ids)}")
    return next(iter(ids), None)


def _optional(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _in_currency(frame: pd.DataFrame, currency: str | None) -> pd.DataFrame:
    return frame if frame.empty else frame.loc[frame["currency"] == currency]


def report_figures(
    order_rows: pd.DataFrame,
    recipient_rows: pd.DataFrame,
    spend_rows: pd.DataFrame,
    campaign_results: pd.DataFrame,
    period: ReportPeriod,
    previous_period: ReportPeriod,
) -> ReportFigures:
    """One organization's report figures from its rows of ``daily_order_metrics``,
    ``daily_recipient_metrics``, ``daily_spend`` and ``campaign_results`` (their columns;
    rows of other days are left out, so the frames may hold more days than
    :func:`input_days`)."""
    organization = _organization(order_rows, recipient_rows, spend_rows, campaign_results)
    days = input_days(period, previous_period)
    orders, recipients, spend = (
        _within(frame, days) for frame in (order_rows, recipient_rows, spend_rows)
    )
    if not orders.empty:
        orders = orders.assign(
            matched_orders=sum(orders[f"{m}_orders"] for m in MATCHING),
            matched_revenue_minor=sum(orders[f"{m}_revenue_minor"] for m in MATCHING),
            attributed_orders=sum(orders[f"{m}_orders"] for m in MATCH_TYPES),
            attributed_revenue_minor=sum(orders[f"{m}_revenue_minor"] for m in MATCH_TYPES),
        )

    revenue = _per_currency(orders, "attributed_revenue_minor")
    spent = _per_currency(spend, "spend_minor")
    currency = main_currency(
        {c: revenue.get(c, 0) + spent.get(c, 0) for c in {*revenue, *spent}},
        _per_currency(spend, "postcards"),
        _per_currency(orders, "orders"),
    )

    order_columns = [
        "offer_code_orders",
        "offer_code_revenue_minor",
        "matched_orders",
        "matched_revenue_minor",
        "attributed_revenue_minor",
    ]
    all_days = days.days
    recipient_columns = ["mailed", "delivered", "returned"]
    if "unpriced_postcards" in recipients.columns:
        recipient_columns.append("unpriced_postcards")
    recipient_days = _by_day(recipients, recipient_columns, all_days)
    order_days = _by_day(_in_currency(orders, currency), order_columns, all_days)
    spend_days = _by_day(_in_currency(spend, currency), ["spend_minor"], all_days)

    def totals(p: ReportPeriod) -> PeriodTotals:
        r, o, s = (table.loc[p.days].sum() for table in (recipient_days, order_days, spend_days))
        return PeriodTotals(
            sent=int(r["mailed"]),
            delivered=int(r["delivered"]),
            returned=int(r["returned"]),
            offer_code_orders=int(o["offer_code_orders"]),
            offer_code_revenue_minor=int(o["offer_code_revenue_minor"]),
            matched_orders=int(o["matched_orders"]),
            matched_revenue_minor=int(o["matched_revenue_minor"]),
            spend_minor=int(s["spend_minor"]),
            unpriced_postcards=int(r.get("unpriced_postcards", 0)),
        )

    mailed, delivered = (recipient_days[f].to_dict() for f in ("mailed", "delivered"))
    revenue_of = order_days["attributed_revenue_minor"].to_dict()
    spend_of = spend_days["spend_minor"].to_dict()
    daily = tuple(
        DayFigures(
            day, int(mailed[day]), int(delivered[day]), int(revenue_of[day]), int(spend_of[day])
        )
        for day in period.chart_days
    )
    now = DayRange(period.first, period.last)
    return ReportFigures(
        organization_id=organization,
        period=period,
        previous_period=previous_period,
        currency=currency,
        current=totals(period),
        previous=totals(previous_period),
        other_currencies=_other_currencies(_within(orders, now), _within(spend, now), currency),
        daily=daily,
        lifts=_lifts(campaign_results, _active_campaigns(orders, recipients, spend, now)),
    )


def _other_currencies(
    orders: pd.DataFrame, spend: pd.DataFrame, currency: str | None
) -> tuple[OtherCurrency, ...]:
    counts = _per_currency(orders, "attributed_orders")
    revenue = _per_currency(orders, "attributed_revenue_minor")
    spent = _per_currency(spend, "spend_minor")
    others = []
    for other in sorted({*counts, *revenue, *spent} - {currency}):
        figures = (counts.get(other, 0), revenue.get(other, 0), spent.get(other, 0))
        if any(figures):
            others.append(OtherCurrency(other, *figures))
    return tuple(others)


def _active_campaigns(
    orders: pd.DataFrame, recipients: pd.DataFrame, spend: pd.DataFrame, days: DayRange
) -> set[int]:
    """Campaigns that mailed, were delivered or returned, spent or earned an attributed
    order during ``days``."""
    active: set[int] = set()
    for frame, figures in (
        (orders, ["attributed_orders"]),
        (recipients, ["mailed", "delivered", "returned"]),
        (spend, ["spend_minor"]),
    ):
        mine = _within(frame, days)
        if mine.empty:
            continue
        busy = mine.loc[(mine[figures] != 0).any(axis=1) & mine["campaign_id"].notna()]
        active |= {int(campaign) for campaign in busy["campaign_id"].unique()}
    return active


def _lifts(results: pd.DataFrame, campaigns: set[int]) -> tuple[CampaignLift, ...]:
    if results.empty:
        return ()
    lifts = []
    for row in results.sort_values("campaign_id").to_dict("records"):
        if int(row["campaign_id"]) not in campaigns:
            continue
        lifts.append(
            CampaignLift(
                campaign_id=int(row["campaign_id"]),
                mailed_recipients=int(row["mailed_recipients"]),
                holdout_recipients=int(row["holdout_recipients"]),
                mailed_rate=_optional(row["mailed_rate"]),
                holdout_rate=_optional(row["holdout_rate"]),
                lift=_optional(row["lift"]),
                low=_optional(row["lift_low"]),
                high=_optional(row["lift_high"]),
                verdict=Verdict(row["verdict"]),
                reason=None if pd.isna(row["verdict_reason"]) else str(row["verdict_reason"]),
            )
        )
    return tuple(lifts)
