"""What the sync reads for the suppressions (``db.campaigns``): people other campaigns hold,
mailed and recently mailed, and recent buyers (SQLite, or PostgreSQL when
MAIL_PIPELINE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mail_pipeline.db.campaigns import CampaignGateway
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, Order
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus as S

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_mailed_people_are_judged_by_the_days_between_mailings(
    db_url: str,
    make_campaign: Callable[..., tuple[int, int]],
    add_recipients: Callable[..., list[int]],
) -> None:
    org, syncing = make_campaign()
    with unit_of_work(db_url) as session:
        other = Campaign(organization_id=org, name="Win-back", campaign_mode="automated")
        session.add(other)
        session.flush()
        other_id = other.id
    add_recipients(other_id, 1, S.SENT, email_key="recent", sent_at=NOW - timedelta(days=5))
    add_recipients(other_id, 1, S.RECEIVED, email_key="old", sent_at=NOW - timedelta(days=90))
    add_recipients(other_id, 1, S.PROOFED, email_key="waiting")
    add_recipients(other_id, 1, S.SKIPPED, email_key="skipped")

    with unit_of_work(db_url) as session:
        gateway = CampaignGateway(session)
        held_forever, _ = gateway.people_in_other_campaigns(org, syncing)
        held_unmailed, _ = gateway.people_in_other_campaigns(org, syncing, mailed_ones=False)
        recent = gateway.recently_mailed(org, NOW - timedelta(days=30))

    # without the rule a person another campaign mailed is never mailed again ...
    assert set(held_forever) == {"recent", "old", "waiting"}
    # ... with it, only those still to be mailed are held, and the recent mailing counts
    assert set(held_unmailed) == {"waiting"}
    assert recent == {"recent": ("Win-back", NOW - timedelta(days=5))}


def test_recent_buyers_are_their_orders_that_count(
    db_url: str, make_campaign: Callable[..., tuple[int, int]]
) -> None:
    org, _ = make_campaign()
    orders = [
        ("o1", "ann", None, NOW - timedelta(days=3), False),
        ("o2", "ann", None, NOW - timedelta(days=1), False),
        ("o3", None, "US|10017|12 main st", NOW - timedelta(days=2), False),
        ("o4", "bob", None, NOW - timedelta(days=2), True),  # cancelled
        ("o5", "cy", None, NOW - timedelta(days=40), False),  # too long ago
    ]
    with unit_of_work(db_url) as session:
        for external, email, address, when, cancelled in orders:
            session.add(
                Order(
                    organization_id=org,
                    source=IntegrationKind.SHOPIFY,
                    external_order_id=external,
                    email_key=email,
                    address_key=address,
                    total_minor=1000,
                    currency="USD",
                    ordered_at=when,
                    cancelled=cancelled,
                )
            )
    with unit_of_work(db_url) as session:
        buyers = CampaignGateway(session).recent_buyers(org, NOW - timedelta(days=14))
    assert buyers == {
        "ann": NOW - timedelta(days=1),
        "US|10017|12 main st": NOW - timedelta(days=2),
    }
