"""The metrics frames (``services.metrics``): small literal frames in, rows out; the
recipients' end-of-day statuses against the rule applied one recipient at a time."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail_pipeline.domain.metrics import (
    DayRange,
    RecipientTimes,
    day_of,
    day_start,
    status_at,
    status_column,
)
from mail_pipeline.domain.recipients import RecipientStatus as S
from mail_pipeline.services.metrics import (
    campaign_results_frame,
    check_campaign_rates,
    compare_totals,
    order_metrics_frame,
    recipient_metrics_frames,
)

D1 = date(2026, 3, 7)


FIGURES = ["orders", "cancelled_orders", "gross_minor", "refunded_minor"]
TOTAL_COLUMNS = ["day", "organization_id", "currency", *FIGURES]
CREDIT_COLUMNS = ["day", "organization_id", "currency", "campaign_id", "match_type", *FIGURES]


def test_orders_become_one_row_per_day_organization_campaign_and_currency() -> None:
    totals = pd.DataFrame(
        # day, org, currency, orders, cancelled, gross, refunded (of the orders that count)
        [(D1, 1, "USD", 8, 1, 7100, 700), (D1, 1, "CAD", 1, 0, 900, 0)],
        columns=TOTAL_COLUMNS,
    )
    credited = pd.DataFrame(
        [
            (D1, 1, "USD", 10, "offer_code", 2, 0, 2000, 0),
            (D1, 1, "USD", 10, "email", 1, 0, 700, 200),
            (D1, 1, "CAD", 10, "address", 1, 0, 900, 0),
        ],
        columns=CREDIT_COLUMNS,
    )
    holdout = pd.DataFrame([(D1, 1, "USD", 11, "holdout", 2, 0, 1100, 200)], columns=CREDIT_COLUMNS)
    frame = order_metrics_frame(totals, credited, holdout)
    assert frame["campaign_id"].tolist() == [None, 10, 10, 11]  # None: credited to none
    rows = frame.fillna({"campaign_id": 0}).set_index(["campaign_id", "currency"])
    assert sorted(rows.index) == [(0, "USD"), (10, "CAD"), (10, "USD"), (11, "USD")]
    none = rows.loc[(0, "USD")]
    assert (none["orders"], none["cancelled_orders"], none["revenue_minor"]) == (5, 1, 3900)
    assert none["offer_code_orders"] == 0 and none["holdout_orders"] == 0
    usd = rows.loc[(10, "USD")]
    assert (usd["orders"], usd["revenue_minor"]) == (3, 2500)
    assert (usd["offer_code_orders"], usd["offer_code_revenue_minor"]) == (2, 2000)
    assert (usd["email_orders"], usd["email_revenue_minor"]) == (1, 500)
    assert usd["address_orders"] == 0 and usd["holdout_orders"] == 0
    assert rows.loc[(10, "CAD"), "address_revenue_minor"] == 900
    matched = rows.loc[(11, "USD")]
    assert (matched["orders"], matched["holdout_orders"], matched["holdout_revenue_minor"]) == (
        0,
        2,
        900,
    )


def test_no_orders_no_rows() -> None:
    empty = pd.DataFrame(columns=CREDIT_COLUMNS)
    assert order_metrics_frame(pd.DataFrame(columns=TOTAL_COLUMNS), empty, empty).empty


# --- recipients ------------------------------------------------------------------------------

DAYS = DayRange(date(2026, 3, 6), date(2026, 3, 9))  # spring forward on the 8th
ORIGIN = day_start(DAYS.first) - timedelta(days=2)
SPAN_HOURS = 24 * 8  # from two days before the range to two days after it
MILESTONE_STATUS = [S.PENDING, S.PROOFED, S.SENT, S.RECEIVED]


@st.composite
def recipients(draw: st.DrawFn) -> RecipientTimes:
    def moment() -> datetime:
        return ORIGIN + timedelta(minutes=draw(st.integers(0, SPAN_HOURS * 60)))

    def maybe() -> datetime | None:
        return moment() if draw(st.booleans()) else None

    created = moment()
    proofed, sent, received = maybe(), maybe(), maybe()
    times = [t for t in (created, proofed, sent, received) if t is not None]
    changed = max(times) + timedelta(minutes=draw(st.integers(-60, 600)))
    return RecipientTimes(
        status=draw(st.sampled_from(list(S))),
        created_at=created,
        status_changed_at=changed,
        proofed_at=proofed,
        sent_at=sent,
        received_at=received,
    )


def _frames(people: list[tuple[int, RecipientTimes]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the gateway would read: the timelines of recipients changed since the range
    began, and every recipient's status now."""
    rows = [
        {
            "organization_id": 1,
            "campaign_id": campaign,
            "status": r.status.value,
            "created_at": r.created_at,
            "status_changed_at": r.status_changed_at,
            "proofed_at": r.proofed_at,
            "sent_at": r.sent_at,
            "received_at": r.received_at,
        }
        for campaign, r in people
        if r.status_changed_at >= DAYS.start
    ]
    columns = ["organization_id", "campaign_id", "status", "created_at", "status_changed_at"]
    columns += ["proofed_at", "sent_at", "received_at"]
    timelines = pd.DataFrame(rows, columns=columns)
    for name in columns[3:]:
        timelines[name] = pd.to_datetime(timelines[name], utc=True)
    counts = Counter((campaign, r.status.value) for campaign, r in people)
    status_counts = pd.DataFrame(
        [(1, c, s, n) for (c, s), n in counts.items()],
        columns=["organization_id", "campaign_id", "status", "recipients"],
    )
    return timelines, status_counts


def _clamp(moment: datetime, r: RecipientTimes) -> datetime:
    first = min(r.created_at, r.status_changed_at)
    return max(min(moment, r.status_changed_at), first)


NO_PIECES = pd.DataFrame(
    columns=[
        *("day", "organization_id", "campaign_id", "currency", "postcards", "priced"),
        "spend_minor",
    ]
)
NO_RETURNS = pd.DataFrame(columns=["day", "organization_id", "campaign_id", "returned"])


@settings(max_examples=60, deadline=None)
@given(people=st.lists(st.tuples(st.sampled_from([1, 2]), recipients()), max_size=25))
def test_end_of_day_statuses_agree_with_the_rule_recipient_by_recipient(
    people: list[tuple[int, RecipientTimes]],
) -> None:
    timelines, status_counts = _frames(people)
    rows, _ = recipient_metrics_frames(timelines, status_counts, NO_PIECES, NO_RETURNS, DAYS)
    stored = rows.set_index(["day", "campaign_id"])
    for day, end in zip(DAYS.days, DAYS.bounds()[1:], strict=True):
        for campaign in (1, 2):
            expected = Counter(
                status_at(r, end) for c, r in people if c == campaign and status_at(r, end)
            )
            created = sum(
                1
                for c, r in people
                if c == campaign and day_of(min(r.created_at, r.status_changed_at)) == day
            )
            mailed = sum(
                1
                for c, r in people
                if c == campaign and r.sent_at is not None and day_of(_clamp(r.sent_at, r)) == day
            )
            if (day, campaign) not in stored.index:
                assert not expected and not created and not mailed
                continue
            row = stored.loc[(day, campaign)]
            for status in S:
                assert row[status_column(status)] == expected.get(status, 0), (day, status)
            assert row["recipients"] == sum(expected.values())
            assert (row["created"], row["mailed"]) == (created, mailed)


def test_the_days_of_the_transitions_and_the_pieces() -> None:
    t = datetime(2026, 3, 8, 4, 59, tzinfo=UTC)  # 23:59 on the 7th, New York
    people = [
        (1, RecipientTimes(S.ERROR, created_at=t, status_changed_at=t + timedelta(minutes=2))),
        (
            1,
            RecipientTimes(
                S.RECEIVED,
                created_at=t - timedelta(days=1),
                proofed_at=t,
                sent_at=t + timedelta(minutes=1),
                received_at=t + timedelta(days=1),
                status_changed_at=t + timedelta(days=1, minutes=5),
            ),
        ),
    ]
    timelines, status_counts = _frames(people)
    pieces = pd.DataFrame(
        [
            (date(2026, 3, 8), 1, 1, "USD", 2, 2, 130),
            (date(2026, 3, 8), 1, 1, None, 1, 0, 0),
            (date(2026, 3, 9), 1, 1, "GBP", 1, 1, 50),
        ],
        columns=NO_PIECES.columns,
    )
    returned = pd.DataFrame([(date(2026, 3, 9), 1, 1, 1)], columns=NO_RETURNS.columns)
    rows, spend = recipient_metrics_frames(timelines, status_counts, pieces, returned, DAYS)
    by_day = rows.set_index("day")
    assert by_day.loc[date(2026, 3, 7), ["created", "proofed"]].tolist() == [1, 1]
    assert by_day.loc[date(2026, 3, 8), ["mailed", "errored"]].tolist() == [1, 1]
    assert by_day.loc[date(2026, 3, 8), ["postcards_mailed", "unpriced_postcards"]].tolist() == [
        3,
        1,
    ]
    assert by_day.loc[date(2026, 3, 9), ["delivered", "returned"]].tolist() == [1, 1]
    assert by_day.loc[date(2026, 3, 9), ["status_error", "status_received"]].tolist() == [1, 1]
    assert sorted(map(tuple, spend[["day", "currency", "postcards", "spend_minor"]].values)) == [
        (date(2026, 3, 8), "USD", 2, 130),
        (date(2026, 3, 9), "GBP", 1, 50),
    ]


# --- campaign results and checks ------------------------------------------------------------


def _results(mailed: int, mailed_conv: int, holdout: int, holdout_conv: int) -> pd.DataFrame:
    return campaign_results_frame(
        pd.DataFrame([(5, 1, "Spring")], columns=["campaign_id", "organization_id", "name"]),
        pd.DataFrame(
            [(1, 5, "Sent", mailed - 10), (1, 5, "Received", 10), (1, 5, "Holdout", holdout)],
            columns=["organization_id", "campaign_id", "status", "recipients"],
        ),
        pd.DataFrame(
            [(5, mailed_conv, holdout_conv)],
            columns=["campaign_id", "mailed_converted", "holdout_converted"],
        ),
        pd.DataFrame(
            [(5, "USD", 40, 200_000)],
            columns=["campaign_id", "currency", "orders", "revenue_minor"],
        ),
        pd.DataFrame(
            [(5, "USD", mailed, 65 * mailed), (5, None, 3, 0)],
            columns=["campaign_id", "currency", "postcards", "spend_minor"],
        ),
    )


def test_campaign_results_give_the_lift_cpa_and_roas() -> None:
    row = _results(2000, 100, 500, 10).iloc[0]
    assert row["mailed_rate"] == pytest.approx(0.05)
    assert row["holdout_rate"] == pytest.approx(0.02)
    assert row["lift"] == pytest.approx(0.03)
    assert row["lift_low"] < 0.03 < row["lift_high"]
    assert row["verdict"] == "lift"
    assert row["spend_minor"] == 130_000 and row["currency"] == "USD"
    assert row["cpa_minor"] == pytest.approx(130_000 / 40)
    assert row["roas"] == pytest.approx(200_000 / 130_000)
    assert row["postcards_mailed"] == 2003


def test_too_few_to_tell_gives_no_interval() -> None:
    row = _results(2000, 100, 50, 2).iloc[0]
    assert row["verdict"] == "too_few_to_tell"
    assert "holdout group has 50 recipients" in row["verdict_reason"]
    assert row["lift"] is None and row["lift_low"] is None and row["lift_high"] is None
    assert row["holdout_rate"] == pytest.approx(0.04)


def test_rates_check_passes_on_results_and_fails_on_impossible_rates() -> None:
    good = _results(2000, 100, 500, 10)
    assert check_campaign_rates(good).passed
    bad = good.copy()
    bad.loc[0, "mailed_rate"] = 1.2
    bad.loc[0, "lift_low"] = 0.04  # above the lift
    outcome = check_campaign_rates(bad)
    assert not outcome.passed
    assert any("mailed_rate 1.2000 is outside [0, 1]" in m for m in outcome.mismatches)
    assert any("outside its interval" in m for m in outcome.mismatches)


def test_compare_totals_names_what_differs() -> None:
    source = pd.DataFrame(
        [(1, "USD", 10, 5000), (2, "USD", 1, 100)],
        columns=["organization_id", "currency", "orders", "revenue_minor"],
    )
    metrics = pd.DataFrame(
        [(1, "USD", 10, 4900)], columns=["organization_id", "currency", "orders", "revenue_minor"]
    )
    problems = compare_totals(
        source, metrics, ["organization_id", "currency"], ["orders", "revenue_minor"]
    )
    assert problems == [
        "organization 1, USD: revenue_minor 4900 in the metrics, 5000 in the base tables",
        "organization 2, USD: orders 0 in the metrics, 1 in the base tables",
        "organization 2, USD: revenue_minor 0 in the metrics, 100 in the base tables",
    ]
    assert compare_totals(source, source, ["organization_id", "currency"], ["orders"]) == []
