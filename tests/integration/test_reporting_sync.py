"""The reporting store on a real database (SQLite, or PostgreSQL with
MAIL_PIPELINE_TEST_DATABASE_URL): its figures against ones worked out by hand from seeded
metrics rows, the window's edges (New York days), idempotent re-runs, all-or-nothing
failures, and which organizations are synced."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import (
    Campaign,
    CampaignResult,
    DailyOrderMetrics,
    DailyRecipientMetrics,
    DailySpend,
    Organization,
    ReportingCampaign,
    ReportingCampaignDay,
    ReportingSync,
)
from mail_pipeline.domain.campaigns import CampaignMode, OrganizationStatus
from mail_pipeline.domain.metrics import STATUS_COLUMNS, DayRange
from mail_pipeline.domain.reporting import reporting_window
from mail_pipeline.services.reporting_sync import (
    organizations_to_sync,
    record_failure,
    sync_organization,
)

#: 22:00 on November 29 in New York (already the 30th in UTC): today is the 29th.
NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
FIRST, LAST = date(2026, 10, 26), date(2026, 11, 29)
NOV10, NOV11, NOV12 = date(2026, 11, 10), date(2026, 11, 11), date(2026, 11, 12)


def test_the_window_is_the_last_35_new_york_days() -> None:
    assert reporting_window(NOW) == DayRange(FIRST, LAST)
    assert len(reporting_window(NOW)) == 35
    midnight = NOW - timedelta(hours=22)  # New York's midnight opens the 29th
    assert reporting_window(midnight).last == LAST
    assert reporting_window(midnight - timedelta(seconds=1)) == DayRange(
        FIRST - timedelta(days=1), LAST - timedelta(days=1)
    )


def _orders(day: date, org: int, campaign: int | None, currency: str, n: int, revenue: int) -> Any:
    zero = {
        f: 0
        for f in (
            "cancelled_orders",
            "refunded_minor",
            "offer_code_orders",
            "offer_code_revenue_minor",
            "email_orders",
            "email_revenue_minor",
            "address_orders",
            "address_revenue_minor",
            "holdout_orders",
            "holdout_revenue_minor",
        )
    }
    return DailyOrderMetrics(
        day=day,
        organization_id=org,
        campaign_id=campaign,
        currency=currency,
        orders=n,
        gross_minor=revenue,
        revenue_minor=revenue,
        computed_at=NOW,
        **zero,
    )


def _spend(day: date, org: int, campaign: int, currency: str, amount: int) -> DailySpend:
    return DailySpend(
        day=day,
        organization_id=org,
        campaign_id=campaign,
        currency=currency,
        postcards=1,
        spend_minor=amount,
        computed_at=NOW,
    )


def _postcards(
    day: date, org: int, campaign: int, mailed: int, delivered: int, returned: int
) -> DailyRecipientMetrics:
    zero = {f: 0 for f in ("created", "proofed", "errored", "postcards_mailed")}
    zero |= {f: 0 for f in ("unpriced_postcards", "recipients", *STATUS_COLUMNS)}
    return DailyRecipientMetrics(
        day=day,
        organization_id=org,
        campaign_id=campaign,
        mailed=mailed,
        delivered=delivered,
        returned=returned,
        computed_at=NOW,
        **zero,
    )


class Seeded:
    """Organization A (campaigns c1, c2) with metrics in and around the window, and
    organization B (c3), whose rows a sync of A never touches."""

    def __init__(self, db_url: str, make_campaign: Any) -> None:
        self.url = db_url
        self.session = partial(unit_of_work, db_url)
        self.a, self.c1 = make_campaign()
        self.b, self.c3 = make_campaign()
        with unit_of_work(db_url) as s:
            c2 = Campaign(
                organization_id=self.a, name="Second", campaign_mode=CampaignMode.AUTOMATED
            )
            s.add(c2)
            s.flush()
            self.c2 = c2.id
            a, b, c1, c2_, c3 = self.a, self.b, self.c1, self.c2, self.c3
            s.add_all(
                [
                    _orders(NOV10, a, c1, "USD", 3, 9000),
                    _orders(NOV10, a, c1, "CAD", 1, 500),
                    _orders(NOV10, a, None, "USD", 5, 10000),  # credited to no campaign
                    _orders(FIRST, a, c2_, "USD", 2, 4000),  # the window's first day
                    _orders(FIRST - timedelta(days=1), a, c2_, "USD", 7, 7000),  # before it
                    _orders(LAST + timedelta(days=1), a, c1, "USD", 1, 100),  # after it
                    _orders(NOV10, b, c3, "USD", 4, 4000),
                    _spend(NOV10, a, c1, "USD", 3000),
                    _spend(NOV11, a, c1, "USD", 1500),
                    _spend(FIRST - timedelta(days=1), a, c2_, "USD", 999),
                    _postcards(NOV10, a, c1, 10, 4, 1),
                    _postcards(NOV12, a, c2_, 0, 2, 0),  # no money that day
                    _postcards(date(2026, 11, 13), a, c2_, 0, 0, 0),  # nothing at all
                    _postcards(LAST, a, c1, 5, 0, 0),  # the window's last day
                    _postcards(date(2026, 10, 1), a, c1, 7, 6, 0),  # long before it
                    _postcards(NOV10, b, c3, 9, 9, 9),
                    CampaignResult(
                        campaign_id=c1,
                        organization_id=a,
                        mailed_recipients=22,
                        mailed_converted=4,
                        mailed_rate=4 / 22,
                        holdout_recipients=3,
                        holdout_converted=0,
                        holdout_rate=0.0,
                        lift=0.02,
                        lift_low=-0.01,
                        lift_high=0.05,
                        verdict="no_detectable_lift",
                        postcards_mailed=22,
                        attributed_orders=4,
                        currency="USD",
                        spend_minor=4500,
                        attributed_revenue_minor=9500,
                        cpa_minor=1125.0,
                        roas=9500 / 4500,
                        spend_by_currency={"USD": 4500},
                        revenue_by_currency={"USD": 9500},
                        computed_at=NOW,
                    ),
                ]
            )
            # What an earlier sync wrote for a day now outside the window: kept as it is.
            s.add(self.day_row(c2_, FIRST - timedelta(days=1), "USD", orders=7))

    def day_row(self, campaign: int, day: date, currency: str, **figures: Any) -> Any:
        values = dict.fromkeys(
            ("mailed", "delivered", "returned", "orders", "revenue_minor", "spend_minor"), 0
        )
        return ReportingCampaignDay(
            organization_id=self.a,
            campaign_id=campaign,
            day=day,
            currency=currency,
            synced_at=NOW - timedelta(days=1),
            **(values | figures),
        )

    def days(self) -> dict[tuple[int, date, str], tuple[Any, ...]]:
        t = ReportingCampaignDay
        with unit_of_work(self.url) as s:
            rows = s.execute(
                sa.select(
                    t.campaign_id,
                    t.day,
                    t.currency,
                    t.mailed,
                    t.delivered,
                    t.returned,
                    t.orders,
                    t.revenue_minor,
                    t.spend_minor,
                    t.cpa_minor,
                    t.roas,
                ).where(t.organization_id == self.a)
            ).all()
        return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}

    def campaigns(self) -> dict[int, dict[str, Any]]:
        with unit_of_work(self.url) as s:
            return {
                row.campaign_id: {
                    c: getattr(row, c)
                    for c in ReportingCampaign.__table__.columns.keys()  # noqa: SIM118
                    if c != "synced_at"
                }
                for row in s.scalars(sa.select(ReportingCampaign))
            }


@pytest.fixture
def seeded(db_url: str, make_campaign: Any) -> Seeded:
    return Seeded(db_url, make_campaign)


def test_figures_match_the_metrics_rows(seeded: Seeded) -> None:
    counts = sync_organization(seeded.session, seeded.a, NOW)

    c1, c2 = seeded.c1, seeded.c2
    #          mailed delivered returned orders revenue spend cpa roas
    assert seeded.days() == {
        # postcards on the day's first currency (CAD before USD); no spend: CPA 0, no ROAS
        (c1, NOV10, "CAD"): (10, 4, 1, 1, 500, 0, 0.0, None),
        (c1, NOV10, "USD"): (0, 0, 0, 3, 9000, 3000, 1000.0, 3.0),
        (c1, NOV11, "USD"): (0, 0, 0, 0, 0, 1500, None, 0.0),
        (c1, LAST, "XXX"): (5, 0, 0, 0, 0, 0, None, None),
        (c2, FIRST, "USD"): (0, 0, 0, 2, 4000, 0, 0.0, None),
        (c2, NOV12, "XXX"): (0, 2, 0, 0, 0, 0, None, None),
        # outside the window: what the earlier sync wrote
        (c2, FIRST - timedelta(days=1), "USD"): (0, 0, 0, 7, 0, 0, None, None),
    }
    assert (counts.day_rows, counts.campaign_rows) == (6, 2)
    assert seeded.campaigns() == {
        c1: {
            "campaign_id": c1,
            "organization_id": seeded.a,
            "currency": "USD",
            "mailed": 22,  # every day, the window's or not
            "delivered": 10,
            "returned": 1,
            "orders": 4,
            "revenue_minor": 9500,
            "spend_minor": 4500,
            "cpa_minor": 1125.0,
            "roas": pytest.approx(9500 / 4500),
            "lift": 0.02,
            "lift_low": -0.01,
            "lift_high": 0.05,
            "verdict": "no_detectable_lift",
        },
        c2: {
            "campaign_id": c2,
            "organization_id": seeded.a,
            "currency": None,
            "mailed": 0,
            "delivered": 2,
            "returned": 0,
            "orders": 0,
            "revenue_minor": None,
            "spend_minor": None,
            "cpa_minor": None,
            "roas": None,
            "lift": None,
            "lift_low": None,
            "lift_high": None,
            "verdict": None,
        },
    }
    with unit_of_work(seeded.url) as s:
        state = s.get_one(ReportingSync, seeded.a)
        assert (state.status, state.rows, state.last_synced_at, state.error) == ("ok", 8, NOW, None)
        # Cross-check with the metrics tables: the window's postcards, each counted once.
        r = DailyRecipientMetrics
        mailed = s.scalar(
            sa.select(sa.func.sum(r.mailed)).where(
                r.organization_id == seeded.a, r.day.between(FIRST, LAST)
            )
        )
        stored = s.scalar(
            sa.select(sa.func.sum(ReportingCampaignDay.mailed)).where(
                ReportingCampaignDay.organization_id == seeded.a,
                ReportingCampaignDay.day.between(FIRST, LAST),
            )
        )
        assert stored == mailed == 15
        assert s.scalar(sa.select(sa.func.count()).select_from(ReportingCampaignDay)) == 7


def test_a_sync_is_idempotent_and_follows_the_metrics(seeded: Seeded) -> None:
    sync_organization(seeded.session, seeded.a, NOW)
    first = (seeded.days(), seeded.campaigns())
    sync_organization(seeded.session, seeded.a, NOW + timedelta(minutes=7))
    assert (seeded.days(), seeded.campaigns()) == first

    with unit_of_work(seeded.url) as s:
        s.execute(sa.delete(DailySpend).where(DailySpend.day == NOV11))
    sync_organization(seeded.session, seeded.a, NOW + timedelta(minutes=15))
    assert (seeded.c1, NOV11, "USD") not in seeded.days()


def test_more_days_reach_further_back(seeded: Seeded) -> None:
    counts = sync_organization(seeded.session, seeded.a, NOW, days=36)
    assert counts.days.first == FIRST - timedelta(days=1)
    # the stale row of that day is replaced by the metrics' figures (orders 7, revenue 7000)
    assert seeded.days()[(seeded.c2, FIRST - timedelta(days=1), "USD")] == (
        0,
        0,
        0,
        7,
        7000,
        999,
        999 / 7,
        7000 / 999,
    )


def test_a_sync_is_all_or_nothing_and_a_failure_is_recorded(seeded: Seeded) -> None:
    sync_organization(seeded.session, seeded.a, NOW)
    before = seeded.days()
    with unit_of_work(seeded.url) as s:
        s.add(_orders(NOV12, seeded.a, seeded.c1, "usd", 1, 100))  # not a currency code
    later = NOW + timedelta(minutes=8)
    with pytest.raises(ValueError, match="ISO 4217"):
        sync_organization(seeded.session, seeded.a, later)
    assert seeded.days() == before

    record_failure(seeded.session, seeded.a, later, "ValueError: bad currency")
    with unit_of_work(seeded.url) as s:
        state = s.get_one(ReportingSync, seeded.a)
        assert (state.status, state.error, state.attempted_at) == (
            "failed",
            "ValueError: bad currency",
            later,
        )
        assert (state.last_synced_at, state.rows) == (NOW, 8)


def test_organizations_to_sync_are_active_with_campaigns(db_url: str, make_campaign: Any) -> None:
    active, _ = make_campaign()
    churned, _ = make_campaign()
    with unit_of_work(db_url) as s:
        s.get_one(Organization, churned).status = OrganizationStatus.CHURNED
        s.add(Organization(name="Empty", slug="empty", country="US"))
    assert organizations_to_sync(partial(unit_of_work, db_url)) == [active]
