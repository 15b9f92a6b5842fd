"""The rules of daily metrics and campaign results (``domain.metrics``) and the lift interval
(``services.metrics.lift_interval``), checked against independent computations."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from mail_pipeline.db.models import DailyRecipientMetrics
from mail_pipeline.domain.metrics import (
    LATE_ORDER_CUTOFF,
    METRICS_TIMEZONE,
    MIN_GROUP_CONVERSIONS,
    MIN_GROUP_RECIPIENTS,
    STATUS_COLUMNS,
    DayRange,
    RecipientTimes,
    Verdict,
    counted_refund_minor,
    day_of,
    day_start,
    days_to_refresh,
    major_units,
    net_revenue_minor,
    single_currency,
    status_at,
    too_few_to_tell,
    utc_offset_segments,
    verdict,
)
from mail_pipeline.domain.recipients import RecipientStatus as S
from mail_pipeline.partitions import BUSINESS_TIMEZONE
from mail_pipeline.services.metrics import lift_interval

NY = ZoneInfo("America/New_York")
SPRING_FORWARD = date(2026, 3, 8)  # 02:00 EST -> 03:00 EDT, at 07:00 UTC
FALL_BACK = date(2026, 11, 1)  # 02:00 EDT -> 01:00 EST, at 06:00 UTC


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_metrics_zone_is_the_partitions_zone() -> None:
    assert METRICS_TIMEZONE.key == BUSINESS_TIMEZONE


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (utc(2026, 3, 8, 4, 59, 59), date(2026, 3, 7)),  # 23:59:59 EST
        (utc(2026, 3, 8, 5, 0), date(2026, 3, 8)),  # midnight EST starts the day
        (utc(2026, 3, 9, 3, 59, 59), date(2026, 3, 8)),  # 23:59:59 EDT
        (utc(2026, 3, 9, 4, 0), date(2026, 3, 9)),  # midnight EDT
        (utc(2026, 11, 1, 3, 59, 59), date(2026, 10, 31)),  # 23:59:59 EDT
        (utc(2026, 11, 1, 4, 0), date(2026, 11, 1)),
        (utc(2026, 11, 2, 4, 59, 59), date(2026, 11, 1)),  # 23:59:59 EST
        (utc(2026, 11, 2, 5, 0), date(2026, 11, 2)),
        (datetime(2026, 6, 1, 0, 30, tzinfo=NY), date(2026, 6, 1)),
    ],
)
def test_the_day_of_an_event_is_its_new_york_day(moment: datetime, day: date) -> None:
    assert day_of(moment) == day


def test_a_time_without_a_zone_has_no_day() -> None:
    with pytest.raises(ValueError, match="aware"):
        day_of(datetime(2026, 6, 1, 12, 0))


def test_dst_days_last_23_and_25_hours() -> None:
    def hours(day: date) -> float:
        return (day_start(day + timedelta(days=1)) - day_start(day)).total_seconds() / 3600

    assert hours(SPRING_FORWARD) == 23
    assert hours(FALL_BACK) == 25
    assert hours(date(2026, 6, 1)) == 24
    assert day_start(SPRING_FORWARD) == utc(2026, 3, 8, 5, 0)
    assert day_start(FALL_BACK) == utc(2026, 11, 1, 4, 0)


def test_a_day_range_from_a_partition_window() -> None:
    window = DayRange.of_window(datetime(2026, 3, 7, tzinfo=NY), datetime(2026, 3, 10, tzinfo=NY))
    assert window == DayRange(date(2026, 3, 7), date(2026, 3, 9))
    assert len(window) == 3
    assert window.bounds() == [
        utc(2026, 3, 7, 5),
        utc(2026, 3, 8, 5),
        utc(2026, 3, 9, 4),
        utc(2026, 3, 10, 4),
    ]
    assert str(window) == "2026-03-07...2026-03-09"
    with pytest.raises(ValueError, match="midnights"):
        DayRange.of_window(datetime(2026, 3, 7, 1, tzinfo=NY), datetime(2026, 3, 8, tzinfo=NY))
    with pytest.raises(ValueError, match="before"):
        DayRange(date(2026, 3, 8), date(2026, 3, 7))


@settings(max_examples=100, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    hours=st.integers(min_value=1, max_value=24 * 400),
    probes=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), max_size=5),
)
def test_offset_segments_shift_each_time_to_its_new_york_day(
    start: datetime, hours: int, probes: list[float]
) -> None:
    end = start + timedelta(hours=hours)
    segments = utc_offset_segments(start, end)
    assert segments[0].start == start and segments[-1].end == end
    for before, after in itertools.pairwise(segments):
        assert before.end == after.start and before.offset != after.offset
    for fraction in probes:
        moment = min(start + (end - start) * fraction, end - timedelta(microseconds=1))
        (segment,) = [s for s in segments if s.start <= moment < s.end]
        assert (moment.replace(tzinfo=None) + segment.offset).date() == day_of(moment)


@pytest.mark.parametrize(
    ("local", "days"),
    [
        # just before and after midnight: the midnight tick closes yesterday
        (datetime(2026, 6, 1, 23, 45), [date(2026, 6, 1)]),
        (datetime(2026, 6, 2, 0, 0), [date(2026, 6, 1), date(2026, 6, 2)]),
        # just before and after the cutoff
        (datetime(2026, 6, 2, 5, 45), [date(2026, 6, 1), date(2026, 6, 2)]),
        (datetime(2026, 6, 2, 5, 59, 59), [date(2026, 6, 1), date(2026, 6, 2)]),
        (datetime(2026, 6, 2, 6, 0), [date(2026, 6, 2)]),
        # DST days
        (datetime(2026, 3, 8, 3, 0), [date(2026, 3, 7), date(2026, 3, 8)]),
        (datetime(2026, 3, 8, 6, 0), [date(2026, 3, 8)]),
        (datetime(2026, 11, 1, 1, 30, fold=1), [date(2026, 10, 31), date(2026, 11, 1)]),
        (datetime(2026, 11, 1, 6, 0), [date(2026, 11, 1)]),
    ],
)
def test_a_refresh_covers_today_and_yesterday_until_the_cutoff(
    local: datetime, days: list[date]
) -> None:
    assert LATE_ORDER_CUTOFF.hour == 6
    assert days_to_refresh(local.replace(tzinfo=NY)) == days
    assert days_to_refresh(local.replace(tzinfo=NY).astimezone(UTC)) == days


@pytest.mark.parametrize(
    ("total", "refunded", "cancelled", "revenue", "refund"),
    [
        (1000, 0, False, 1000, 0),
        (1000, 250, False, 750, 250),
        (1000, 1000, False, 0, 1000),
        (1000, 1500, False, 0, 1000),  # a refund above the total takes nothing more
        (0, 0, False, 0, 0),  # a zero total is an order without revenue
        (1000, 0, True, 0, 0),  # cancelled: no sale
    ],
)
def test_revenue_is_net_of_refunds_and_never_negative(
    total: int, refunded: int, cancelled: bool, revenue: int, refund: int
) -> None:
    assert net_revenue_minor(total, refunded, cancelled) == revenue
    assert counted_refund_minor(total, refunded, cancelled) == refund
    if not cancelled:
        assert total - counted_refund_minor(total, refunded, cancelled) == revenue


T0 = utc(2026, 5, 1, 12)


def test_status_at_the_end_of_a_day_follows_the_milestones() -> None:
    recipient = RecipientTimes(
        status=S.ERROR,
        created_at=T0,
        proofed_at=T0 + timedelta(days=1),
        sent_at=T0 + timedelta(days=2),
        status_changed_at=T0 + timedelta(days=5),
    )
    assert status_at(recipient, T0) is None
    assert status_at(recipient, T0 + timedelta(hours=1)) == S.PENDING
    assert status_at(recipient, T0 + timedelta(days=1, hours=1)) == S.PROOFED
    assert status_at(recipient, T0 + timedelta(days=3)) == S.SENT
    assert status_at(recipient, T0 + timedelta(days=5)) == S.SENT  # not yet: "just before"
    assert status_at(recipient, T0 + timedelta(days=5, seconds=1)) == S.ERROR


def test_a_milestone_after_the_last_status_change_counts_at_the_change() -> None:
    """A printer's delivery time ahead of our clock: Received from the status change on."""
    recipient = RecipientTimes(
        status=S.RECEIVED,
        created_at=T0,
        sent_at=T0 + timedelta(days=1),
        received_at=T0 + timedelta(days=4),
        status_changed_at=T0 + timedelta(days=3),
    )
    assert status_at(recipient, T0 + timedelta(days=2)) == S.SENT
    assert status_at(recipient, T0 + timedelta(days=3, seconds=1)) == S.RECEIVED


def test_a_recipient_created_in_its_final_status_is_never_pending_at_a_day_end() -> None:
    holdout = RecipientTimes(status=S.HOLDOUT, created_at=T0, status_changed_at=T0)
    assert status_at(holdout, T0 + timedelta(seconds=1)) == S.HOLDOUT
    # status_changed_at written a microsecond before created_at, in the same insert
    early = RecipientTimes(
        status=S.SKIPPED, created_at=T0, status_changed_at=T0 - timedelta(microseconds=1)
    )
    assert status_at(early, T0) == S.SKIPPED


def test_every_status_has_a_metrics_column() -> None:
    columns = set(DailyRecipientMetrics.__table__.c.keys())
    assert set(STATUS_COLUMNS) <= columns
    assert len(STATUS_COLUMNS) == len(S)


@pytest.mark.parametrize(
    ("groups", "reason"),
    [
        ((1000, 50, 0, 0), "no holdout"),
        ((1000, 50, MIN_GROUP_RECIPIENTS - 1, 10), "holdout group has 99 recipients"),
        ((MIN_GROUP_RECIPIENTS - 1, 10, 1000, 50), "mailed group has 99 recipients"),
        ((1000, 50, 1000, MIN_GROUP_CONVERSIONS - 1), "holdout group has 4 conversions"),
        ((1000, 4, 1000, 50), "mailed group has 4 conversions"),
        ((MIN_GROUP_RECIPIENTS, MIN_GROUP_CONVERSIONS) * 2, None),
    ],
)
def test_too_few_to_tell(groups: tuple[int, int, int, int], reason: str | None) -> None:
    found = too_few_to_tell(*groups)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_both_groups_too_small_are_both_named() -> None:
    reason = too_few_to_tell(10, 1, 20, 0)
    assert reason is not None
    assert "mailed group has 10 recipients" in reason
    assert "holdout group has 20 recipients" in reason


@pytest.mark.parametrize(
    ("holdout", "reason", "low", "high", "expected"),
    [
        (0, "no holdout", None, None, Verdict.NO_HOLDOUT),
        (50, "too few", None, None, Verdict.TOO_FEW),
        (500, None, 0.01, 0.05, Verdict.LIFT),
        (500, None, -0.01, 0.05, Verdict.NO_DETECTABLE_LIFT),
        (500, None, -0.05, -0.01, Verdict.NEGATIVE),
    ],
)
def test_verdict(
    holdout: int, reason: str | None, low: float | None, high: float | None, expected: Verdict
) -> None:
    assert verdict(holdout, reason, low, high) == expected


@pytest.mark.parametrize(
    ("counts", "published"),
    [
        # Newcomb (1998), Statistics in Medicine 17:873-890, Table II, method 10
        # (the hybrid score interval without continuity correction).
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((10, 10, 0, 20), (0.6791, 1.0)),
    ],
)
def test_the_lift_interval_matches_newcombs_published_values(
    counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    lift, low, high = lift_interval(*counts)
    assert lift == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
    assert (round(low, 4), round(high, 4)) == published


def _newcomb_from_scipy_wilson(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Newcomb's method 10, built from scipy's Wilson score intervals of each proportion."""
    p1, p2 = x1 / n1, x2 / n2
    w1 = binomtest(x1, n1).proportion_ci(confidence_level=0.95, method="wilson")
    w2 = binomtest(x2, n2).proportion_ci(confidence_level=0.95, method="wilson")
    low = p1 - p2 - math.sqrt((p1 - w1.low) ** 2 + (w2.high - p2) ** 2)
    high = p1 - p2 + math.sqrt((w1.high - p1) ** 2 + (p2 - w2.low) ** 2)
    return low, high


@settings(max_examples=100, deadline=None)
@given(
    n1=st.integers(min_value=1, max_value=100_000),
    n2=st.integers(min_value=1, max_value=100_000),
    f1=st.floats(min_value=0, max_value=1),
    f2=st.floats(min_value=0, max_value=1),
)
def test_the_lift_interval_agrees_with_an_independent_computation(
    n1: int, n2: int, f1: float, f2: float
) -> None:
    x1, x2 = round(f1 * n1), round(f2 * n2)
    lift, low, high = lift_interval(x1, n1, x2, n2)
    expected_low, expected_high = _newcomb_from_scipy_wilson(x1, n1, x2, n2)
    assert low == pytest.approx(expected_low, abs=1e-9)
    assert high == pytest.approx(expected_high, abs=1e-9)
    assert -1 <= low <= lift <= high <= 1


def test_cpa_and_roas_need_one_currency() -> None:
    assert single_currency({"USD": 500}, {"USD": 9000}) == "USD"
    assert single_currency({"USD": 500}, {"GBP": 9000}) is None
    assert single_currency({"USD": 500, "EUR": 0}, {}) == "USD"
    assert single_currency({}, {}) is None


def test_amounts_for_people() -> None:
    assert major_units(1234567, "USD") == "12,345.67"
    assert major_units(1234567, "JPY") == "1,234,567"


def test_the_lift_interval_stays_within_minus_one_and_one() -> None:
    """0/3 against 34/34: statsmodels' lower bound is a rounding error below -1."""
    lift, low, high = lift_interval(0, 3, 34, 34)
    assert lift == -1.0 and low == -1.0 and -1.0 <= high <= 1.0
