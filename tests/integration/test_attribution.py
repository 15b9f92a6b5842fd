"""Attribution on the database (SQLite, and PostgreSQL with MAIL_PIPELINE_TEST_DATABASE_URL):
the whole use case, from orders and recipients in tables to attributions, holdout matches
and each organization's watermark."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mail_pipeline.cli import main
from mail_pipeline.db import attribution as gateway_module
from mail_pipeline.db.attribution import CreditWrites
from mail_pipeline.db.engine import engine_for
from mail_pipeline.db.models import Attribution, Campaign, HoldoutMatch, Order, utcnow
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.services.attribution import COMMIT_LAG, attribute_orders
from mail_pipeline.services.attribution_checks import (
    attributions_in_window,
    credited_once_within_organization,
    revenue_not_negative,
)
from tests.attribution_world import MAILED, NOW, Credit, World

DAY = timedelta(days=1)
US = timedelta(microseconds=1)


@pytest.fixture(params=["recipients sharing a key", "every recipient"])
def world(db_url: str, request: pytest.FixtureRequest) -> World:
    """A world whose runs read candidates both ways (``AttributionGateway.load``)."""
    made = World(db_url)
    made.key_filter_max_orders = 1_000 if request.param == "recipients sharing a key" else 0
    return made


def run(world: World, **kwargs: object):  # type: ignore[no-untyped-def]
    return attribute_orders(
        world.sessions,
        now=NOW,
        key_filter_max_orders=world.key_filter_max_orders,
        **kwargs,  # type: ignore[arg-type]
    )


def test_window_edges_are_inclusive_at_the_mail_date_and_exclusive_at_the_end(
    world: World,
) -> None:
    org = world.organization()
    campaign = world.campaign(org, window_days=7)
    recipient = world.recipient(campaign, email_key="e", sent_at=MAILED)
    before = world.order(org, MAILED - US, email_key="e")
    at_mailing = world.order(org, MAILED, email_key="e")
    last_instant = world.order(org, MAILED + 7 * DAY - US, email_key="e")
    at_end = world.order(org, MAILED + 7 * DAY, email_key="e")

    result = run(world)

    assert set(world.credits()) == {at_mailing, last_instant}
    assert world.credits()[at_mailing].recipient_id == recipient
    assert result.orders_examined == 4
    assert {before, at_end}.isdisjoint(world.credits())
    assert run(world).orders_examined == 0  # examined, for good


def test_code_beats_email_beats_address_across_recipients(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    by_address = world.recipient(campaign, address_key="1 main|10001|US")
    by_email = world.recipient(campaign, email_key="e@x")
    by_code = world.recipient(campaign, offer_code="MP-7Q2K")
    at = MAILED + DAY
    all_three = world.order(
        org, at, email_key="e@x", address_key="1 main|10001|US", codes=["mp-7q2k "]
    )
    email_and_address = world.order(org, at, email_key="e@x", address_key="1 main|10001|US")
    address_only = world.order(org, at, address_key="1 main|10001|US")
    shop_code = world.order(org, at, codes=["WELCOME10"])

    result = run(world)

    credits = world.credits()
    assert credits[all_three] == Credit(by_code, campaign, "offer_code", 5000)
    assert credits[email_and_address] == Credit(by_email, campaign, "email", 5000)
    assert credits[address_only] == Credit(by_address, campaign, "address", 5000)
    assert shop_code not in credits
    assert result.attributed == {"address": 1, "email": 1, "offer_code": 1}
    assert (result.code_redemptions, result.responder_matches) == (1, 2)


def test_two_candidate_campaigns_go_to_the_latest_mailing_before_the_order(world: World) -> None:
    org = world.organization()
    spring, summer, later = world.campaign(org), world.campaign(org), world.campaign(org)
    world.recipient(spring, email_key="e", sent_at=MAILED - 5 * DAY)
    latest = world.recipient(summer, email_key="e", sent_at=MAILED)
    world.recipient(later, email_key="e", sent_at=MAILED + 3 * DAY)  # after the order
    order = world.order(org, MAILED + 2 * DAY, email_key="e")
    same_day_a = world.recipient(spring, email_key="f", sent_at=MAILED)
    world.recipient(summer, email_key="f", sent_at=MAILED)
    tied = world.order(org, MAILED + DAY, email_key="f")

    run(world)

    assert world.credits()[order] == Credit(latest, summer, "email", 5000)
    assert world.credits()[tied].recipient_id == same_day_a  # same time: lowest id


def test_only_mailed_recipients_of_the_same_organization_are_credited(world: World) -> None:
    org, other_org = world.organization(), world.organization()
    campaign, other_campaign = world.campaign(org), world.campaign(other_org)
    world.recipient(other_campaign, email_key="e", offer_code="CODE1")
    world.recipient(campaign, email_key="p", status=RecipientStatus.PROOFED, sent_at=None)
    world.recipient(campaign, email_key="x", status=RecipientStatus.ERROR)
    order = world.order(org, MAILED + DAY, email_key="e", codes=["CODE1"])
    pending = world.order(org, MAILED + DAY, email_key="p")
    failed = world.order(org, MAILED + DAY, email_key="x")

    run(world)

    assert world.credits() == {}
    assert run(world).orders_examined == 0  # examined, for good: (order, pending, failed)
    assert {order, pending, failed}.isdisjoint(world.credits())


def test_cancelled_orders_are_not_credited_zero_totals_and_refunds_are(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    recipient = world.recipient(campaign, email_key="e")
    at = MAILED + DAY
    cancelled = world.order(org, at, email_key="e", cancelled=True)
    free = world.order(org, at, email_key="e", total=0)
    refunded = world.order(org, at, email_key="e", total=5000, refunded=1250)
    fully_refunded = world.order(org, at, email_key="e", total=5000, refunded=5000)

    result = run(world)

    credits = world.credits()
    assert cancelled not in credits
    assert credits[free] == Credit(recipient, campaign, "email", 0)
    assert credits[refunded].revenue_minor == 3750
    assert credits[fully_refunded].revenue_minor == 0
    assert result.revenue_minor == {"USD": 3750}


def test_a_refund_or_cancellation_after_attribution_revises_the_credit(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    recipient = world.recipient(campaign, email_key="e")
    refund_later = world.order(org, MAILED + DAY, email_key="e", total=8000)
    cancel_later = world.order(org, MAILED + DAY, email_key="e", total=3000)
    run(world)
    with world.sessions() as session:
        first_stamp = session.execute(sa.text("SELECT attributed_at FROM attributions")).all()

    # days later, stamped by the sync's clock: after the watermark the first run set
    world.change_order(refund_later, refunded_minor=2000)
    world.change_order(cancel_later, cancelled=True)
    result = run(world)

    assert result.orders_examined == 2
    assert world.credits() == {refund_later: Credit(recipient, campaign, "email", 6000)}
    assert (result.attribution_writes.updated, result.attribution_writes.removed) == (1, 1)
    with world.sessions() as session:
        kept_stamp = session.execute(sa.text("SELECT attributed_at FROM attributions")).all()
    assert kept_stamp[0] in first_stamp  # revised in place, not credited anew


def test_holdout_recipients_are_matched_from_their_campaigns_next_mailing(world: World) -> None:
    org = world.organization()
    campaign, other = world.campaign(org, window_days=10), world.campaign(org)
    world.recipient(campaign, sent_at=MAILED)
    early = world.holdout(campaign, created_at=MAILED - 2 * DAY, email_key="h1")
    late = world.holdout(campaign, created_at=MAILED + DAY, email_key="h2")  # no mailing since
    mailed = world.recipient(other, email_key="h1")
    before_mailing = world.order(org, MAILED - DAY, email_key="h1")
    inside = world.order(org, MAILED + 2 * DAY, email_key="h1")
    after_window = world.order(org, MAILED + 10 * DAY, email_key="h1")
    never = world.order(org, MAILED + 2 * DAY, email_key="h2")

    result = run(world)

    holdout = world.holdout_credits()
    assert holdout == {
        inside: Credit(early, campaign, "email", 5000),
    }
    assert {before_mailing, after_window, never}.isdisjoint(holdout)
    # matched to a holdout recipient and credited to a mailed one, independently
    assert world.credits()[inside].recipient_id == mailed
    assert late not in {c.recipient_id for c in holdout.values()}
    assert result.holdout_matched == 1


def test_a_rerun_changes_nothing_and_examines_nothing(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    world.recipient(campaign, email_key="e")
    world.holdout(campaign, created_at=MAILED - DAY, email_key="h")
    for key in ("e", "h", "z"):
        world.order(org, MAILED + DAY, email_key=key)
    with world.sessions() as session:
        rows = sa.select(Order.id, Order.updated_at)
        untouched = session.execute(rows).all()
    run(world)
    before = (world.credits(), world.holdout_credits())

    again = run(world)

    assert again.orders_examined == 0
    assert (world.credits(), world.holdout_credits()) == before
    with world.sessions() as session:  # attribution never writes orders
        assert session.execute(rows).all() == untouched


def test_orders_changed_within_the_lag_are_examined_again_and_nothing_is_written(
    world: World,
) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    world.recipient(campaign, email_key="e")
    order = world.order(org, MAILED + DAY, email_key="e", total=4000)
    run(world)
    world.change_order(order, refunded_minor=500)  # just now, by the sync's clock
    first = run(world)
    credits = world.credits()

    again = run(world)  # the change is younger than the lag: examined again

    assert (first.orders_examined, again.orders_examined) == (1, 1)
    assert again.attribution_writes == CreditWrites()
    assert world.credits() == credits
    assert credits[order].revenue_minor == 3500


def test_the_watermark_trails_the_runs_start_by_the_lag(world: World) -> None:
    org, idle = world.organization(), world.organization()
    campaign = world.campaign(org)
    world.recipient(campaign, email_key="e")
    order = world.order(org, MAILED + DAY, email_key="e", total=4000)
    began = utcnow()
    result = run(world)
    ended = utcnow()

    stored = world.watermark(org)
    assert stored is not None
    examined_through, ordered_through = stored
    assert began - COMMIT_LAG <= examined_through <= ended - COMMIT_LAG
    assert result.examined_through == examined_through
    assert ordered_through == NOW
    assert world.watermark(idle) is None  # nothing to examine: no row

    world.change_order(order, at=examined_through, refunded_minor=1000)
    assert run(world).orders_examined == 0  # stamped at the watermark: taken as examined
    world.change_order(order, at=examined_through + US, refunded_minor=1000)
    assert run(world).orders_examined == 1
    assert world.credits()[order].revenue_minor == 3000


def test_a_change_stamped_before_a_run_began_and_committed_after_it_read_is_examined(
    world: World,
) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    world.recipient(campaign, email_key="e")
    order = world.order(org, MAILED + DAY, email_key="e", total=4000)
    run(world)
    # a new order, so the next run examines the organization and moves its watermark
    world.order(org, MAILED + 2 * DAY, email_key="e", stamped=utcnow())
    began = utcnow()
    assert run(world).orders_examined == 1

    # the sync stamped its page a minute before that run began and committed after it read
    world.change_order(order, at=began - timedelta(minutes=1), refunded_minor=1000)

    assert run(world).orders_examined == 2  # with the new order, younger than the lag
    assert world.credits()[order].revenue_minor == 3000


@pytest.mark.postgres  # on SQLite no other writer can interleave with a run's transaction
def test_an_order_changed_while_the_run_worked_is_examined_again(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    world.recipient(campaign, email_key="e")
    order = world.order(org, MAILED + DAY, email_key="e", total=4000)
    original = gateway_module.AttributionGateway.load
    began = utcnow()

    def load_then_refund(self, organization_ids, now, **options):  # type: ignore[no-untyped-def]
        inputs = original(self, organization_ids, now, **options)
        # another writer commits while the run works, its stamp older than the run's start
        world.change_order(order, at=began - timedelta(minutes=1), refunded_minor=1000)
        return inputs

    gateway_module.AttributionGateway.load = load_then_refund  # type: ignore[method-assign]
    try:
        first = run(world)
    finally:
        gateway_module.AttributionGateway.load = original  # type: ignore[method-assign]

    assert world.credits()[order].revenue_minor == 4000  # the version the run read
    assert first.examined_through is not None
    assert first.examined_through < began - timedelta(minutes=1)
    second = run(world)
    assert second.orders_examined == 1
    assert world.credits()[order].revenue_minor == 3000


@pytest.mark.postgres  # a transaction writing while the run starts; SQLite has one writer
def test_a_transaction_writing_when_the_run_began_holds_the_watermark_back(
    world: World,
) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    world.recipient(campaign, email_key="e")
    order = world.order(org, MAILED + DAY, email_key="e", total=4000)
    no_lag = timedelta(0)
    run(world, commit_lag=no_lag)
    # a new order, so the next run examines the organization and moves its watermark
    world.order(org, MAILED + 2 * DAY, email_key="e", stamped=utcnow())
    with engine_for(world.db_url).connect() as writer:
        writer.execute(sa.text("SELECT 1"))  # the writer's transaction begins
        stamp = utcnow()  # stamped after it began, but before the run starts
        writer.execute(
            sa.update(Order).where(Order.id == order).values(refunded_minor=1000, updated_at=stamp)
        )
        during = run(world, commit_lag=no_lag)  # does not see the uncommitted refund
        writer.commit()

    assert during.orders_examined == 1
    assert during.examined_through is not None and during.examined_through < stamp
    assert world.credits()[order].revenue_minor == 4000
    after = run(world, commit_lag=no_lag)
    assert after.orders_examined == 1
    assert world.credits()[order].revenue_minor == 3000


def test_a_piece_the_printer_failed_gives_its_orders_back(world: World) -> None:
    org = world.organization()
    old, new = world.campaign(org), world.campaign(org)
    earlier = world.recipient(old, email_key="e", sent_at=MAILED - 2 * DAY)
    failed = world.recipient(new, email_key="e", sent_at=MAILED)
    order = world.order(org, MAILED + DAY, email_key="e")
    run(world)
    assert world.credits()[order].recipient_id == failed

    world.set_recipient(failed, status=RecipientStatus.ERROR)
    result = run(world)

    assert result.orders_examined == 1
    assert world.credits()[order] == Credit(earlier, old, "email", 5000)
    assert run(world).orders_examined == 0


def test_orders_dated_after_the_run_wait_and_are_examined_when_their_time_comes(
    world: World,
) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    recipient = world.recipient(campaign, email_key="e")
    world.order(org, MAILED + DAY, email_key="z")
    future = world.order(org, NOW + timedelta(minutes=5), email_key="e")

    assert run(world).orders_examined == 1
    assert future not in world.credits()
    stored = world.watermark(org)
    assert stored is not None and stored[0] > NOW + timedelta(minutes=5)  # past its stamp

    later = attribute_orders(
        world.sessions,
        now=NOW + timedelta(minutes=10),
        key_filter_max_orders=world.key_filter_max_orders,
    )

    assert later.orders_examined == 1
    assert world.credits()[future].recipient_id == recipient


def test_groups_of_organizations_decide_the_same(world: World) -> None:
    orgs = [world.organization() for _ in range(3)]
    for org in orgs:
        campaign = world.campaign(org)
        world.recipient(campaign, email_key="e", offer_code=f"C{org}")
        world.order(org, MAILED + DAY, email_key="e")
        world.order(org, MAILED + DAY, codes=[f"C{org}"])

    result = run(world, max_orders=2)

    assert result.groups == 3
    assert result.orders_examined == 6
    assert len(world.credits()) == 6


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_group_stops_only_itself_and_is_examined_again(
    world: World, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    orgs = [world.organization() for _ in range(3)]
    campaigns = [world.campaign(org) for org in orgs]
    for org, campaign in zip(orgs, campaigns, strict=True):
        world.recipient(campaign, email_key="e")
        world.order(org, MAILED + DAY, email_key="e")
    broken = orgs[1]
    load = gateway_module.AttributionGateway.load

    def failing_load(self, organization_ids, *args, **kwargs):  # type: ignore[no-untyped-def]
        if broken in organization_ids:
            raise RuntimeError("the database went away")
        return load(self, organization_ids, *args, **kwargs)

    monkeypatch.setattr(gateway_module.AttributionGateway, "load", failing_load)
    with pytest.raises(RuntimeError, match="went away") as failed:
        run(world, max_orders=1, workers=workers)

    assert f"the first for organizations [{broken}]" in "\n".join(failed.value.__notes__)
    assert sorted(c.campaign_id for c in world.credits().values()) == [
        campaigns[0],
        campaigns[2],
    ]
    monkeypatch.undo()
    again = run(world, max_orders=1, workers=workers)
    assert again.orders_examined >= 1
    assert sorted(c.campaign_id for c in world.credits().values()) == campaigns


def test_checks_pass_after_a_run_and_fail_on_bad_rows(world: World) -> None:
    org, other_org = world.organization(), world.organization()
    campaign, other_campaign = world.campaign(org, window_days=5), world.campaign(other_org)
    recipient = world.recipient(campaign, email_key="e")
    stranger = world.recipient(other_campaign, email_key="e")
    credited = world.order(org, MAILED + DAY, email_key="e")
    late = world.order(org, MAILED + 5 * DAY, email_key="e")
    foreign = world.order(other_org, MAILED + DAY, email_key="zz")
    run(world)
    for check in (credited_once_within_organization, revenue_not_negative, attributions_in_window):
        assert check(world.sessions).count == 0
    assert credited in world.credits()

    world.insert(  # credited outside the window
        Attribution,
        order_id=late,
        recipient_id=recipient,
        campaign_id=campaign,
        organization_id=org,
        match_type="email",
        revenue_minor=-5,
    )
    world.insert(  # an order of one organization credited to another's recipient
        HoldoutMatch,
        order_id=foreign,
        recipient_id=recipient,
        campaign_id=campaign,
        organization_id=org,
        match_type="email",
        revenue_minor=100,
    )

    assert attributions_in_window(world.sessions).order_ids == [late]
    assert revenue_not_negative(world.sessions).order_ids == [late]
    across = credited_once_within_organization(world.sessions)
    assert (across.count, across.order_ids) == (1, [foreign])
    assert stranger not in {c.recipient_id for c in world.credits().values()}


def test_the_check_holds_the_references_the_credit_tables_have_no_foreign_keys_for(
    world: World,
) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    recipient = world.recipient(campaign, email_key="e")
    order = world.order(org, MAILED + DAY, email_key="x")
    missing = 10_000_000
    credit = {"organization_id": org, "match_type": "email", "revenue_minor": 1}
    world.insert(  # the order does not exist
        Attribution, order_id=missing, recipient_id=recipient, campaign_id=campaign, **credit
    )
    world.insert(  # the recipient does not exist
        HoldoutMatch, order_id=order, recipient_id=missing, campaign_id=campaign, **credit
    )
    world.insert(  # the campaign does not exist
        Attribution, order_id=order, recipient_id=recipient, campaign_id=missing, **credit
    )

    found = credited_once_within_organization(world.sessions)

    assert (found.count, found.order_ids) == (2, [order, missing])
    assert "missing order, recipient or campaign" in found.description


def test_the_window_check_judges_the_edges_to_the_microsecond(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, window_days=30)
    recipient = world.recipient(campaign, sent_at=MAILED + timedelta(microseconds=250_001))
    sent = MAILED + timedelta(microseconds=250_001)
    orders = {
        "before": world.order(org, sent - US),
        "at mailing": world.order(org, sent),
        "last instant": world.order(org, sent + 30 * DAY - US),
        "at end": world.order(org, sent + 30 * DAY),
    }
    for order_id in orders.values():
        world.insert(
            Attribution,
            order_id=order_id,
            recipient_id=recipient,
            campaign_id=campaign,
            organization_id=org,
            match_type="email",
            revenue_minor=1,
        )

    found = attributions_in_window(world.sessions)

    assert sorted(found.order_ids) == sorted([orders["before"], orders["at end"]])


def test_a_small_run_reads_only_recipients_sharing_a_key(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    by_email = world.recipient(campaign, email_key="e", sent_at=MAILED)
    by_code = world.recipient(campaign, offer_code="CODE9", sent_at=MAILED + DAY)
    world.recipient(campaign, email_key="unrelated", sent_at=MAILED + 2 * DAY)
    held = world.holdout(campaign, created_at=MAILED - DAY, address_key="a")
    world.holdout(campaign, created_at=MAILED - DAY, address_key="elsewhere")
    world.order(org, MAILED + 3 * DAY, email_key="e", address_key="a", codes=[" code9"])

    with world.sessions() as session:
        gateway = gateway_module.AttributionGateway(session)
        small = gateway.load([org], NOW, key_filter_max_orders=1)
        full = gateway.load([org], NOW, key_filter_max_orders=0)

    assert sorted(small.mailed["recipient_id"]) == [by_email, by_code]
    assert small.holdouts["recipient_id"].tolist() == [held]
    # the holdout's mail date still sees every mailing of its campaign since it joined
    assert sorted(small.mailings["mailed_at"]) == sorted(full.mailings["mailed_at"])
    assert len(full.mailed) == 3 and len(full.holdouts) == 2


def test_reattribute_has_the_next_run_examine_every_order_of_the_organization(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    org, other = world.organization(), world.organization()
    campaign = world.campaign(org, window_days=7)
    world.recipient(campaign, email_key="e")
    late = world.order(org, MAILED + 10 * DAY, email_key="e")
    world.order(other, MAILED + DAY, email_key="e")
    run(world)
    assert late not in world.credits()
    with world.sessions() as session:  # the brand lengthens the window afterwards
        session.execute(
            sa.update(Campaign).where(Campaign.id == campaign).values(attribution_window_days=30)
        )
    assert run(world).orders_examined == 0  # nothing changed, as far as the orders go

    monkeypatch.setenv("MAIL_PIPELINE_ENV", "test")
    monkeypatch.setenv("MAIL_PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAIL_PIPELINE_TEST_DATABASE_URL", world.db_url)
    assert main(["reattribute", str(org), "999"]) == 0
    assert capsys.readouterr().out.startswith("1 of 2 organizations had been examined")

    again = run(world)
    assert again.orders_examined == 1  # the organization's one order; not the other's
    assert world.credits()[late].campaign_id == campaign


def test_an_on_demand_run_for_one_organization_leaves_the_others_waiting(world: World) -> None:
    asked, other = world.organization(), world.organization()
    for org in (asked, other):
        campaign = world.campaign(org)
        world.recipient(campaign, email_key=f"buyer-{org}")
        world.order(org, MAILED + DAY, email_key=f"buyer-{org}")

    first = run(world, organization_ids=[asked])
    rest = run(world)

    assert first.orders_examined == 1 and first.responder_matches == 1
    assert rest.orders_examined == 1 and rest.responder_matches == 1
    assert len(world.credits()) == 2
