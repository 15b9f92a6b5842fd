"""The gate before the printer (``domain.sending``) in a real mailing run with the sandbox
printers: a pause set while a batch is mailing stops further printer calls at the next
recipient, daily caps hold across the campaign and the organization, held-back recipients
wait in Proofed with the reason and go on when the pause is lifted or the cap resets; the
mailing stage does not claim what the gate would hold back (SQLite, or PostgreSQL when
MAIL_PIPELINE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import BlocklistEntry, Campaign, Order, Organization
from mail_pipeline.db.sending import SendGate
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.metrics import day_of
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.sending import CAMPAIGN, ORGANIZATION
from mail_pipeline.integrations.printers.base import PostcardRequest, Printer
from mail_pipeline.services.mailing import MailingServices, mail_batch
from mail_pipeline.services.staging import MAILING, stage_batches
from tests.integration.test_pipeline_services import Shop

S = RecipientStatus
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


@pytest.fixture
def shop(db_url: str, tmp_path: Path) -> Shop:
    return Shop(db_url, tmp_path)


class _PausesAfterFirst:
    """A printer that, once it has created its first postcard, has a person pause the
    organization (committed in its own transaction, as the app would)."""

    def __init__(self, printer: Printer, db_url: str, organization_id: int) -> None:
        self._printer = printer
        self._db_url = db_url
        self._organization_id = organization_id
        self.created = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._printer, name)

    def create_postcard(self, request: PostcardRequest) -> Any:
        piece = self._printer.create_postcard(request)
        self.created += 1
        if self.created == 1:
            with unit_of_work(self._db_url) as session:
                session.execute(
                    update(Organization)
                    .where(Organization.id == self._organization_id)
                    .values(mailing_paused_at=NOW, mailing_paused_reason="invoice overdue")
                )
        return piece


def _name(shop: Shop, campaign_id: int) -> str:
    with unit_of_work(shop.db_url) as session:
        return session.get_one(Campaign, campaign_id).name


def _with_printer(services: MailingServices, name: str, printer: Any) -> MailingServices:
    services.printers.printers[name] = printer
    return services


def test_a_pause_during_a_run_stops_printing_at_the_next_recipient(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 5, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
    services = shop.mailing()
    pausing = _PausesAfterFirst(services.printers.printers["lob"], shop.db_url, org)

    result = mail_batch(
        shop.sessions, batch, _with_printer(services, "lob", pausing), concurrency=1
    )

    assert pausing.created == 1 and shop.printed()["lob"] == 1
    assert result.sent == 1 and len(result.held_back) == 4
    rows = shop.rows(ids)
    held = [r for r in rows.values() if r.status is S.PROOFED]
    assert len(held) == 4
    assert {r.status_reason for r in held} == {
        "held back: the organization's mailing is paused (invoice overdue)"
    }
    assert all(r.claimed_by_run is None for r in held)
    # nothing more is claimed while it is paused; lifting the pause lets them go
    assert stage_batches(shop.sessions, MAILING, free_slots=2, batch_size=50) == []
    with unit_of_work(shop.db_url) as session:
        session.execute(update(Organization).values(mailing_paused_at=None))
    (claim,) = stage_batches(shop.sessions, MAILING, free_slots=2, batch_size=50)
    again = mail_batch(shop.sessions, claim.batch_id, shop.mailing())
    assert again.sent == 4 and shop.printed()["lob"] == 5
    assert {r.status_reason for r in shop.rows(ids).values()} == {None}


def test_a_paused_campaign_is_held_back_at_the_printer_too(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 2, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
    with unit_of_work(shop.db_url) as session:  # paused after the claim, before the run
        session.execute(update(Campaign).values(status="Paused"))

    result = mail_batch(shop.sessions, batch, shop.mailing())

    assert result.sent == 0 and shop.printed()["lob"] == 0
    assert set(result.held_back.values()) == {
        f"held back: campaign {_name(shop, campaign)!r} is Paused"
    }
    assert shop.status(ids) == {rid: S.PROOFED for rid in ids}


def test_daily_caps_hold_for_the_campaign_and_reset_the_next_day(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    with unit_of_work(shop.db_url) as session:
        session.execute(update(Campaign).values(daily_send_cap=3))
    ids = shop.recipients(campaign, 5, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)

    result = mail_batch(shop.sessions, batch, shop.mailing(), concurrency=4)

    assert result.sent == 3 and shop.printed()["lob"] == 3
    assert len(result.held_back) == 2
    assert set(result.held_back.values()) == {
        f"held back: campaign {_name(shop, campaign)!r} reached its daily cap of 3 postcards "
        "(it resets at midnight New York)"
    }
    today = day_of(datetime.now(UTC))
    with unit_of_work(shop.db_url) as session:
        assert SendGate(session).used(CAMPAIGN, campaign, today) == 3
    # today the mailing stage leaves them where they are ...
    assert stage_batches(shop.sessions, MAILING, free_slots=2, batch_size=50) == []
    # ... tomorrow the cap has room again
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    again = mail_batch(
        shop.sessions,
        shop.claim(S.PROOFED, S.SENDING_STAGED, campaign),
        shop.mailing(),
        clock=lambda: tomorrow,
    )
    assert again.sent == 2
    assert set(shop.status(ids).values()) == {S.SENT}


def test_the_organization_cap_counts_every_campaign_and_a_refusal_gives_its_place_back(
    shop: Shop,
) -> None:
    org = shop.organization(daily_send_cap=2)
    first, second = shop.campaign(org), shop.campaign(org)
    (refused,) = shop.recipients(
        first,
        1,
        S.PROOFED,
        address1="1200 Avenue of the Americas North Tower",
        address2="Suite 4500 East Wing",
    )
    fine = shop.recipients(first, 1, S.PROOFED)
    later = shop.recipients(second, 2, S.PROOFED)

    mail_batch(shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, first), shop.mailing())
    result = mail_batch(
        shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, second), shop.mailing()
    )

    # the refused postcard was never printed: its place went to the second campaign
    assert shop.status([refused]) == {refused: S.ERROR}
    assert result.sent == 1 and len(result.held_back) == 1
    with unit_of_work(shop.db_url) as session:
        org_name = session.get_one(Organization, org).name
    assert set(result.held_back.values()) == {
        f"held back: organization {org_name!r} reached its daily cap of 2 postcards "
        "(it resets at midnight New York)"
    }
    assert sorted(shop.status([*fine, *later]).values()) == sorted([S.SENT, S.SENT, S.PROOFED])
    with unit_of_work(shop.db_url) as session:
        assert SendGate(session).used(ORGANIZATION, org, day_of(datetime.now(UTC))) == 2


def test_a_suppression_that_applies_since_the_sync_skips_at_the_printer(shop: Shop) -> None:
    org = shop.organization(recent_purchase_days=14, min_days_between_mailings=30)
    campaign, other = shop.campaign(org), shop.campaign(org)
    with unit_of_work(shop.db_url) as session:
        session.execute(
            update(Campaign).where(Campaign.id == campaign).values(allowed_postal_prefixes=["100"])
        )
    (buyer,) = shop.recipients(campaign, 1, S.PROOFED, email_key="buyer@example.com")
    (blocked,) = shop.recipients(campaign, 1, S.PROOFED, email_key="blocked@example.com")
    (fine,) = shop.recipients(campaign, 1, S.PROOFED, email_key="fine@example.com")
    (far,) = shop.recipients(
        campaign, 1, S.PROOFED, email_key="far@example.com", postal_code="11201"
    )
    (twice,) = shop.recipients(campaign, 1, S.PROOFED, email_key="twice@example.com")
    now = datetime.now(UTC)
    shop.recipients(
        other, 1, S.SENT, email_key="twice@example.com", sent_at=now - timedelta(days=2)
    )
    with unit_of_work(shop.db_url) as session:
        session.add(
            Order(
                organization_id=org,
                source=IntegrationKind.SHOPIFY,
                external_order_id="o-1",
                email_key="buyer@example.com",
                total_minor=4200,
                currency="USD",
                ordered_at=now - timedelta(days=3),
            )
        )
        session.add(BlocklistEntry(organization_id=org, kind="email", value="blocked@example.com"))

    result = mail_batch(
        shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, campaign), shop.mailing()
    )

    assert result.sent == 1 and shop.printed()["lob"] == 1
    rows = shop.rows([buyer, blocked, fine, far, twice])
    assert rows[fine].status is S.SENT
    reasons = {rid: (rows[rid].status, rows[rid].status_reason) for rid in result.suppressed}
    assert reasons == {
        buyer: (
            S.SKIPPED,
            f"ordered on {now - timedelta(days=3):%Y-%m-%d}: the organization does not mail "
            "a buyer for 14 days after an order",
        ),
        blocked: (S.SKIPPED, "email address is on the do-not-mail list"),
        far: (S.SKIPPED, "outside the campaign's postal areas (11201; it mails 100)"),
        twice: (
            S.SKIPPED,
            f"mailed by campaign {_name(shop, other)!r} on {now - timedelta(days=2):%Y-%m-%d}: "
            "the organization mails a person at most once every 30 days",
        ),
    }
    assert set(shop.mailpieces()) == {fine}, "no mailpiece row for a suppressed recipient"


def test_a_chunks_suppressions_judge_each_recipient_by_its_own_organization_and_window(
    shop: Shop,
) -> None:
    """The mailing chunk asks the gate once for all its recipients: a row of one
    organization never suppresses a recipient of another, each is judged by its own
    organization's days, a recipient's own mailing does not count against it, and the
    answer for the chunk is the answer for each recipient asked alone."""
    from mail_pipeline.db.models import Recipient

    now = datetime.now(UTC)
    strict = shop.organization(min_days_between_mailings=30, recent_purchase_days=14)
    lenient = shop.organization(min_days_between_mailings=10, recent_purchase_days=2)
    a, a_other = shop.campaign(strict), shop.campaign(strict)
    b, b_other = shop.campaign(lenient), shop.campaign(lenient)
    for campaign in (a_other, b_other):  # mailed 20 days ago in both organizations
        shop.recipients(campaign, 1, S.SENT, email_key="mailed@x", sent_at=now - timedelta(days=20))
    # mailed 3 days ago and ordered yesterday, in the strict organization only
    shop.recipients(a_other, 1, S.SENT, email_key="recent@x", sent_at=now - timedelta(days=3))
    with unit_of_work(shop.db_url) as session:
        session.add(
            Order(
                organization_id=strict,
                source=IntegrationKind.SHOPIFY,
                external_order_id="o-strict-only",
                address_key="US|10017|3 strict buyer",
                total_minor=100,
                currency="USD",
                ordered_at=now - timedelta(days=1),
            )
        )
        for org in (strict, lenient):
            session.add(
                Order(
                    organization_id=org,
                    source=IntegrationKind.SHOPIFY,
                    external_order_id=f"o-{org}",
                    address_key="US|10017|1 buyer st",
                    total_minor=100,
                    currency="USD",
                    ordered_at=now - timedelta(days=5),
                )
            )
        session.add(
            BlocklistEntry(organization_id=None, kind="address", value="US|10017|1 anywhere")
        )
        session.add(BlocklistEntry(organization_id=strict, kind="email", value="strict-only@x"))
        session.add(BlocklistEntry(organization_id=strict, kind="address", value="US|10017|2 both"))
    people = {
        "mailed": {"email_key": "mailed@x"},
        "buyer": {"email_key": "buyer@x", "address_key": "US|10017|1 buyer st"},
        "anywhere": {"email_key": "anywhere@x", "address_key": "US|10017|1 anywhere"},
        "strict-only": {"email_key": "strict-only@x"},
        "both": {"email_key": "strict-only@x", "address_key": "US|10017|2 both"},
        "fine": {"email_key": "fine@x"},
        "recent": {"email_key": "recent@x"},
        "strict buyer": {"email_key": "sb@x", "address_key": "US|10017|3 strict buyer"},
    }
    ids = {
        (org_name, who): shop.recipients(campaign, 1, S.PROOFED, **keys)[0]
        for org_name, campaign in (("strict", a), ("lenient", b))
        for who, keys in people.items()
    }
    (self_mailed,) = shop.recipients(a, 1, S.SENT, email_key="self@x", sent_at=now)

    with unit_of_work(shop.db_url) as session:
        recipients = [session.get_one(Recipient, rid) for rid in [*ids.values(), self_mailed]]
        gate = SendGate(session)
        together = gate.suppressions(recipients, now)
        alone = {
            r.id: reason for r in recipients if (reason := gate.suppression(r, now)) is not None
        }

    assert together == alone
    by_name = {key: together.get(rid) for key, rid in ids.items()}
    assert (
        by_name[("strict", "mailed")] is not None
        and "once every 30 days" in by_name[("strict", "mailed")]
    )
    assert by_name[("lenient", "mailed")] is None, "20 days ago is outside its 10 days"
    assert (
        by_name[("strict", "buyer")] is not None and "for 14 days" in by_name[("strict", "buyer")]
    )
    assert by_name[("lenient", "buyer")] is None, "5 days ago is outside its 2 days"
    assert (
        by_name[("strict", "anywhere")]
        == by_name[("lenient", "anywhere")]
        == ("postal address is on the do-not-mail list")
    )
    assert by_name[("strict", "strict-only")] == "email address is on the do-not-mail list"
    assert by_name[("lenient", "strict-only")] is None
    assert by_name[("strict", "both")] == "email address is on the do-not-mail list"
    assert by_name[("lenient", "both")] is None
    assert by_name[("strict", "fine")] is None and by_name[("lenient", "fine")] is None
    assert by_name[("strict", "recent")] is not None
    assert by_name[("lenient", "recent")] is None, "mailed by another organization"
    assert by_name[("strict", "strict buyer")] is not None
    assert by_name[("lenient", "strict buyer")] is None, "a buyer of another organization"
    assert self_mailed not in together, "its own mailing does not count against it"
