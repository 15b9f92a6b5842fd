"""The brand reports' rules (``domain.reports``): periods, the biweekly and BFCM calendars,
the main currency, and the figures checked against sums done one row at a time."""

from __future__ import annotations

import itertools
import math
import random
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest

from mail_pipeline.domain.campaigns import CsmCadence
from mail_pipeline.domain.metrics import MATCH_TYPES, Verdict
from mail_pipeline.domain.reports import (
    BIWEEKLY_EPOCH,
    COMPARED_FIGURES,
    Change,
    ReportKind,
    ReportPeriod,
    bfcm_day,
    bfcm_days,
    bfcm_report_due,
    black_friday,
    cadence_period,
    input_days,
    latest_friday_ended,
    main_currency,
    previous,
    report_due,
    report_figures,
    week_ending,
    weekly_partition_days,
)

FRIDAY = date(2026, 11, 27)
ORG = 7


# --- periods ----------------------------------------------------------------------------------


def test_a_week_is_saturday_to_friday_and_named_by_its_friday() -> None:
    week = week_ending(FRIDAY)
    assert (week.first, week.last, week.kind) == (date(2026, 11, 21), FRIDAY, ReportKind.WEEKLY)
    assert week.first.strftime("%A") == "Saturday"
    assert len(week.days) == 7 and week.chart_days == week.days
    with pytest.raises(ValueError, match="Fridays"):
        week_ending(date(2026, 11, 26))
    with pytest.raises(ValueError, match="ends on a Friday"):
        ReportPeriod(date(2026, 11, 20), date(2026, 11, 26), ReportKind.WEEKLY)


@pytest.mark.parametrize(
    ("today", "friday"),
    [
        (date(2026, 11, 28), date(2026, 11, 27)),  # Saturday: Friday has just ended
        (date(2026, 12, 3), date(2026, 11, 27)),  # Thursday
        (date(2026, 12, 4), date(2026, 11, 27)),  # Friday itself is not over yet
    ],
)
def test_the_latest_week_over_ends_on_the_last_friday_before_today(
    today: date, friday: date
) -> None:
    assert latest_friday_ended(today) == friday


def test_the_previous_period_is_as_long_and_just_before() -> None:
    week = week_ending(FRIDAY)
    assert previous(week) == week_ending(FRIDAY - timedelta(days=7))
    two = cadence_period(BIWEEKLY_EPOCH + timedelta(weeks=100), CsmCadence.BIWEEKLY)
    assert two is not None
    before = previous(two)
    assert (before.last + timedelta(days=1), len(before.days)) == (two.first, 14)
    day = bfcm_day(date(2026, 11, 30))
    assert previous(day) == bfcm_day(date(2026, 11, 29))


def test_biweekly_reports_fall_on_alternate_fridays_across_years_of_53_iso_weeks() -> None:
    # 2026 ends on ISO week 53 and 2027 starts on week 1: ISO parity would repeat itself.
    assert date(2026, 12, 31).isocalendar().week == 53
    fridays = [BIWEEKLY_EPOCH + timedelta(weeks=n) for n in range(200)]
    due = [f for f in fridays if report_due(f, CsmCadence.BIWEEKLY)]
    assert due[0] == BIWEEKLY_EPOCH
    assert all(b - a == timedelta(weeks=2) for a, b in itertools.pairwise(due))
    assert all(report_due(f, CsmCadence.WEEKLY) for f in fridays)
    # The periods of the due Fridays tile the calendar: no day twice, none skipped.
    periods = [cadence_period(f, CsmCadence.BIWEEKLY) for f in due]
    assert all(p is not None and p.kind == ReportKind.BIWEEKLY for p in periods)
    days = [day for p in periods if p is not None for day in p.days]
    assert days == [days[0] + timedelta(days=i) for i in range(len(days))]
    assert cadence_period(BIWEEKLY_EPOCH + timedelta(weeks=1), CsmCadence.BIWEEKLY) is None


def test_a_report_reads_its_previous_period_and_its_own_days() -> None:
    assert weekly_partition_days(FRIDAY) == [
        date(2026, 11, 14) + timedelta(days=i) for i in range(14)
    ]
    due = BIWEEKLY_EPOCH + timedelta(weeks=100)
    assert len(weekly_partition_days(due, CsmCadence.BIWEEKLY)) == 28
    assert weekly_partition_days(due + timedelta(weeks=1), CsmCadence.BIWEEKLY) == []
    # A BFCM day's charts show the week ending on it.
    day = bfcm_day(date(2026, 11, 30))
    assert day.chart_days[0] == date(2026, 11, 24) and day.chart_days[-1] == day.last
    assert input_days(day).days == day.chart_days


def test_bfcm_runs_from_the_season_start_through_december_10() -> None:
    start = date(2026, 11, 23)
    days = bfcm_days(2026, start)
    assert (days[0], days[-1], len(days)) == (start, date(2026, 12, 10), 18)
    assert bfcm_report_due(date(2026, 12, 10), start)
    assert not bfcm_report_due(date(2026, 12, 11), start)
    assert bfcm_report_due(start, start)
    assert not bfcm_report_due(start - timedelta(days=1), start)
    assert not bfcm_report_due(date(2027, 11, 30), start)  # next year has its own season
    assert all(bfcm_report_due(day, start) for day in days)
    with pytest.raises(ValueError):
        bfcm_days(2027, start)
    assert (black_friday(2025), black_friday(2026)) == (date(2025, 11, 28), date(2026, 11, 27))


# --- the main currency ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "postcards", "orders", "expected"),
    [
        ({"USD": 500}, {}, {}, "USD"),
        ({"USD": 500, "GBP": 0}, {"GBP": 90}, {}, "USD"),  # no GBP money: one currency
        ({"USD": 500, "GBP": 9}, {"USD": 10, "GBP": 90}, {}, "GBP"),  # most postcards
        ({"USD": 500, "GBP": 9}, {"USD": 10, "GBP": 10}, {"USD": 3, "GBP": 1}, "USD"),
        ({"USD": 5, "GBP": 9}, {}, {}, "GBP"),  # a tie all along: alphabetical
        ({}, {}, {"CAD": 0}, "CAD"),  # no money: a currency the rows name
        ({}, {}, {}, None),
    ],
)
def test_the_main_currency(
    money: dict[str, int], postcards: dict[str, int], orders: dict[str, int], expected: str | None
) -> None:
    assert main_currency(money, postcards, orders) == expected


# --- figures against sums done by hand --------------------------------------------------------


def random_rows(
    seed: int, currencies: list[str], first: date, last: date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the three daily tables for one organization, ``first``..``last``."""
    rng = random.Random(seed)
    orders, recipients, spend = [], [], []
    day = first
    while day <= last:
        for campaign in (11, 12, None):
            if campaign is not None and rng.random() < 0.8:
                recipients.append(
                    {
                        "day": day,
                        "organization_id": ORG,
                        "campaign_id": campaign,
                        "mailed": rng.randint(0, 300),
                        "delivered": rng.randint(0, 250),
                        "returned": rng.randint(0, 4),
                        "recipients": rng.randint(300, 900),
                    }
                )
            for currency in currencies:
                if rng.random() < 0.3:
                    continue
                row: dict[str, Any] = {
                    "day": day,
                    "organization_id": ORG,
                    "campaign_id": campaign,
                    "currency": currency,
                    "orders": rng.randint(0, 40),
                    "revenue_minor": rng.randint(0, 10**6),
                }
                for method in MATCH_TYPES:
                    attributed = campaign is not None and rng.random() < 0.7
                    row[f"{method}_orders"] = rng.randint(1, 5) if attributed else 0
                    row[f"{method}_revenue_minor"] = rng.randint(0, 90_000) if attributed else 0
                orders.append(row)
                if campaign is not None and rng.random() < 0.6:
                    spend.append(
                        {
                            "day": day,
                            "organization_id": ORG,
                            "campaign_id": campaign,
                            "currency": currency,
                            "postcards": rng.randint(1, 300),
                            "spend_minor": rng.randint(100, 60_000),
                        }
                    )
        day += timedelta(days=1)
    return orders, recipients, spend


def expected_currency(
    orders: list[dict[str, Any]], spend: list[dict[str, Any]], first: date, last: date
) -> str | None:
    money: dict[str, int] = {}
    postcards: dict[str, int] = {}
    counts: dict[str, int] = {}
    for row in orders:
        if first <= row["day"] <= last:
            for method in MATCH_TYPES:
                money[row["currency"]] = (
                    money.get(row["currency"], 0) + row[f"{method}_revenue_minor"]
                )
            counts[row["currency"]] = counts.get(row["currency"], 0) + row["orders"]
    for row in spend:
        if first <= row["day"] <= last:
            money[row["currency"]] = money.get(row["currency"], 0) + row["spend_minor"]
            postcards[row["currency"]] = postcards.get(row["currency"], 0) + row["postcards"]
    with_money = sorted(currency for currency, amount in money.items() if amount)
    if len(with_money) == 1:
        return with_money[0]
    best: str | None = None
    for currency in with_money:
        key = (postcards.get(currency, 0), counts.get(currency, 0))
        if best is None or key > (postcards.get(best, 0), counts.get(best, 0)):
            best = currency
    return best


def expected_totals(
    orders: list[dict[str, Any]],
    recipients: list[dict[str, Any]],
    spend: list[dict[str, Any]],
    period: ReportPeriod,
    currency: str | None,
) -> dict[str, float | None]:
    out = dict.fromkeys(COMPARED_FIGURES[:-2], 0)
    for row in recipients:
        if period.first <= row["day"] <= period.last:
            out["sent"] += row["mailed"]
            out["delivered"] += row["delivered"]
            out["returned"] += row["returned"]
    for row in orders:
        if period.first <= row["day"] <= period.last and row["currency"] == currency:
            out["offer_code_orders"] += row["offer_code_orders"]
            out["offer_code_revenue_minor"] += row["offer_code_revenue_minor"]
            for method in ("email", "address"):
                out["matched_orders"] += row[f"{method}_orders"]
                out["matched_revenue_minor"] += row[f"{method}_revenue_minor"]
    for row in spend:
        if period.first <= row["day"] <= period.last and row["currency"] == currency:
            out["spend_minor"] += row["spend_minor"]
    out["attributed_orders"] = out["offer_code_orders"] + out["matched_orders"]
    out["attributed_revenue_minor"] = out["offer_code_revenue_minor"] + out["matched_revenue_minor"]
    result: dict[str, float | None] = dict(out)
    orders_, spent = out["attributed_orders"], out["spend_minor"]
    result["cpa_minor"] = spent / orders_ if orders_ else None
    result["roas"] = out["attributed_revenue_minor"] / spent if spent else None
    return result


PERIODS = [
    week_ending(FRIDAY),
    cadence_period(BIWEEKLY_EPOCH + timedelta(weeks=98), CsmCadence.BIWEEKLY),
    bfcm_day(date(2026, 11, 30)),
]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("period", PERIODS, ids=lambda p: str(p.kind))
@pytest.mark.parametrize("currencies", [["USD"], ["USD", "GBP", "JPY"]], ids=["one", "several"])
def test_figures_match_sums_done_row_by_row(
    seed: int, period: ReportPeriod, currencies: list[str]
) -> None:
    before = previous(period)
    days = input_days(period, before)
    # Rows from a few days before to a few days after: the figures must leave them out.
    orders, recipients, spend = random_rows(
        seed, currencies, days.first - timedelta(days=3), days.last + timedelta(days=3)
    )
    results = pd.DataFrame(
        [
            {
                "campaign_id": 11,
                "organization_id": ORG,
                "mailed_recipients": 4000,
                "holdout_recipients": 400,
                "mailed_rate": 0.03,
                "holdout_rate": 0.02,
                "lift": 0.01,
                "lift_low": 0.001,
                "lift_high": 0.019,
                "verdict": "lift",
                "verdict_reason": None,
            }
        ]
    )
    figures = report_figures(
        pd.DataFrame(orders), pd.DataFrame(recipients), pd.DataFrame(spend), results, period, before
    )

    currency = expected_currency(orders, spend, days.first, days.last)
    assert figures.currency == currency
    assert figures.organization_id == ORG
    for p, totals in ((period, figures.current), (before, figures.previous)):
        expected = expected_totals(orders, recipients, spend, p, currency)
        for figure, value in expected.items():
            actual = getattr(totals, figure)
            if value is None:
                assert actual is None, figure
            else:
                assert actual is not None and math.isclose(actual, value), figure

    # The charts' days.
    assert [d.day for d in figures.daily] == period.chart_days
    for d in figures.daily:
        mailed = sum(r["mailed"] for r in recipients if r["day"] == d.day)
        delivered = sum(r["delivered"] for r in recipients if r["day"] == d.day)
        revenue = 0
        for r in orders:
            if r["day"] == d.day and r["currency"] == currency:
                revenue += sum(r[f"{m}_revenue_minor"] for m in MATCH_TYPES)
        spent = sum(
            r["spend_minor"] for r in spend if r["day"] == d.day and r["currency"] == currency
        )
        assert (d.mailed, d.delivered, d.attributed_revenue_minor, d.spend_minor) == (
            mailed,
            delivered,
            revenue,
            spent,
        )

    # The other currencies, over the period only.
    others: dict[str, list[int]] = {}
    for r in orders:
        if period.first <= r["day"] <= period.last and r["currency"] != currency:
            mine = others.setdefault(r["currency"], [0, 0, 0])
            mine[0] += sum(r[f"{m}_orders"] for m in MATCH_TYPES)
            mine[1] += sum(r[f"{m}_revenue_minor"] for m in MATCH_TYPES)
    for r in spend:
        if period.first <= r["day"] <= period.last and r["currency"] != currency:
            others.setdefault(r["currency"], [0, 0, 0])[2] += r["spend_minor"]
    assert {
        o.currency: [o.attributed_orders, o.attributed_revenue_minor, o.spend_minor]
        for o in figures.other_currencies
    } == {c: v for c, v in others.items() if any(v)}
    if currencies == ["USD"]:
        assert figures.other_currencies == ()

    # The comparison.
    for change in figures.changes:
        now, then = (
            getattr(figures.current, change.figure),
            getattr(figures.previous, change.figure),
        )
        assert (change.current, change.previous) == (now, then)
        if now is None or then is None:
            assert change.delta is None and change.percent is None
        else:
            assert change.delta == now - then
            assert change.percent == (None if then == 0 else (now - then) / abs(then) * 100)


# --- the comparison and the lifts, on literal rows --------------------------------------------


def order_row(day: date, campaign: int | None, currency: str = "USD", **figures: int) -> dict:
    row: dict[str, Any] = {
        "day": day,
        "organization_id": ORG,
        "campaign_id": campaign,
        "currency": currency,
        "orders": 0,
    }
    for method in MATCH_TYPES:
        row[f"{method}_orders"] = 0
        row[f"{method}_revenue_minor"] = 0
    return row | figures


def test_percent_change_is_unknown_when_the_previous_figure_is_zero() -> None:
    assert Change("sent", 10, 0).percent is None and Change("sent", 10, 0).delta == 10
    assert Change("sent", 15, 10).percent == 50.0
    assert Change("sent", 5, 10).percent == -50.0
    assert Change("roas", 2.0, None).delta is None


def test_the_comparison_with_the_previous_week() -> None:
    week = week_ending(FRIDAY)
    before = previous(week)
    orders = pd.DataFrame(
        [
            order_row(FRIDAY, 11, offer_code_orders=2, offer_code_revenue_minor=4000),
            order_row(FRIDAY, 11, email_orders=1, email_revenue_minor=1500),
            order_row(FRIDAY, None, orders=9),  # credited to no campaign: not attributed
            order_row(before.last, 11, address_orders=1, address_revenue_minor=1000),
        ]
    )
    recipients = pd.DataFrame(
        [
            {"day": FRIDAY, "organization_id": ORG, "campaign_id": 11, "mailed": 300}
            | {"delivered": 10, "returned": 1},
            {"day": before.first, "organization_id": ORG, "campaign_id": 11, "mailed": 200}
            | {"delivered": 0, "returned": 0},
        ]
    )
    spend = pd.DataFrame(
        [
            {"day": FRIDAY, "organization_id": ORG, "campaign_id": 11, "currency": "USD"}
            | {"postcards": 300, "spend_minor": 22_000},
        ]
    )
    figures = report_figures(orders, recipients, spend, pd.DataFrame(), week, before)
    assert figures.currency == "USD"
    assert (figures.current.attributed_orders, figures.current.attributed_revenue_minor) == (
        3,
        5500,
    )
    assert (figures.current.matched_orders, figures.previous.matched_orders) == (1, 1)
    sent = figures.change("sent")
    assert (sent.current, sent.previous, sent.delta, sent.percent) == (300, 200, 100, 50.0)
    assert figures.change("delivered").percent is None  # from nothing
    assert figures.change("spend_minor").percent is None
    assert figures.current.cpa_minor == pytest.approx(22_000 / 3)
    assert figures.previous.roas is None and figures.change("roas").delta is None
    with pytest.raises(KeyError):
        figures.change("gross_minor")


def test_lifts_of_the_campaigns_active_in_the_period() -> None:
    week = week_ending(FRIDAY)
    recipients = pd.DataFrame(
        [
            {"day": FRIDAY, "organization_id": ORG, "campaign_id": 11, "mailed": 5}
            | {"delivered": 0, "returned": 0},
            # Campaign 12 only has recipients waiting: nothing happened to it this week.
            {"day": FRIDAY, "organization_id": ORG, "campaign_id": 12, "mailed": 0}
            | {"delivered": 0, "returned": 0},
        ]
    )
    orders = pd.DataFrame([order_row(FRIDAY, 13, email_orders=1, email_revenue_minor=10)])
    nan = float("nan")
    results = pd.DataFrame(
        [
            (11, 40, 0, 0.1, nan, nan, nan, nan, "no_holdout", "the campaign has no holdout"),
            (12, 900, 100, 0.03, 0.02, 0.01, -0.01, 0.03, "no_detectable_lift", None),
            (13, 900, 100, 0.05, 0.02, 0.03, 0.01, 0.05, "lift", None),
        ],
        columns=[
            *("campaign_id", "mailed_recipients", "holdout_recipients", "mailed_rate"),
            *("holdout_rate", "lift", "lift_low", "lift_high", "verdict", "verdict_reason"),
        ],
    ).assign(organization_id=ORG)
    figures = report_figures(orders, recipients, pd.DataFrame(), results, week, previous(week))
    assert [lift.campaign_id for lift in figures.lifts] == [11, 13]
    first, third = figures.lifts
    assert (first.verdict, first.lift, first.low, first.holdout_rate) == (
        Verdict.NO_HOLDOUT,
        None,
        None,
        None,
    )
    assert first.reason == "the campaign has no holdout"
    assert (third.verdict, third.lift, third.low, third.high) == (Verdict.LIFT, 0.03, 0.01, 0.05)


def test_empty_rows_give_zero_figures_and_no_currency() -> None:
    week = week_ending(FRIDAY)
    empty = pd.DataFrame()
    figures = report_figures(empty, empty, empty, empty, week, previous(week))
    assert figures.currency is None and figures.organization_id is None
    assert figures.current.sent == 0 and figures.current.roas is None
    assert len(figures.daily) == 7 and figures.lifts == ()


def test_rows_of_two_organizations_are_refused() -> None:
    week = week_ending(FRIDAY)
    orders = pd.DataFrame([order_row(FRIDAY, 11), order_row(FRIDAY, 11) | {"organization_id": 8}])
    empty = pd.DataFrame()
    with pytest.raises(ValueError, match="one organization"):
        report_figures(orders, empty, empty, empty, week, previous(week))


def test_the_week_of_a_day_and_whether_it_is_over() -> None:
    from mail_pipeline.domain.reports import week_of, week_over

    friday = date(2026, 12, 4)
    for day in (date(2026, 11, 28), date(2026, 11, 30), friday):
        assert (week_of(day).first, week_of(day).last) == (date(2026, 11, 28), friday)
    assert week_of(date(2026, 12, 5)).first == date(2026, 12, 5)
    assert not week_over(friday, friday) and week_over(friday, date(2026, 12, 5))
