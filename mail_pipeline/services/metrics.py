"""Daily metrics and campaign results: pure functions of frames (the rows the gateway
aggregated) into frames (the rows of the metrics tables), and the refreshes that run them.

A refresh is one transaction (SERIALIZABLE on PostgreSQL; re-run up to
:data:`REFRESH_ATTEMPTS` times when PostgreSQL refuses it for a concurrent refresh of the
same days): read the base tables, compute, replace the rows of the days it covers, then read
the stored rows back and reconcile them with the base tables, in the same snapshot. So a
refresh is idempotent (the same base rows give the same metrics rows, whatever was stored
before) and all-or-nothing (a failure leaves the previous rows), and a check that fails means
the stored metrics disagree with the base tables, not that an order arrived meanwhile.

Rules (see ``domain.metrics``): New York days; revenue net of refunds, cancelled orders left
out; recipients by status at the end of a day rebuilt from their timelines; the lift's
interval is Newcomb's hybrid score interval for a difference of independent proportions
(statsmodels ``confint_proportions_2indep(method="newcomb")``, Newcomb 1998, method 10),
given only when neither group is too small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy.exc import DBAPIError

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.metrics import (
    CAMPAIGN_RESULTS,
    HOLDOUT_KIND,
    ORDER_METRICS,
    RECIPIENT_METRICS,
    SPEND,
    MetricsGateway,
    is_retryable,
)
from mail_pipeline.domain.metrics import (
    HOLDOUT_GROUP,
    LIFT_CONFIDENCE,
    MAILED_GROUP,
    MATCH_TYPES,
    MILESTONES,
    STATUS_COLUMNS,
    DayRange,
    cost_per_acquisition,
    rate,
    return_on_ad_spend,
    single_currency,
    status_column,
    too_few_to_tell,
    verdict,
)
from mail_pipeline.domain.recipients import RecipientStatus

#: How many times a refresh is tried when PostgreSQL refuses it for a concurrent one.
REFRESH_ATTEMPTS = 3
#: At most this many mismatches are listed in a check's result.
MAX_LISTED = 10

ORDER_KEYS = ["day", "organization_id", "campaign_id", "currency"]
ORDER_FIGURES = [
    "orders",
    "cancelled_orders",
    "gross_minor",
    "refunded_minor",
    "revenue_minor",
    *(f"{method}_{figure}" for method in MATCH_TYPES for figure in ("orders", "revenue_minor")),
    "holdout_orders",
    "holdout_revenue_minor",
]

RECIPIENT_KEYS = ["day", "organization_id", "campaign_id"]
#: The transitions of a day counted from a milestone's time (errored is the Error status's).
TRANSITIONS = {
    "created_at": "created",
    "proofed_at": "proofed",
    "sent_at": "mailed",
    "received_at": "delivered",
}
RECIPIENT_FIGURES = [
    "created",
    "proofed",
    "mailed",
    "delivered",
    "returned",
    "errored",
    "postcards_mailed",
    "unpriced_postcards",
    "recipients",
    *STATUS_COLUMNS,
]
SPEND_KEYS = ["day", "organization_id", "campaign_id", "currency"]
CAMPAIGN_RESULT_COLUMNS = [
    *("campaign_id", "organization_id"),
    *("mailed_recipients", "mailed_converted", "mailed_rate"),
    *("holdout_recipients", "holdout_converted", "holdout_rate"),
    *("lift", "lift_low", "lift_high", "verdict", "verdict_reason"),
    *("postcards_mailed", "attributed_orders", "currency", "spend_minor"),
    *("attributed_revenue_minor", "cpa_minor", "roas", "spend_by_currency"),
    "revenue_by_currency",
]

#: A campaign id never used, standing for "no campaign" while frames are joined.
NO_CAMPAIGN = 0

T = TypeVar("T")


@dataclass(frozen=True)
class CheckOutcome:
    """A check's verdict: ``summary`` is one sentence; ``mismatches`` the first problems."""

    passed: bool
    summary: str
    mismatches: tuple[str, ...] = ()


# --- frames ---------------------------------------------------------------------------------


def order_metrics_frame(
    totals: pd.DataFrame, credited: pd.DataFrame, holdout: pd.DataFrame
) -> pd.DataFrame:
    """Rows of ``daily_order_metrics`` (``ORDER_KEYS`` + ``ORDER_FIGURES``, ``campaign_id``
    None for orders credited to no campaign) from the gateway's ``order_totals`` (every
    order), ``credited_orders`` and ``holdout_orders`` (per campaign and method).

    An order is credited at most once, so a day's orders credited to no campaign are its
    orders less those credited to one."""
    base = ["orders", "cancelled_orders", "gross_minor", "refunded_minor"]
    groups = ["day", "organization_id", "currency"]

    def with_revenue(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame["revenue_minor"] = frame["gross_minor"] - frame["refunded_minor"]
        return frame

    figures = [*base, "revenue_minor"]
    credited = with_revenue(credited)
    parts = [credited.groupby(ORDER_KEYS)[figures].sum()]
    for method in MATCH_TYPES:
        mine = credited[credited["match_type"] == method]
        parts.append(
            mine.groupby(ORDER_KEYS)[["orders", "revenue_minor"]]
            .sum()
            .rename(
                columns={
                    "orders": f"{method}_orders",
                    "revenue_minor": f"{method}_revenue_minor",
                }
            )
        )
    parts.append(
        with_revenue(holdout)
        .groupby(ORDER_KEYS)[["orders", "revenue_minor"]]
        .sum()
        .rename(columns={"orders": "holdout_orders", "revenue_minor": "holdout_revenue_minor"})
    )
    by_campaign = pd.concat(parts, axis=1).fillna(0).astype("int64")

    everything = with_revenue(totals).groupby(groups)[figures].sum()
    credited_sum = credited.groupby(groups)[figures].sum()
    uncredited = everything.sub(credited_sum, fill_value=0).astype("int64")
    uncredited = uncredited[(uncredited != 0).any(axis=1)].reset_index()
    uncredited["campaign_id"] = NO_CAMPAIGN
    rows = pd.concat([by_campaign.reset_index(), uncredited], ignore_index=True).reindex(
        columns=ORDER_KEYS + ORDER_FIGURES
    )
    rows[ORDER_FIGURES] = rows[ORDER_FIGURES].fillna(0).astype("int64")
    rows = rows.sort_values(ORDER_KEYS, ignore_index=True)
    rows["campaign_id"] = (
        rows["campaign_id"]
        .astype("int64")
        .astype(object)
        .where(rows["campaign_id"] != NO_CAMPAIGN, None)
    )
    return rows


def _nanoseconds(times: pd.Series) -> np.ndarray:
    """UTC times as int64 nanoseconds (NaT stays the smallest int64)."""
    return times.to_numpy(dtype="datetime64[ns]").astype("int64")


def _buckets(times: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """For each time (int64 ns), the index of its day in the range; -1 before it,
    ``len(days)`` after. A time at a day's first instant belongs to that day."""
    return np.searchsorted(bounds, times, side="right") - 1


def _clamped(timelines: pd.DataFrame) -> pd.DataFrame:
    """Milestone times between the recipient's creation and its last status change
    (``domain.metrics.timeline``)."""
    t = timelines.copy()
    last = t["status_changed_at"]
    t["created_at"] = t["created_at"].where(t["created_at"] < last, last)
    first = t["created_at"]
    for name, _ in MILESTONES[1:]:
        t[name] = t[name].where(t[name].isna() | (t[name] < last), last)
        t[name] = t[name].where(t[name].isna() | (t[name] > first), first)
    return t


#: Recipient statuses as small integers (the order of ``RecipientStatus``).
STATUSES = list(RecipientStatus)
STATUS_CODE = {status.value: code for code, status in enumerate(STATUSES)}


def _day_counts(
    campaign: np.ndarray, bucket: np.ndarray, campaigns: int, n: int, weights: Any = None
) -> np.ndarray:
    """A ``[campaigns, n]`` table of how many (or how much of ``weights``) fall on each
    campaign and day; buckets outside the range are left out."""
    inside = (bucket >= 0) & (bucket < n)
    flat = campaign[inside] * n + bucket[inside]
    w = None if weights is None else np.asarray(weights)[inside]
    return np.bincount(flat, weights=w, minlength=campaigns * n).reshape(campaigns, n)


def recipient_metrics_frames(
    timelines: pd.DataFrame,
    status_counts: pd.DataFrame,
    pieces: pd.DataFrame,
    returned: pd.DataFrame,
    days: DayRange,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of ``daily_recipient_metrics`` and of ``daily_spend`` for ``days``.

    ``timelines`` must hold every recipient whose status changed since ``days.start``
    (``MetricsGateway.recipient_timelines``) and ``status_counts`` every recipient now: the
    status counts at the end of each day are walked back from now, undoing the moves of each
    later day (a move is leaving one status for the next in ``domain.metrics.timeline``).
    Arrays, not groupbys: a year of a million recipients is a few million events."""
    n, width = len(days), len(STATUSES)
    bounds = pd.DatetimeIndex(days.bounds()).as_unit("ns").asi8
    t = _clamped(timelines).reset_index(drop=True)

    spend = pd.DataFrame(columns=[*SPEND_KEYS, "postcards", "spend_minor"])
    if not pieces.empty:
        priced = pieces[pieces["currency"].notna() & (pieces["priced"] > 0)]
        spend = (
            priced.groupby(SPEND_KEYS)[["priced", "spend_minor"]]
            .sum()
            .astype("int64")
            .reset_index()
            .rename(columns={"priced": "postcards"})
        )
    sources = [f for f in (t, status_counts, pieces, returned) if not f.empty]
    if not sources:
        return pd.DataFrame(columns=RECIPIENT_KEYS + RECIPIENT_FIGURES), spend

    # Campaigns (and their organizations) as rows 0..C-1 of the tables below.
    owners = pd.concat([frame[["campaign_id", "organization_id"]] for frame in sources])
    organization_of = owners.drop_duplicates("campaign_id").set_index("campaign_id")[
        "organization_id"
    ]
    campaign_ids = organization_of.index
    count = len(campaign_ids)

    def row_of(values: pd.Series) -> np.ndarray:
        return campaign_ids.get_indexer(pd.Index(values))

    # Each recipient's timeline as events (recipient, time, rank, status), in order.
    who_parts, time_parts, rank_parts, code_parts = [], [], [], []
    everyone = np.arange(len(t))
    for rank, (name, status) in enumerate(MILESTONES):
        present = t[name].notna().to_numpy()
        who_parts.append(everyone[present])
        time_parts.append(_nanoseconds(t[name])[present])
        rank_parts.append(np.full(present.sum(), rank))
        code_parts.append(np.full(present.sum(), STATUS_CODE[status.value]))
    status_now = t["status"].map(STATUS_CODE).to_numpy(dtype="int64")
    who_parts.append(everyone)
    time_parts.append(_nanoseconds(t["status_changed_at"]))
    rank_parts.append(np.full(len(t), len(MILESTONES)))
    code_parts.append(status_now)
    who, time, ranks, code = (
        np.concatenate(parts) for parts in (who_parts, time_parts, rank_parts, code_parts)
    )
    order = np.lexsort((ranks, time, who))
    who, time, code = who[order], time[order], code[order]
    same = np.r_[False, who[1:] == who[:-1]]
    left = np.where(same, np.r_[-1, code[:-1]], -1)
    bucket = _buckets(time, bounds)
    campaign = row_of(t["campaign_id"])[who]

    # Net moves per (campaign, status) and day (column n: after the range), and the counts
    # now; the counts at the end of each day are now minus the moves of every later day.
    cells = count * width * (n + 1)
    moved = bucket >= 0
    out = moved & (left >= 0)
    net = np.bincount(
        (campaign[moved] * width + code[moved]) * (n + 1) + bucket[moved], minlength=cells
    ) - np.bincount((campaign[out] * width + left[out]) * (n + 1) + bucket[out], minlength=cells)
    net = net.reshape(count * width, n + 1)
    now = np.bincount(
        row_of(status_counts["campaign_id"]) * width
        + status_counts["status"].map(STATUS_CODE).to_numpy(dtype="int64"),
        weights=status_counts["recipients"].to_numpy(dtype="int64"),
        minlength=count * width,
    ).astype("int64")
    later = net[:, ::-1].cumsum(axis=1)[:, ::-1]
    at_end = (now[:, None] - later[:, 1:]).reshape(count, width, n).transpose(0, 2, 1)

    # What happened on each day.
    figures: dict[str, np.ndarray] = {}
    campaign_of_recipient = row_of(t["campaign_id"])
    for name, figure in TRANSITIONS.items():
        present = t[name].notna().to_numpy()
        figures[figure] = _day_counts(
            campaign_of_recipient[present],
            _buckets(_nanoseconds(t[name])[present], bounds),
            count,
            n,
        )
    errored = status_now == STATUS_CODE[RecipientStatus.ERROR.value]
    figures["errored"] = _day_counts(
        campaign_of_recipient[errored],
        _buckets(_nanoseconds(t["status_changed_at"])[errored], bounds),
        count,
        n,
    )
    position = {day: i for i, day in enumerate(days.days)}
    for frame, figure, weights in (
        (pieces, "postcards_mailed", "postcards"),
        (pieces, "unpriced_postcards", None),
        (returned, "returned", "returned"),
    ):
        if frame.empty:
            figures[figure] = np.zeros((count, n), dtype="int64")
            continue
        values = (
            frame["postcards"] - frame["priced"] if weights is None else frame[weights]
        ).to_numpy(dtype="int64")
        figures[figure] = _day_counts(
            row_of(frame["campaign_id"]),
            frame["day"].map(position).to_numpy(dtype="int64"),
            count,
            n,
            values,
        ).astype("int64")

    table = np.concatenate(
        [np.stack([figures[f] for f in RECIPIENT_FIGURES[:8]], axis=2), at_end], axis=2
    )  # [campaign, day, figure]
    keep_campaign, keep_day = np.nonzero(table.any(axis=2))
    kept = table[keep_campaign, keep_day]
    rows = pd.DataFrame(kept[:, :8], columns=RECIPIENT_FIGURES[:8])
    statuses = pd.DataFrame(kept[:, 8:], columns=[status_column(s) for s in STATUSES])
    rows["recipients"] = statuses.sum(axis=1)
    rows = pd.concat([rows, statuses[list(STATUS_COLUMNS)]], axis=1)
    rows.insert(0, "campaign_id", campaign_ids.to_numpy()[keep_campaign])
    rows.insert(0, "organization_id", organization_of.to_numpy()[keep_campaign])
    rows.insert(0, "day", np.array(days.days, dtype=object)[keep_day])
    rows = rows[RECIPIENT_KEYS + RECIPIENT_FIGURES].sort_values(
        ["day", "campaign_id"], ignore_index=True
    )
    return rows, spend


def lift_interval(
    mailed_converted: int, mailed: int, holdout_converted: int, holdout: int
) -> tuple[float, float, float]:
    """The lift (mailed rate - holdout rate) and its :data:`LIFT_CONFIDENCE` interval:
    Newcomb's hybrid score interval, from statsmodels (kept within [-1, 1])."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    low, high = confint_proportions_2indep(
        mailed_converted,
        mailed,
        holdout_converted,
        holdout,
        method="newcomb",
        compare="diff",
        alpha=1 - LIFT_CONFIDENCE,
    )
    # A difference of proportions lies in [-1, 1]; statsmodels can land 2e-16 outside it.
    return (
        mailed_converted / mailed - holdout_converted / holdout,
        max(float(low), -1.0),
        min(float(high), 1.0),
    )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _by_campaign(frame: pd.DataFrame, column: str) -> dict[int, dict[str, int]]:
    """``{campaign: {currency: amount}}`` of a frame's priced rows (currency not NULL)."""
    out: dict[int, dict[str, int]] = {}
    for row in _records(frame):
        if row["currency"] is not None and not pd.isna(row["currency"]) and row[column]:
            out.setdefault(int(row["campaign_id"]), {})[str(row["currency"])] = int(row[column])
    return out


def _totals(frame: pd.DataFrame, column: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for row in _records(frame):
        campaign = int(row["campaign_id"])
        out[campaign] = out.get(campaign, 0) + int(row[column])
    return out


def campaign_results_frame(
    campaigns: pd.DataFrame,
    status_counts: pd.DataFrame,
    converted: pd.DataFrame,
    revenue: pd.DataFrame,
    spend: pd.DataFrame,
) -> pd.DataFrame:
    """One row per campaign with recipients (the ``campaign_results`` columns, but
    ``computed_at``), from the gateway's campaign frames."""
    groups: dict[int, dict[str, int]] = {}
    for row in _records(status_counts):
        mine = groups.setdefault(int(row["campaign_id"]), {"mailed": 0, "holdout": 0})
        status = RecipientStatus(row["status"])
        if status in MAILED_GROUP:
            mine["mailed"] += int(row["recipients"])
        elif status in HOLDOUT_GROUP:
            mine["holdout"] += int(row["recipients"])
    conversions = {int(r["campaign_id"]): r for r in _records(converted)}
    spend_by, revenue_by = (
        _by_campaign(spend, "spend_minor"),
        _by_campaign(revenue, "revenue_minor"),
    )
    orders, postcards = _totals(revenue, "orders"), _totals(spend, "postcards")
    rows = []
    for campaign in _records(campaigns):
        cid = int(campaign["campaign_id"])
        if cid not in groups:
            continue
        mailed, holdout = groups[cid]["mailed"], groups[cid]["holdout"]
        conv = conversions.get(cid, {})
        mailed_conv = int(conv.get("mailed_converted", 0))
        holdout_conv = int(conv.get("holdout_converted", 0))
        reason = too_few_to_tell(mailed, mailed_conv, holdout, holdout_conv)
        lift = low = high = None
        if reason is None:
            lift, low, high = lift_interval(mailed_conv, mailed, holdout_conv, holdout)
        money_spent, money_made = spend_by.get(cid, {}), revenue_by.get(cid, {})
        currency = single_currency(money_spent, money_made)
        spend_minor = money_spent.get(currency, 0) if currency else None
        revenue_minor = money_made.get(currency, 0) if currency else None
        attributed = orders.get(cid, 0)
        rows.append(
            {
                "campaign_id": cid,
                "organization_id": int(campaign["organization_id"]),
                "mailed_recipients": mailed,
                "mailed_converted": mailed_conv,
                "mailed_rate": rate(mailed_conv, mailed),
                "holdout_recipients": holdout,
                "holdout_converted": holdout_conv,
                "holdout_rate": rate(holdout_conv, holdout),
                "lift": lift,
                "lift_low": low,
                "lift_high": high,
                "verdict": str(verdict(holdout, reason, low, high)),
                "verdict_reason": reason,
                "postcards_mailed": postcards.get(cid, 0),
                "attributed_orders": attributed,
                "currency": currency,
                "spend_minor": spend_minor,
                "attributed_revenue_minor": revenue_minor,
                "cpa_minor": (
                    None if spend_minor is None else cost_per_acquisition(spend_minor, attributed)
                ),
                "roas": (
                    None
                    if spend_minor is None or revenue_minor is None
                    else return_on_ad_spend(revenue_minor, spend_minor)
                ),
                "spend_by_currency": money_spent,
                "revenue_by_currency": money_made,
            }
        )
    return pd.DataFrame(rows, columns=CAMPAIGN_RESULT_COLUMNS)


# --- checks -----------------------------------------------------------------------------------


def _label(keys: Iterable[str], values: Iterable[object]) -> str:
    names = {"organization_id": "organization", "campaign_id": "campaign", "day": "day"}
    return ", ".join(
        f"{names.get(k, k)} {v}" if k in names else str(v)
        for k, v in zip(keys, values, strict=True)
    )


def compare_totals(
    source: pd.DataFrame, metrics: pd.DataFrame, keys: list[str], figures: list[str]
) -> list[str]:
    """Where the metrics' totals differ from the base tables' (a missing group counts as
    zero): one sentence per figure that differs, keys first."""

    def prepared(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reindex(columns=keys + figures).copy()
        for key in keys:
            frame[key] = frame[key].astype(object).where(frame[key].notna(), "-")
        return frame.groupby(keys)[figures].sum()

    merged = prepared(source).merge(
        prepared(metrics),
        how="outer",
        left_index=True,
        right_index=True,
        suffixes=("@source", "@metrics"),
    )
    merged = merged.fillna(0)
    problems = []
    for key, row in merged.iterrows():
        values = key if isinstance(key, tuple) else (key,)
        for figure in figures:
            expected, actual = int(row[f"{figure}@source"]), int(row[f"{figure}@metrics"])
            if expected != actual:
                problems.append(
                    f"{_label(keys, values)}: {figure} {actual} in the metrics, "
                    f"{expected} in the base tables"
                )
    return problems


def _outcome(problems: list[str], ok: str, bad: str) -> CheckOutcome:
    if not problems:
        return CheckOutcome(True, ok)
    return CheckOutcome(False, bad.format(n=len(problems)), tuple(problems[:MAX_LISTED]))


def reconcile_order_metrics(gateway: MetricsGateway, days: DayRange) -> CheckOutcome:
    """The stored order metrics of ``days`` add up to the base tables: per organization and
    currency, orders, cancelled orders and revenue; per organization and campaign, the
    attributed orders and revenue of each method and the holdout-matched ones."""
    problems = compare_totals(
        gateway.source_order_totals(days),
        gateway.order_metric_totals(days),
        ["organization_id", "currency"],
        ["orders", "cancelled_orders", "revenue_minor"],
    )
    problems += compare_totals(
        gateway.source_credit_totals(days),
        gateway.credit_metric_totals(days),
        ["organization_id", "campaign_id", "kind"],
        ["orders", "revenue_minor"],
    )
    return _outcome(
        problems,
        f"the order metrics of {days} add up to the orders, attributions and holdout matches",
        "{n} totals of the order metrics differ from the base tables",
    )


def order_revenue_not_negative(gateway: MetricsGateway, days: DayRange) -> CheckOutcome:
    """No stored order-metrics row of ``days`` has a negative revenue figure."""
    negative = gateway.negative_revenue_rows(days)
    problems = [
        f"{_label(ORDER_KEYS, row)}: a revenue figure is negative"
        for row in negative[ORDER_KEYS].itertuples(index=False)
    ]
    return _outcome(
        problems,
        f"no revenue figure of {days} is negative",
        "{n} order-metrics rows have a negative revenue figure",
    )


def reconcile_recipient_metrics(gateway: MetricsGateway, days: DayRange) -> CheckOutcome:
    """The stored recipient metrics of ``days`` add up to the base tables, per organization:
    recipients created and mailed in the range, recipients at the end of its last day (the
    rebuilt status counts against a plain count), postcards accepted, and spend per
    currency."""
    source_pieces = gateway.source_piece_totals(days)
    source = gateway.source_recipient_totals(days).merge(
        source_pieces.groupby("organization_id", as_index=False)["postcards"].sum(),
        on="organization_id",
        how="outer",
    )
    metrics = gateway.recipient_metric_totals(days)
    problems = compare_totals(
        source,
        metrics,
        ["organization_id"],
        ["created", "mailed", "recipients", "postcards"],
    )
    problems += compare_totals(
        source_pieces[source_pieces["currency"].notna()],
        gateway.spend_metric_totals(days),
        ["organization_id", "currency"],
        ["spend_minor"],
    )
    return _outcome(
        problems,
        f"the recipient metrics of {days} add up to the recipients and mailpieces",
        "{n} totals of the recipient metrics differ from the base tables",
    )


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def check_campaign_rates(results: pd.DataFrame) -> CheckOutcome:
    """Every stored campaign result's rates are proportions: conversion rates in [0, 1],
    the lift in [-1, 1], its interval in [-1, 1] around it."""
    bounds = {
        "mailed_rate": (0.0, 1.0),
        "holdout_rate": (0.0, 1.0),
        "lift": (-1.0, 1.0),
        "lift_low": (-1.0, 1.0),
        "lift_high": (-1.0, 1.0),
    }
    problems = []
    for row in _records(results):
        campaign = row["campaign_id"]
        for name, (low, high) in bounds.items():
            value = _number(row[name])
            if value is not None and not low <= value <= high:
                problems.append(
                    f"campaign {campaign}: {name} {value:.4f} is outside [{low:g}, {high:g}]"
                )
        interval = [_number(row[name]) for name in ("lift_low", "lift", "lift_high")]
        if None not in interval and not interval[0] <= interval[1] <= interval[2]:  # type: ignore[operator]
            problems.append(f"campaign {campaign}: the lift is outside its interval")
    return _outcome(
        problems,
        f"the rates of {len(results)} campaign results are proportions",
        "{n} campaign-result rates are out of bounds",
    )


# --- refreshes --------------------------------------------------------------------------------


def _serializable(session: SessionFactory, work: Callable[[MetricsGateway], T]) -> T:
    """``work`` in one transaction, SERIALIZABLE on PostgreSQL, run again when PostgreSQL
    refuses it for a concurrent transaction (up to :data:`REFRESH_ATTEMPTS` times)."""
    for attempt in range(1, REFRESH_ATTEMPTS + 1):
        try:
            with session() as s:
                gateway = MetricsGateway(s)
                gateway.serializable()
                return work(gateway)
        except DBAPIError as error:
            if attempt == REFRESH_ATTEMPTS or not is_retryable(error):
                raise
    raise AssertionError("unreachable")


def _by(frame: pd.DataFrame, key: str, value: str) -> dict[str, int]:
    if frame.empty:
        return {}
    totals = frame.groupby(key)[value].sum()
    return {str(k): int(v) for k, v in totals.items() if v}


@dataclass(frozen=True)
class OrderMetricsRefresh:
    days: DayRange
    rows: int
    orders: int
    cancelled_orders: int
    revenue_by_currency: dict[str, int]
    attributed_orders: dict[str, int]
    holdout_orders: int
    reconciliation: CheckOutcome
    revenue_not_negative: CheckOutcome


def refresh_order_metrics(
    session: SessionFactory, days: DayRange, *, now: datetime | None = None
) -> OrderMetricsRefresh:
    """Recompute the order metrics of ``days`` and replace their rows, then check them."""
    computed_at = now or datetime.now(UTC)

    def work(gateway: MetricsGateway) -> OrderMetricsRefresh:
        credits = gateway.credited_orders(days)
        holdout = credits["match_type"] == HOLDOUT_KIND
        rows = order_metrics_frame(
            gateway.order_totals(days), credits.loc[~holdout], credits.loc[holdout]
        )
        stored = gateway.replace_days(ORDER_METRICS, days, rows.assign(computed_at=computed_at))
        return OrderMetricsRefresh(
            days=days,
            rows=stored,
            orders=int(rows["orders"].sum()),
            cancelled_orders=int(rows["cancelled_orders"].sum()),
            revenue_by_currency=_by(rows, "currency", "revenue_minor"),
            attributed_orders={
                method: int(rows[f"{method}_orders"].sum()) for method in MATCH_TYPES
            },
            holdout_orders=int(rows["holdout_orders"].sum()),
            reconciliation=reconcile_order_metrics(gateway, days),
            revenue_not_negative=order_revenue_not_negative(gateway, days),
        )

    return _serializable(session, work)


@dataclass(frozen=True)
class RecipientMetricsRefresh:
    days: DayRange
    rows: int
    spend_rows: int
    transitions: dict[str, int]
    spend_by_currency: dict[str, int]
    reconciliation: CheckOutcome


def refresh_recipient_metrics(
    session: SessionFactory, days: DayRange, *, now: datetime | None = None
) -> RecipientMetricsRefresh:
    """Recompute the recipient metrics and spend of ``days`` and replace their rows, then
    check them."""
    computed_at = now or datetime.now(UTC)

    def work(gateway: MetricsGateway) -> RecipientMetricsRefresh:
        rows, spend = recipient_metrics_frames(
            gateway.recipient_timelines(days.start),
            gateway.status_counts(),
            gateway.piece_groups(days),
            gateway.returned_groups(days),
            days,
        )
        stored = gateway.replace_days(RECIPIENT_METRICS, days, rows.assign(computed_at=computed_at))
        stored_spend = gateway.replace_days(SPEND, days, spend.assign(computed_at=computed_at))
        figures = ["created", "proofed", "mailed", "delivered", "returned", "errored"]
        return RecipientMetricsRefresh(
            days=days,
            rows=stored,
            spend_rows=stored_spend,
            transitions={f: int(rows[f].sum()) for f in [*figures, "postcards_mailed"]},
            spend_by_currency=_by(spend, "currency", "spend_minor"),
            reconciliation=reconcile_recipient_metrics(gateway, days),
        )

    return _serializable(session, work)


@dataclass(frozen=True)
class CampaignResultsRefresh:
    #: The stored ``campaign_results`` rows.
    results: pd.DataFrame = field(repr=False)
    rates: CheckOutcome = CheckOutcome(True, "")

    @property
    def campaigns(self) -> int:
        return len(self.results)

    def rows(self) -> list[dict[str, Any]]:
        """The results as dicts, by campaign id."""
        return sorted(_records(self.results), key=lambda row: int(row["campaign_id"]))

    def verdicts(self) -> dict[str, int]:
        """How many campaigns got each verdict."""
        counts: dict[str, int] = {}
        for row in self.rows():
            counts[str(row["verdict"])] = counts.get(str(row["verdict"]), 0) + 1
        return counts


def refresh_campaign_results(
    session: SessionFactory, *, now: datetime | None = None
) -> CampaignResultsRefresh:
    """Recompute every campaign's results from the base tables and replace the table."""
    computed_at = now or datetime.now(UTC)

    def work(gateway: MetricsGateway) -> CampaignResultsRefresh:
        results = campaign_results_frame(
            gateway.campaigns(),
            gateway.status_counts(),
            gateway.converted_recipients(),
            gateway.attributed_revenue(),
            gateway.campaign_spend(),
        )
        gateway.replace_all(CAMPAIGN_RESULTS, results.assign(computed_at=computed_at))
        stored = gateway.all_rows(CAMPAIGN_RESULTS)
        return CampaignResultsRefresh(results=stored, rates=check_campaign_rates(stored))

    return _serializable(session, work)
