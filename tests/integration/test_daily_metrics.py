"""Daily metrics and campaign results on a real database (SQLite, or PostgreSQL with
MAIL_PIPELINE_TEST_DATABASE_URL): days across DST, idempotent replacement of a range of
days, the revenue rules, the reconciliation checks on good and bad data, campaign results."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import count
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.metrics import MetricsGateway
from mail_pipeline.db.models import (
    Attribution,
    CampaignResult,
    DailyOrderMetrics,
    DailyRecipientMetrics,
    DailySpend,
    HoldoutMatch,
    Mailpiece,
    Order,
    Recipient,
)
from mail_pipeline.domain.mailpieces import MailpieceStatus
from mail_pipeline.domain.metrics import DayRange
from mail_pipeline.domain.recipients import RecipientStatus as S
from mail_pipeline.services.metrics import (
    lift_interval,
    order_revenue_not_negative,
    reconcile_order_metrics,
    reconcile_recipient_metrics,
    refresh_campaign_results,
    refresh_order_metrics,
    refresh_recipient_metrics,
)

SPRING = DayRange(date(2026, 3, 7), date(2026, 3, 9))  # clocks spring forward on the 8th
FALL = DayRange(date(2026, 10, 31), date(2026, 11, 2))  # and fall back on Nov 1
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class World:
    """Rows for one organization, inserted straight into the base tables."""

    def __init__(self, db_url: str, make_campaign: Callable[..., tuple[int, int]]) -> None:
        self.url = db_url
        self.organization_id, self.campaign_id = make_campaign()
        self._ids = count(1)

    def other_campaign(self) -> int:
        from mail_pipeline.db.models import Campaign

        with unit_of_work(self.url) as session:
            campaign = Campaign(
                organization_id=self.organization_id, name="Other", campaign_mode="automated"
            )
            session.add(campaign)
            session.flush()
            return campaign.id

    def order(
        self,
        ordered_at: datetime,
        total: int = 1000,
        *,
        refunded: int = 0,
        cancelled: bool = False,
        currency: str = "USD",
    ) -> int:
        with unit_of_work(self.url) as session:
            order = Order(
                organization_id=self.organization_id,
                source="shopify",
                external_order_id=f"o-{next(self._ids)}",
                total_minor=total,
                refunded_minor=refunded,
                currency=currency,
                ordered_at=ordered_at,
                cancelled=cancelled,
            )
            session.add(order)
            session.flush()
            return order.id

    def recipients(
        self,
        n: int,
        status: S,
        at: datetime,
        *,
        campaign_id: int | None = None,
        changed: datetime | None = None,
        **times: datetime,
    ) -> list[int]:
        """``n`` recipients created at ``at``, in ``status`` since ``changed`` (default
        ``at``), with these milestone times."""
        row = {
            "organization_id": self.organization_id,
            "campaign_id": campaign_id or self.campaign_id,
            "status": status,
            "created_at": at,
            "status_changed_at": changed or at,
            **times,
        }
        with unit_of_work(self.url) as session:
            result = session.execute(sa.insert(Recipient).returning(Recipient.id), [row] * n)
            return sorted(result.scalars())

    def credit(self, order_id: int, recipient_id: int, match_type: str = "email") -> None:
        self._match(Attribution, order_id, recipient_id, match_type)

    def holdout_match(self, order_id: int, recipient_id: int) -> None:
        self._match(HoldoutMatch, order_id, recipient_id, "email")

    def _match(self, model: Any, order_id: int, recipient_id: int, match_type: str) -> None:
        with unit_of_work(self.url) as session:
            campaign_id = session.get_one(Recipient, recipient_id).campaign_id
            session.add(
                model(
                    order_id=order_id,
                    recipient_id=recipient_id,
                    campaign_id=campaign_id,
                    organization_id=self.organization_id,
                    match_type=match_type,
                    revenue_minor=0,
                    currency="USD",
                )
            )

    def piece(
        self,
        recipient_id: int,
        accepted_at: datetime,
        *,
        cost: int | None = 65,
        currency: str | None = "USD",
        status: MailpieceStatus = MailpieceStatus.MAILED,
        last_event_at: datetime | None = None,
    ) -> None:
        with unit_of_work(self.url) as session:
            recipient = session.get_one(Recipient, recipient_id)
            attempts = session.scalar(
                sa.select(sa.func.count()).where(Mailpiece.recipient_id == recipient_id)
            )
            session.add(
                Mailpiece(
                    recipient_id=recipient_id,
                    attempt=(attempts or 0) + 1,
                    organization_id=self.organization_id,
                    campaign_id=recipient.campaign_id,
                    printer="lob",
                    idempotency_key=f"piece-{next(self._ids)}",
                    postage="first_class",
                    status=status,
                    cost_minor=cost,
                    currency=currency,
                    accepted_at=accepted_at,
                    last_event_at=last_event_at or accepted_at,
                )
            )

    def session(self) -> Any:
        return unit_of_work(self.url)

    def frame(self, model: Any, *order_by: str) -> pd.DataFrame:
        with unit_of_work(self.url) as session:
            result = session.execute(sa.select(model.__table__))
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        frame["day"] = pd.to_datetime(frame["day"]).dt.date if not frame.empty else frame["day"]
        return frame.drop(columns=["id", "computed_at"], errors="ignore").sort_values(
            list(order_by), ignore_index=True
        )


@pytest.fixture
def world(db_url: str, make_campaign: Callable[..., tuple[int, int]]) -> Iterator[World]:
    yield World(db_url, make_campaign)


def orders_per_day(world: World) -> dict[date, int]:
    frame = world.frame(DailyOrderMetrics, "day")
    return {d: int(n) for d, n in frame.groupby("day")["orders"].sum().items()}


def test_orders_fall_on_their_new_york_day_across_dst(world: World) -> None:
    for moment in (
        utc(2026, 3, 7, 4, 59),  # 23:59 EST on the 6th: outside the range
        utc(2026, 3, 7, 5, 0),  # midnight EST: the 7th
        utc(2026, 3, 8, 4, 59),  # 23:59 EST: the 7th
        utc(2026, 3, 8, 5, 0),  # midnight EST: the 8th (23 hours long)
        utc(2026, 3, 8, 7, 30),  # 03:30 EDT, just after the change
        utc(2026, 3, 9, 3, 59),  # 23:59 EDT: the 8th
        utc(2026, 3, 9, 4, 0),  # midnight EDT: the 9th
        utc(2026, 3, 10, 4, 0),  # midnight EDT on the 10th: outside
    ):
        world.order(moment)
    session = partial(unit_of_work, world.url)
    refresh_order_metrics(session, SPRING, now=NOW)
    assert orders_per_day(world) == {date(2026, 3, 7): 2, date(2026, 3, 8): 3, date(2026, 3, 9): 1}

    for moment in (
        utc(2026, 11, 1, 3, 59),  # 23:59 EDT on Oct 31
        utc(2026, 11, 1, 4, 0),  # midnight EDT: Nov 1 (25 hours long)
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, the first one
        utc(2026, 11, 1, 6, 30),  # 01:30 EST, the second one
        utc(2026, 11, 2, 4, 59),  # 23:59 EST: still Nov 1
        utc(2026, 11, 2, 5, 0),  # midnight EST: Nov 2
    ):
        world.order(moment)
    refresh_order_metrics(session, FALL, now=NOW)
    days = orders_per_day(world)
    assert {d: days[d] for d in FALL.days} == {
        date(2026, 10, 31): 1,
        date(2026, 11, 1): 4,
        date(2026, 11, 2): 1,
    }


def test_revenue_is_net_of_refunds_and_split_by_campaign_and_method(world: World) -> None:
    mailed = world.recipients(3, S.SENT, utc(2026, 3, 1))
    (holdout,) = world.recipients(1, S.HOLDOUT, utc(2026, 3, 1))
    day = utc(2026, 6, 10, 15)
    code = world.order(day, 5000, refunded=1000)
    email = world.order(day, 3000)
    address = world.order(day, 2000, refunded=2500)  # refunded above the total: 0
    cancelled = world.order(day, 9000, cancelled=True)
    zero = world.order(day, 0)
    matched = world.order(day, 700)
    world.order(day, 400)  # nobody's
    world.order(day, 1200, currency="CAD")
    world.credit(code, mailed[0], "offer_code")
    world.credit(email, mailed[1], "email")
    world.credit(address, mailed[2], "address")
    world.credit(cancelled, mailed[0], "email")
    world.credit(zero, mailed[1], "email")
    world.holdout_match(matched, holdout)

    result = refresh_order_metrics(
        partial(unit_of_work, world.url), DayRange.single(date(2026, 6, 10)), now=NOW
    )
    assert result.reconciliation.passed and result.revenue_not_negative.passed
    rows = world.frame(DailyOrderMetrics, "currency", "campaign_id").set_index(
        ["campaign_id", "currency"], drop=False
    )
    campaign = rows[(rows["campaign_id"] == world.campaign_id) & (rows["currency"] == "USD")]
    row = campaign.iloc[0]
    assert (row["orders"], row["cancelled_orders"]) == (4, 1)
    assert (row["gross_minor"], row["refunded_minor"], row["revenue_minor"]) == (
        10000,
        3000,
        7000,
    )
    assert (row["offer_code_orders"], row["offer_code_revenue_minor"]) == (1, 4000)
    assert (row["email_orders"], row["email_revenue_minor"]) == (2, 3000)
    assert (row["address_orders"], row["address_revenue_minor"]) == (1, 0)
    # the order matched to the campaign's holdout recipient: credited to no campaign, and
    # counted on the campaign's row as a holdout order
    assert (row["holdout_orders"], row["holdout_revenue_minor"]) == (1, 700)
    unattributed = rows[rows["campaign_id"].isna()].set_index("currency")
    assert unattributed.loc["USD", "orders"] == 2  # the holdout-matched one and nobody's
    assert unattributed.loc["USD", "holdout_orders"] == 0
    assert unattributed.loc["CAD", "revenue_minor"] == 1200
    assert result.orders == 7 and result.revenue_by_currency == {"USD": 8100, "CAD": 1200}
    assert int(rows["holdout_orders"].sum()) == 1


def test_a_refresh_replaces_exactly_its_days_and_is_idempotent(world: World) -> None:
    session = partial(unit_of_work, world.url)
    days = DayRange(date(2026, 6, 1), date(2026, 6, 3))
    first = world.order(utc(2026, 6, 1, 15), 1000)
    world.order(utc(2026, 6, 2, 15), 2000)
    world.order(utc(2026, 6, 3, 15), 3000)
    world.order(utc(2026, 6, 4, 15), 4000)
    refresh_order_metrics(session, days, now=NOW)
    once = world.frame(DailyOrderMetrics, "day")
    refresh_order_metrics(session, days, now=NOW + timedelta(hours=1))
    assert world.frame(DailyOrderMetrics, "day").equals(once)
    assert len(once) == 3

    # a refund of June 1st and a new order on June 2nd; only June 2nd is refreshed
    with world.session() as s:
        s.execute(sa.update(Order).where(Order.id == first).values(refunded_minor=1000))
    world.order(utc(2026, 6, 2, 20), 500)
    refresh_order_metrics(session, DayRange.single(date(2026, 6, 2)), now=NOW)
    revenue = world.frame(DailyOrderMetrics, "day").set_index("day")["revenue_minor"]
    assert revenue.to_dict() == {
        date(2026, 6, 1): 1000,  # not refreshed: as it was
        date(2026, 6, 2): 2500,
        date(2026, 6, 3): 3000,
    }
    refresh_order_metrics(session, days, now=NOW)
    revenue = world.frame(DailyOrderMetrics, "day").set_index("day")["revenue_minor"]
    assert revenue[date(2026, 6, 1)] == 0
    assert len(world.frame(DailyOrderMetrics, "day")) == 3


def test_the_order_checks_pass_on_good_data_and_fail_on_bad(world: World) -> None:
    (recipient,) = world.recipients(1, S.SENT, utc(2026, 6, 1))
    order = world.order(utc(2026, 6, 1, 15), 1000)
    world.credit(order, recipient, "offer_code")
    days = DayRange.single(date(2026, 6, 1))
    result = refresh_order_metrics(partial(unit_of_work, world.url), days, now=NOW)
    assert result.reconciliation.passed, result.reconciliation
    assert result.revenue_not_negative.passed

    # a late order of the day: the stored metrics no longer add up
    world.order(utc(2026, 6, 1, 18), 250)
    with world.session() as s:
        outcome = reconcile_order_metrics(MetricsGateway(s), days)
    assert not outcome.passed
    assert outcome.mismatches == (
        f"organization {world.organization_id}, USD: orders 1 in the metrics, 2 in the base tables",
        f"organization {world.organization_id}, USD: revenue_minor 1000 in the metrics, 1250 "
        "in the base tables",
    )

    # a stored row gone wrong
    with world.session() as s:
        s.execute(
            sa.update(DailyOrderMetrics)
            .where(DailyOrderMetrics.campaign_id == world.campaign_id)
            .values(offer_code_revenue_minor=-5)
        )
    with world.session() as s:
        gateway = MetricsGateway(s)
        negative = order_revenue_not_negative(gateway, days)
        credits = reconcile_order_metrics(gateway, days)
    assert not negative.passed
    assert negative.mismatches == (
        f"day 2026-06-01, organization {world.organization_id}, campaign {world.campaign_id}, "
        "USD: a revenue figure is negative",
    )
    assert any("offer_code: revenue_minor -5 in the metrics" in m for m in credits.mismatches)


def test_recipient_metrics_rebuild_each_day_and_reconcile(world: World) -> None:
    d = utc(2026, 6, 1, 16)  # noon in New York
    day = timedelta(days=1)
    sent = world.recipients(
        4,
        S.RECEIVED,
        d,
        proofed_at=d + day,
        sent_at=d + day,
        received_at=d + 3 * day,
        changed=d + 3 * day,
    )
    failed = world.recipients(
        1, S.ERROR, d, proofed_at=d + day, sent_at=d + day, changed=d + 2 * day
    )
    world.recipients(2, S.HOLDOUT, d)
    world.recipients(1, S.PENDING, d - 10 * day)  # untouched all along
    for recipient in sent:
        world.piece(recipient, d + day)
    world.piece(failed[0], d + day, cost=None, currency=None)
    world.piece(sent[0], d + 2 * day, cost=80, currency="GBP")  # a reprint, in pounds
    world.piece(sent[1], d + day, status=MailpieceStatus.RETURNED, last_event_at=d + 3 * day)

    days = DayRange(date(2026, 6, 1), date(2026, 6, 4))
    result = refresh_recipient_metrics(partial(unit_of_work, world.url), days, now=NOW)
    assert result.reconciliation.passed, result.reconciliation
    rows = world.frame(DailyRecipientMetrics, "day").set_index("day")
    figures = ["created", "proofed", "mailed", "delivered", "returned", "errored"]
    assert rows[figures].to_dict("index") == {
        date(2026, 6, 1): dict(zip(figures, [7, 0, 0, 0, 0, 0], strict=True)),
        date(2026, 6, 2): dict(zip(figures, [0, 5, 5, 0, 0, 0], strict=True)),
        date(2026, 6, 3): dict(zip(figures, [0, 0, 0, 0, 0, 1], strict=True)),
        date(2026, 6, 4): dict(zip(figures, [0, 0, 0, 4, 1, 0], strict=True)),
    }
    statuses = ["status_pending", "status_sent", "status_received", "status_error"]
    statuses.append("status_holdout")
    assert rows[statuses].to_dict("index") == {
        date(2026, 6, 1): dict(zip(statuses, [6, 0, 0, 0, 2], strict=True)),
        date(2026, 6, 2): dict(zip(statuses, [1, 5, 0, 0, 2], strict=True)),
        date(2026, 6, 3): dict(zip(statuses, [1, 4, 0, 1, 2], strict=True)),
        date(2026, 6, 4): dict(zip(statuses, [1, 0, 4, 1, 2], strict=True)),
    }
    assert rows["recipients"].tolist() == [8, 8, 8, 8]
    assert rows.loc[date(2026, 6, 2), ["postcards_mailed", "unpriced_postcards"]].tolist() == [
        6,
        1,
    ]
    spend = world.frame(DailySpend, "day", "currency")
    assert spend[["day", "currency", "postcards", "spend_minor"]].values.tolist() == [
        [date(2026, 6, 2), "USD", 5, 325],
        [date(2026, 6, 3), "GBP", 1, 80],
    ]
    assert result.spend_by_currency == {"USD": 325, "GBP": 80}

    # the same again: the same rows
    refresh_recipient_metrics(partial(unit_of_work, world.url), days, now=NOW)
    assert world.frame(DailyRecipientMetrics, "day").set_index("day").equals(rows)

    # a stored row gone wrong fails the reconciliation
    with world.session() as s:
        s.execute(sa.update(DailySpend).where(DailySpend.currency == "GBP").values(spend_minor=81))
        s.execute(
            sa.update(DailyRecipientMetrics)
            .where(DailyRecipientMetrics.day == date(2026, 6, 4))
            .values(recipients=9)
        )
    with world.session() as s:
        outcome = reconcile_recipient_metrics(MetricsGateway(s), days)
    assert not outcome.passed
    org = world.organization_id
    assert outcome.mismatches == (
        f"organization {org}: recipients 9 in the metrics, 8 in the base tables",
        f"organization {org}, GBP: spend_minor 81 in the metrics, 80 in the base tables",
    )


def test_campaign_results_come_from_the_base_tables(world: World) -> None:
    at = utc(2026, 5, 1, 12)
    sent = world.recipients(150, S.SENT, at)
    received = world.recipients(50, S.RECEIVED, at)
    holdout = world.recipients(200, S.HOLDOUT, at)
    failed = world.recipients(5, S.ERROR, at)
    mailed = sent + received
    for recipient in mailed:
        world.piece(recipient, at, cost=60)
    for i, recipient in enumerate(mailed[:20]):
        order = world.order(at + timedelta(days=1), 5000)
        world.credit(order, recipient, "offer_code" if i % 2 else "email")
    world.credit(world.order(at + timedelta(days=2), 1000), mailed[0])  # a second order
    world.credit(world.order(at + timedelta(days=2), 1000, cancelled=True), mailed[30])
    world.credit(world.order(at + timedelta(days=2), 800), failed[0])  # not mailed now
    for recipient in holdout[:6]:
        world.holdout_match(world.order(at + timedelta(days=1), 5000), recipient)
    small = world.other_campaign()
    world.recipients(20, S.SENT, at, campaign_id=small)
    world.recipients(5, S.HOLDOUT, at, campaign_id=small)

    refresh = refresh_campaign_results(partial(unit_of_work, world.url), now=NOW)
    assert refresh.rates.passed
    with world.session() as s:
        stored = {r.campaign_id: r for r in s.scalars(sa.select(CampaignResult))}
    main = stored[world.campaign_id]
    assert (main.mailed_recipients, main.mailed_converted) == (200, 20)
    assert (main.holdout_recipients, main.holdout_converted) == (200, 6)
    lift, low, high = lift_interval(20, 200, 6, 200)
    assert main.lift == pytest.approx(lift) and main.lift == pytest.approx(0.07)
    assert (main.lift_low, main.lift_high) == (pytest.approx(low), pytest.approx(high))
    assert main.verdict == "lift" and main.verdict_reason is None
    assert main.attributed_orders == 22  # 20 + the second order + the not-mailed-now one
    assert main.currency == "USD"
    assert main.spend_minor == 200 * 60
    assert main.attributed_revenue_minor == 20 * 5000 + 1000 + 800
    assert main.cpa_minor == pytest.approx(12000 / 22)
    assert main.roas == pytest.approx(101800 / 12000)
    assert main.postcards_mailed == 200
    other = stored[small]
    assert other.verdict == "too_few_to_tell"
    assert other.lift is None and other.lift_low is None
    assert "mailed group has 20 recipients" in (other.verdict_reason or "")
    assert other.spend_minor is None and other.cpa_minor is None


@pytest.mark.postgres
def test_concurrent_refreshes_of_the_same_days_store_one_set_of_rows(world: World) -> None:
    """Two refreshes of the same days at once: PostgreSQL refuses one (SERIALIZABLE), it is
    run again, and the days hold one set of rows."""
    for hour in range(10):
        world.order(utc(2026, 6, 1, 10 + hour), 100 * (hour + 1))
        world.order(utc(2026, 6, 2, 10 + hour), 100 * (hour + 1), currency="CAD")
    days = DayRange(date(2026, 6, 1), date(2026, 6, 2))
    session = partial(unit_of_work, world.url)
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            for _ in range(5):
                barrier.wait()
                refresh_order_metrics(session, days, now=NOW)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = world.frame(DailyOrderMetrics, "day")
    assert len(rows) == 2
    assert rows["orders"].tolist() == [10, 10]


def test_nothing_to_count_stores_nothing_and_passes(db_url: str) -> None:
    session = partial(unit_of_work, db_url)
    days = DayRange(date(2026, 6, 1), date(2026, 6, 3))
    orders = refresh_order_metrics(session, days, now=NOW)
    recipients = refresh_recipient_metrics(session, days, now=NOW)
    results = refresh_campaign_results(session, now=NOW)
    assert (orders.rows, recipients.rows, recipients.spend_rows, results.campaigns) == (0, 0, 0, 0)
    assert orders.reconciliation.passed and recipients.reconciliation.passed
    assert results.rates.passed
