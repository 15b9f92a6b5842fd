"""Proofing, mailing and staging services with the real sandboxes (renderer, image host,
printers, Stripe, Klaviyo, local queues), on SQLite and (with MAIL_PIPELINE_TEST_DATABASE_URL)
PostgreSQL. Every sandbox runs without latency."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from sqlalchemy import insert, select

from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.models import (
    Campaign,
    Mailpiece,
    Organization,
    OrganizationIntegration,
    Recipient,
    SideEffect,
)
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    IntegrationKind,
    OrganizationStatus,
)
from mail_pipeline.domain.mailpieces import MailpieceStatus
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.billing.sandbox import SANDBOX_API_KEY as STRIPE_KEY
from mail_pipeline.integrations.billing.sandbox import StripeSandbox, StripeSandboxData
from mail_pipeline.integrations.billing.stripe_meter import StripeMeter
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.images.cloudflare import CloudflareImages
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox, LocalImageUrl
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData
from mail_pipeline.integrations.printers.sandbox import sandbox_printers, sandbox_transports
from mail_pipeline.integrations.printers.strategy import DEFAULT_ROUTES, PrinterStrategy
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.billing import SandboxBilling
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.resources.images import SandboxImageHost
from mail_pipeline.resources.printing import SandboxPrinters
from mail_pipeline.resources.queues import LocalQueues
from mail_pipeline.resources.rendering import SandboxRendering
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.services.mailing import MailingServices, mail_batch
from mail_pipeline.services.proofing import proof_batch
from mail_pipeline.services.recovery import RecoveryResult, recover_expired_claims
from mail_pipeline.services.staging import (
    MAILING,
    PROOFING,
    Continuation,
    keep_claiming,
    stage_batches,
)

S = RecipientStatus
C = CampaignStatus
NO_SLEEP = lambda _seconds: None  # noqa: E731
PROOF_KEY = "test-proof-id-key"
DESIGN = {
    "template": "classic",
    "brand_name": "Juniper Trail",
    "headline": "{first_name|Friend}, the trail misses you",
    "body": "Bring this card back.",
    "offer_code": "TRAIL20",
    "size": "4x6",
}


@dataclass
class Shop:
    db_url: str
    tmp: Path
    _n: Iterator[int] = field(default_factory=lambda: iter(range(1, 10_000)))

    @property
    def sessions(self) -> SessionFactory:
        return functools.partial(unit_of_work, self.db_url)

    @property
    def sandbox_path(self) -> str:
        return str(self.tmp / "sandbox.sqlite")

    @property
    def image_dir(self) -> Path:
        return self.tmp / "images"

    def organization(self, country: str = "US", **fields: Any) -> int:
        n = next(self._n)
        with unit_of_work(self.db_url) as session:
            org = Organization(
                name=f"Brand {n}",
                slug=f"brand-{n}",
                country=country,
                stripe_customer_id=f"cus_brand{n}",
                **fields,
            )
            session.add(org)
            session.flush()
            session.add(
                OrganizationIntegration(
                    organization_id=org.id,
                    kind=IntegrationKind.KLAVIYO,
                    secret_ref=f"KLAVIYO_API_KEY_{n}",
                )
            )
            return org.id

    def campaign(
        self, organization_id: int, status: CampaignStatus = C.ACTIVE, design: Any = None
    ) -> int:
        with unit_of_work(self.db_url) as session:
            campaign = Campaign(
                organization_id=organization_id,
                name=f"Campaign {next(self._n)}",
                campaign_mode=CampaignMode.AUTOMATED,
                status=status,
                design=DESIGN if design is None else design,
            )
            session.add(campaign)
            session.flush()
            return campaign.id

    def recipients(
        self, campaign_id: int, n: int, status: RecipientStatus = S.PENDING, **fields: Any
    ) -> list[int]:
        with unit_of_work(self.db_url) as session:
            org_id = session.get_one(Campaign, campaign_id).organization_id
            base = {
                "organization_id": org_id,
                "campaign_id": campaign_id,
                "status": status,
                "first_name": "Ann",
                "last_name": "Lee",
                "address1": "12 Main Street",
                "city": "New York",
                "region": "NY",
                "postal_code": "10017",
                "country": "US",
            }
            if status is S.PROOFED:
                base |= {
                    "proof_front_url": "https://imagedelivery.example/h/front/print",
                    "proof_back_url": "https://imagedelivery.example/h/back/print",
                }
            rows = []
            for _ in range(n):
                k = next(self._n)
                row = {
                    **base,
                    "email": f"person{k}@example.com",
                    "external_profile_id": f"PROFILE{k:05d}",
                    **fields,
                }
                if status is S.PROOFED and "proof_image_ids" not in fields:
                    row["proof_image_ids"] = [f"img-{k}-front", f"img-{k}-back"]
                rows.append(row)
            return sorted(session.scalars(insert(Recipient).returning(Recipient.id), rows))

    def claim(
        self, from_status: RecipientStatus, to_status: RecipientStatus, campaign_id: int
    ) -> str:
        with unit_of_work(self.db_url) as session:
            claim = RecipientGateway(session).claim_batch(
                from_status, to_status, 100, campaign_id=campaign_id
            )
        assert claim.ids
        return claim.batch_id

    def recover(self, after: timedelta = timedelta(minutes=10)) -> RecoveryResult:
        """What the recovery sensor does, ``after`` from now, with no run queued."""
        return recover_expired_claims(
            self.sessions, lambda _batch: False, now=datetime.now(UTC) + after
        )

    def rows(self, ids: list[int]) -> dict[int, Recipient]:
        with unit_of_work(self.db_url) as session:
            return {
                r.id: r for r in session.scalars(select(Recipient).where(Recipient.id.in_(ids)))
            }

    def status(self, ids: list[int]) -> dict[int, RecipientStatus]:
        return {rid: r.status for rid, r in self.rows(ids).items()}

    def mailpieces(self) -> dict[int, Mailpiece]:
        with unit_of_work(self.db_url) as session:
            return {m.recipient_id: m for m in session.scalars(select(Mailpiece))}

    # -- the sandboxes ------------------------------------------------------------------
    def renderer(self):  # type: ignore[no-untyped-def]
        return SandboxRendering(
            sandbox_path=self.sandbox_path, fallback_order=["gateway", "backup"]
        ).renderer()

    def images(self, failure_rate: float = 0.0) -> CloudflareImages:
        if not failure_rate:
            return SandboxImageHost(
                sandbox_path=self.sandbox_path, image_dir=str(self.image_dir)
            ).client()
        sandbox = CloudflareImagesSandbox(
            shared_store(self.sandbox_path),
            SandboxBehaviour(failure_rate=failure_rate),
            storage_dir=self.image_dir,
        )
        return CloudflareImages(
            sandbox.account_id,
            sandbox.api_token,
            transport=sandbox,
            delivery_url=LocalImageUrl(self.image_dir),
            sleep=NO_SLEEP,
        )

    def mailing(self, *, billing_failure_rate: float = 0.0) -> MailingServices:
        if billing_failure_rate:
            billing = StripeMeter(
                STRIPE_KEY,
                transport=StripeSandbox(
                    shared_store(self.sandbox_path),
                    SandboxBehaviour(failure_rate=billing_failure_rate),
                ),
                sleep=NO_SLEEP,
            )
        else:
            billing = SandboxBilling(sandbox_path=self.sandbox_path).meter()
        printers = SandboxPrinters(sandbox_path=self.sandbox_path)
        return MailingServices(
            printers=printers.strategy(),
            billing=billing,
            cdp=SandboxCdp(sandbox_path=self.sandbox_path),
            image_deletions=LocalQueues(
                path=str(self.tmp / "queues.sqlite")
            ).image_deletion_queue(),
        )

    def printed(self) -> dict[str, int]:
        transports = sandbox_transports(shared_store(self.sandbox_path))
        return {name: t.created_count() for name, t in transports.items()}

    def meter_events(self) -> list[dict[str, Any]]:
        return StripeSandboxData(shared_store(self.sandbox_path)).meter_events()


@pytest.fixture
def shop(db_url: str, tmp_path: Path) -> Shop:
    return Shop(db_url, tmp_path)


# -- proofing -------------------------------------------------------------------------------


def test_a_bad_design_errors_its_recipients_and_the_rest_of_the_batch_is_proofed(
    shop: Shop,
) -> None:
    org = shop.organization()
    good = shop.campaign(org)
    bad = shop.campaign(org, design={**DESIGN, "headine": "typo"})
    good_ids = shop.recipients(good, 2)
    bad_ids = shop.recipients(bad, 1)
    with unit_of_work(shop.db_url) as session:
        claim = RecipientGateway(session).claim_batch(
            S.PENDING, S.PROOFING_STAGED, 10, organization_id=org
        )
    assert claim.ids == good_ids + bad_ids

    result = proof_batch(
        shop.sessions,
        claim.batch_id,
        shop.renderer(),
        shop.images(),
        id_key=PROOF_KEY,
        run_id="run-1",
    )

    rows = shop.rows(good_ids + bad_ids)
    assert (result.taken, result.proofed, result.released) == (3, 2, 0)
    for rid in good_ids:
        row = rows[rid]
        assert row.status is S.PROOFED
        assert row.proof_front_url and row.proof_back_url and len(row.proof_image_ids or []) == 2
        assert row.proof_renderer in ("gateway", "backup") and row.proofed_at is not None
        assert row.claimed_by_run is None, "leaving a claimed state ends the claim"
        assert Path(row.proof_front_url.removeprefix("file://")).is_file()
    (bad_id,) = bad_ids
    reason = "cannot proof this recipient: the postcard design is invalid: unknown field 'headine'"
    assert (rows[bad_id].status, rows[bad_id].status_reason) == (S.ERROR, reason)
    assert rows[bad_id].error_from_status is S.PROOFING
    assert result.errors == {bad_id: reason}


def test_an_image_host_outage_releases_the_batch_then_gives_up_after_max_attempts(
    shop: Shop,
) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 2)
    renderer = shop.renderer()

    first = proof_batch(
        shop.sessions,
        shop.claim(S.PENDING, S.PROOFING_STAGED, campaign),
        renderer,
        shop.images(failure_rate=1.0),
        id_key=PROOF_KEY,
        max_attempts=2,
    )
    released = shop.rows(ids)

    assert (first.proofed, first.released, first.errors) == (0, 2, {})
    assert {r.status for r in released.values()} == {S.PENDING}
    for row in released.values():
        assert (row.status_reason or "").startswith("will retry: cloudflare")
        assert "503" in (row.status_reason or "")
        assert row.attempts == 1

    second = proof_batch(
        shop.sessions,
        shop.claim(S.PENDING, S.PROOFING_STAGED, campaign),
        renderer,
        shop.images(failure_rate=1.0),
        id_key=PROOF_KEY,
        max_attempts=2,
    )
    failed = shop.rows(ids)

    assert (second.proofed, second.released, set(second.errors)) == (0, 0, set(ids))
    for row in failed.values():
        assert row.status is S.ERROR and row.attempts == 2
        assert (row.status_reason or "").startswith("gave up after 2 attempts: cloudflare")


def test_a_proofing_run_finishes_what_its_batch_left_in_proofing(shop: Shop) -> None:
    """An op retried inside its run finds its batch already in Proofing (the first attempt
    died mid-way): it still holds the batch, and finishes it."""
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 2)
    batch = shop.claim(S.PENDING, S.PROOFING_STAGED, campaign)
    with unit_of_work(shop.db_url) as session:
        RecipientGateway(session).start_batch(batch, S.PROOFING_STAGED, S.PROOFING, "run-1")

    result = proof_batch(
        shop.sessions, batch, shop.renderer(), shop.images(), id_key=PROOF_KEY, run_id="run-1"
    )

    assert result.proofed == 2
    assert shop.status(ids) == dict.fromkeys(ids, S.PROOFED)


# -- mailing --------------------------------------------------------------------------------


def test_a_printer_refusal_errors_that_recipient_and_the_others_are_sent(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    fine = shop.recipients(campaign, 2, S.PROOFED)
    (long_address,) = shop.recipients(
        campaign,
        1,
        S.PROOFED,
        address1="1200 Avenue of the Americas North Tower",
        address2="Suite 4500 East Wing",
    )
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)

    result = mail_batch(shop.sessions, batch, shop.mailing(), run_id="run-1")

    rows = shop.rows([*fine, long_address])
    assert (result.taken, result.sent, result.created) == (3, 2, 2)
    assert {rows[rid].status for rid in fine} == {S.SENT}
    refused = rows[long_address]
    assert refused.status is S.ERROR and refused.error_from_status is S.SENDING
    reason = refused.status_reason or ""
    assert reason.startswith("lob refused the postcard: ")
    assert "address_line1 and address_line2 together must be 50 characters or fewer" in reason
    assert "ADDRESS_LENGTH_EXCEEDS_LIMIT" in reason
    assert result.errors == {long_address: reason}
    pieces = shop.mailpieces()
    assert pieces[long_address].status is MailpieceStatus.FAILED
    assert pieces[long_address].provider_piece_id is None
    assert {pieces[rid].status for rid in fine} == {MailpieceStatus.CREATED}
    assert shop.printed()["lob"] == 2
    assert len(shop.meter_events()) == 2


@pytest.mark.parametrize(
    ("country", "says"),
    [
        ("FR", "no printer mails to FR"),
        ("ZZ", "unknown country (not an ISO 3166 country name or code)"),
    ],
)
def test_a_recipient_no_printer_serves_is_an_error(shop: Shop, country: str, says: str) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    (abroad,) = shop.recipients(campaign, 1, S.PROOFED, country=country, region=None)
    (home,) = shop.recipients(campaign, 1, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)

    result = mail_batch(shop.sessions, batch, shop.mailing())

    rows = shop.rows([abroad, home])
    assert rows[home].status is S.SENT
    assert rows[abroad].status is S.ERROR
    assert rows[abroad].status_reason == f"cannot mail this recipient: {says}"
    assert abroad not in shop.mailpieces(), "nothing was asked of any printer"
    assert result.errors == {abroad: f"cannot mail this recipient: {says}"}


def test_an_organizations_printer_preference_is_honoured(shop: Shop) -> None:
    preferring = shop.organization(printer_preference="intelliprint")
    default = shop.organization()
    ids_pref = shop.recipients(shop.campaign(preferring), 2, S.PROOFED)
    default_campaign = shop.campaign(default)
    ids_default = shop.recipients(default_campaign, 1, S.PROOFED)
    services = shop.mailing()

    with unit_of_work(shop.db_url) as session:
        pref_batch = RecipientGateway(session).claim_batch(
            S.PROOFED, S.SENDING_STAGED, 10, organization_id=preferring
        )
    first = mail_batch(shop.sessions, pref_batch.batch_id, services)
    second = mail_batch(
        shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, default_campaign), services
    )

    pieces = shop.mailpieces()
    assert first.printers == Counter({"intelliprint": 2})
    assert second.printers == Counter({"lob": 1})
    assert {pieces[rid].printer for rid in ids_pref} == {"intelliprint"}
    assert pieces[ids_default[0]].printer == "lob"
    assert shop.printed() == {"lob": 1, "stannp": 0, "intelliprint": 2}
    assert shop.status(ids_pref + ids_default) == dict.fromkeys(ids_pref + ids_default, S.SENT)


def test_a_billing_outage_defers_and_a_resumed_run_never_prints_twice(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 3, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)

    outage = mail_batch(
        shop.sessions, batch, shop.mailing(billing_failure_rate=1.0), run_id="outage-run"
    )
    outage_holder = "outage-run"

    assert (outage.sent, outage.created, set(outage.deferred)) == (0, 3, set(ids))
    assert all(
        reason.startswith("billing_meter will be retried: ") for reason in outage.deferred.values()
    )
    assert shop.status(ids) == dict.fromkeys(ids, S.SENDING)
    pieces = shop.mailpieces()
    assert {pieces[rid].status for rid in ids} == {MailpieceStatus.CREATED}
    assert all(pieces[rid].provider_piece_id for rid in ids)
    assert shop.printed()["lob"] == 3 and shop.meter_events() == []

    too_soon = shop.recover(after=timedelta(seconds=30))
    assert too_soon.returned == Counter(), "the deferred batch waits before it is resumed"
    recovered = shop.recover()
    assert recovered.returned == Counter({"Sending": 3})
    assert recovered.mailing_batches == [(batch, org)]
    assert recovered.failed_runs == {outage_holder: ANY}
    resumed = mail_batch(shop.sessions, batch, shop.mailing())

    assert (resumed.sent, resumed.created, resumed.deferred) == (3, 0, {})
    assert shop.status(ids) == dict.fromkeys(ids, S.SENT)
    assert shop.printed()["lob"] == 3, "no second postcard"
    assert {p.provider_piece_id for p in shop.mailpieces().values()} == {
        pieces[rid].provider_piece_id for rid in ids
    }
    events = shop.meter_events()
    assert sorted(e["identifier"] for e in events) == sorted(
        f"billing_meter-recipient-{rid}" for rid in ids
    )
    assert {e["payload"]["stripe_customer_id"] for e in events} == {"cus_brand1"}
    klaviyo = KlaviyoSandboxData(shared_store(shop.sandbox_path)).events("Postcard Sent")
    assert len(klaviyo) == 3
    with unit_of_work(shop.db_url) as session:
        effects = Counter(
            (kind, status)
            for kind, status in session.execute(select(SideEffect.kind, SideEffect.status))
        )
    assert effects == Counter(
        {("billing_meter", "done"): 3, ("cdp_event", "done"): 3, ("image_deletion", "done"): 3}
    )


def test_a_lost_printer_response_is_reconciled_not_printed_again(shop: Shop) -> None:
    """Lob took the postcard but its answer never came back (every time): the recipient waits
    in Sending; the resumed run asks Lob about the key and finds the piece."""
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 2, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
    healthy = shop.mailing()
    lossy = sandbox_printers(
        shared_store(shop.sandbox_path),
        SandboxBehaviour(lost_response_rate=1.0),
        retry=RetryPolicy(max_attempts=2),
        sleep=NO_SLEEP,
    )
    flaky = replace(healthy, printers=PrinterStrategy(DEFAULT_ROUTES, lossy))

    lost = mail_batch(shop.sessions, batch, flaky)

    assert (lost.sent, set(lost.deferred)) == (0, set(ids))
    assert all("lob" in reason and "timed out" in reason for reason in lost.deferred.values())
    assert shop.status(ids) == dict.fromkeys(ids, S.SENDING)
    assert {m.provider_piece_id for m in shop.mailpieces().values()} == {None}
    assert shop.printed()["lob"] == 2, "Lob did the work; only the answers were lost"

    assert shop.recover().mailing_batches == [(batch, org)]
    resumed = mail_batch(shop.sessions, batch, healthy)

    assert (resumed.sent, resumed.reconciled, resumed.created) == (2, 2, 0)
    assert shop.printed()["lob"] == 2
    assert all(m.provider_piece_id for m in shop.mailpieces().values())
    assert len(shop.meter_events()) == 2


def test_an_operator_retry_of_a_refused_recipient_mails_it_once(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    (rid,) = shop.recipients(
        campaign,
        1,
        S.PROOFED,
        address1="1200 Avenue of the Americas North Tower",
        address2="Suite 4500 East Wing",
    )
    services = shop.mailing()
    mail_batch(shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, campaign), services)
    assert shop.status([rid]) == {rid: S.ERROR}

    with unit_of_work(shop.db_url) as session:
        assert RecipientGateway(session).transition(
            rid,
            S.ERROR,
            S.PROOFED,
            values={"address1": "1200 6th Ave", "address2": "Ste 4500", "status_reason": None},
        )
    retried = mail_batch(shop.sessions, shop.claim(S.PROOFED, S.SENDING_STAGED, campaign), services)

    assert retried.sent == 1 and shop.status([rid]) == {rid: S.SENT}
    assert shop.printed()["lob"] == 1
    piece = shop.mailpieces()[rid]
    assert piece.status is MailpieceStatus.CREATED and piece.provider_piece_id


def test_mailing_a_batch_twice_mails_nobody_twice(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 2, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
    services = shop.mailing()

    first = mail_batch(shop.sessions, batch, services)
    again = mail_batch(shop.sessions, batch, services)

    assert first.sent == 2 and again.taken == 0
    assert shop.status(ids) == dict.fromkeys(ids, S.SENT)
    assert shop.printed()["lob"] == 2 and len(shop.meter_events()) == 2


# -- staging --------------------------------------------------------------------------------


def test_mailing_staging_takes_active_campaigns_only(shop: Shop) -> None:
    org = shop.organization()
    active = shop.campaign(org, C.ACTIVE)
    paused = shop.campaign(org, C.PAUSED)
    scheduled = shop.campaign(org, C.PENDING)
    active_ids = shop.recipients(active, 2, S.PROOFED)
    waiting = shop.recipients(paused, 2, S.PROOFED) + shop.recipients(scheduled, 1, S.PROOFED)

    claims = stage_batches(shop.sessions, MAILING, free_slots=5, batch_size=50)

    assert [c.ids for c in claims] == [active_ids]
    assert shop.status(active_ids) == dict.fromkeys(active_ids, S.SENDING_STAGED)
    assert shop.status(waiting) == dict.fromkeys(waiting, S.PROOFED)


def test_proofing_staging_takes_scheduled_and_active_campaigns_of_active_orgs(
    shop: Shop,
) -> None:
    org = shop.organization()
    churned = shop.organization(status=OrganizationStatus.CHURNED)
    taken = shop.recipients(shop.campaign(org, C.PENDING), 1) + shop.recipients(
        shop.campaign(org, C.ACTIVE), 1
    )
    left = (
        shop.recipients(shop.campaign(org, C.PAUSED), 1)
        + shop.recipients(shop.campaign(org, C.COMPLETED), 1)
        + shop.recipients(shop.campaign(churned, C.ACTIVE), 1)
    )

    claims = stage_batches(shop.sessions, PROOFING, free_slots=5, batch_size=50)

    assert [c.ids for c in claims] == [taken]
    assert shop.status(left) == dict.fromkeys(left, S.PENDING)


def test_one_organizations_backlog_fills_every_free_slot(shop: Shop) -> None:
    busy, small = shop.organization(), shop.organization()
    backlog = shop.recipients(shop.campaign(busy), 7, S.PROOFED)
    few = shop.recipients(shop.campaign(small), 1, S.PROOFED)

    claims = stage_batches(shop.sessions, MAILING, free_slots=4, batch_size=2)

    # busy, small (its last), then busy again while slots remain: 4 batches, 7 recipients.
    assert [(c.recipients[0].organization_id, c.ids) for c in claims] == [
        (busy, backlog[0:2]),
        (small, few),
        (busy, backlog[2:4]),
        (busy, backlog[4:6]),
    ]
    assert shop.status(backlog[6:]) == {backlog[6]: S.PROOFED}
    # A backlog smaller than the slots stops when it is empty (its batch came back short).
    assert [c.ids for c in stage_batches(shop.sessions, MAILING, free_slots=9, batch_size=2)] == [
        backlog[6:]
    ]


def test_staging_takes_turns_between_organizations(shop: Shop) -> None:
    orgs = [shop.organization() for _ in range(3)]
    by_org = {org: shop.recipients(shop.campaign(org), 4, S.PROOFED) for org in orgs}

    def stage(free_slots: int, after: int | None) -> list[tuple[int, list[int]]]:
        claims = stage_batches(
            shop.sessions, MAILING, free_slots=free_slots, batch_size=1, after_organization=after
        )
        return [(c.recipients[0].organization_id, c.ids) for c in claims]

    a, b, c = orgs
    assert stage(1, None) == [(a, by_org[a][:1])]
    assert stage(1, a) == [(b, by_org[b][:1])]
    assert stage(2, b) == [(c, by_org[c][:1]), (a, by_org[a][1:2])]
    # Every turn's batch came back full, so the turns go round again while slots remain.
    assert stage(5, a) == [
        (b, by_org[b][1:2]),
        (c, by_org[c][1:2]),
        (a, by_org[a][2:3]),
        (b, by_org[b][2:3]),
        (c, by_org[c][2:3]),
    ]
    assert stage(0, None) == []
    last = stage(3, c)
    assert [org for org, _ids in last] == [a, b, c]
    for claim_org, ids in last:
        assert len({shop.rows(ids)[i].batch_id for i in ids}) == 1
        assert {shop.rows(ids)[i].organization_id for i in ids} == {claim_org}


# -- runs that keep claiming (services.staging.keep_claiming) --------------------------------

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeTime:
    now: float = 0.0
    slept: list[float] = field(default_factory=list)
    on_sleep: Any = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


def _keep_claiming(
    shop: Shop,
    org: int,
    *,
    rules: Continuation,
    slot_free: bool = True,
    served: frozenset[int] = frozenset(),
    longest_running: bool = True,
    time: FakeTime | None = None,
    per_batch_seconds: float = 0.0,
) -> list[list[int]]:
    """The batches a mailing run for ``org`` takes, first one claimed as the sensor would."""
    time = time or FakeTime()
    (first,) = stage_batches(shop.sessions, MAILING, free_slots=1, batch_size=rules.batch_size)
    assert first.recipients[0].organization_id == org

    def process(batch_id: str) -> list[int]:
        time.now += per_batch_seconds
        with shop.sessions() as session:
            return [r.id for r in RecipientGateway(session).batch(batch_id, S.SENDING_STAGED)]

    return keep_claiming(
        shop.sessions,
        MAILING,
        org,
        first.batch_id,
        process,
        rules=rules,
        slot_free=lambda: slot_free,
        served=lambda: set(served),
        longest_running=lambda: longest_running,
        clock=time,
        sleep=time.sleep,
    )


def test_a_run_keeps_claiming_its_organizations_batches_until_none_waits(shop: Shop) -> None:
    org = shop.organization()
    ids = shop.recipients(shop.campaign(org), 5, S.PROOFED, status_changed_at=LONG_AGO)
    time = FakeTime()

    batches = _keep_claiming(shop, org, rules=Continuation(batch_size=2), time=time)

    assert batches == [ids[0:2], ids[2:4], ids[4:5]]
    assert time.slept == []  # idle_seconds 0 (a run by hand or by recovery): it ends at once


def test_a_run_stops_claiming_when_its_time_budget_ends(shop: Shop) -> None:
    org = shop.organization()
    ids = shop.recipients(shop.campaign(org), 6, S.PROOFED, status_changed_at=LONG_AGO)

    batches = _keep_claiming(
        shop, org, rules=Continuation(batch_size=2, budget_seconds=150), per_batch_seconds=100
    )

    # the first batch, then one claimed at 100 s; at 200 s the budget is spent
    assert batches == [ids[0:2], ids[2:4]]
    assert shop.status(ids[4:]) == dict.fromkeys(ids[4:], S.PROOFED)


@pytest.mark.parametrize("slot_free", [False, True])
def test_a_run_gives_way_to_a_starved_organization_when_no_slot_is_free(
    shop: Shop, slot_free: bool
) -> None:
    busy, other = shop.organization(), shop.organization()
    backlog = shop.recipients(shop.campaign(busy), 6, S.PROOFED, status_changed_at=LONG_AGO)
    waiting = shop.recipients(shop.campaign(other), 2, S.PROOFED, status_changed_at=LONG_AGO)

    batches = _keep_claiming(
        shop,
        busy,
        rules=Continuation(batch_size=2, slice_seconds=15),
        slot_free=slot_free,
        per_batch_seconds=10,
    )

    if slot_free:  # the sensor serves the other organization in the free slot
        assert batches == [backlog[0:2], backlog[2:4], backlog[4:6]]
    else:  # no slot would free up for it: after its slice, this run ends so it can be served
        assert batches == [backlog[0:2], backlog[2:4]]
    assert shop.status(waiting) == dict.fromkeys(waiting, S.PROOFED)


def test_only_the_longest_running_run_gives_way(shop: Shop) -> None:
    """Runs hand their slots over one at a time: a younger run whose slice ended keeps on
    while the oldest gives way, so the stage never has every run ending at once."""
    busy, other = shop.organization(), shop.organization()
    backlog = shop.recipients(shop.campaign(busy), 6, S.PROOFED, status_changed_at=LONG_AGO)
    shop.recipients(shop.campaign(other), 2, S.PROOFED, status_changed_at=LONG_AGO)

    batches = _keep_claiming(
        shop,
        busy,
        rules=Continuation(batch_size=2, slice_seconds=15),
        slot_free=False,
        longest_running=False,
        per_batch_seconds=10,
    )

    assert batches == [backlog[0:2], backlog[2:4], backlog[4:6]]


@pytest.mark.parametrize("slot_free", [False, True])
def test_a_caught_up_run_gives_way_at_once_to_a_starved_organization(
    shop: Shop, slot_free: bool
) -> None:
    busy, other = shop.organization(), shop.organization()
    mine = shop.recipients(shop.campaign(busy), 2, S.PROOFED, status_changed_at=LONG_AGO)
    shop.recipients(shop.campaign(other), 2, S.PROOFED, status_changed_at=LONG_AGO)
    time = FakeTime()

    batches = _keep_claiming(
        shop,
        busy,
        rules=Continuation(batch_size=2, slice_seconds=60, idle_seconds=30, poll_seconds=1),
        slot_free=slot_free,
        longest_running=False,
        time=time,
    )

    assert batches == [mine]
    if slot_free:  # the sensor serves the other in the free slot: it waits for newcomers
        assert sum(time.slept) == pytest.approx(30)
    else:  # it holds a slot for nothing: it ends at its first look, long before its slice
        assert time.slept == [1]


def test_a_run_does_not_give_way_to_an_organization_another_run_serves(shop: Shop) -> None:
    """A caught-up run waiting for newcomers has no recipient in the stage; its organization
    is served all the same (a trickle: every organization's warm run stays)."""
    busy, other = shop.organization(), shop.organization()
    backlog = shop.recipients(shop.campaign(busy), 6, S.PROOFED, status_changed_at=LONG_AGO)
    shop.recipients(shop.campaign(other), 2, S.PROOFED, status_changed_at=LONG_AGO)

    batches = _keep_claiming(
        shop,
        busy,
        rules=Continuation(batch_size=2, slice_seconds=15),
        slot_free=False,
        served=frozenset({other}),
        per_batch_seconds=10,
    )

    assert batches == [backlog[0:2], backlog[2:4], backlog[4:6]]


def test_a_caught_up_run_waits_for_new_recipients_and_takes_them(shop: Shop) -> None:
    org = shop.organization()
    campaign = shop.campaign(org)
    first = shop.recipients(campaign, 2, S.PROOFED, status_changed_at=LONG_AGO)
    arrived: list[int] = []

    def arrive() -> None:
        if len(time.slept) == 3:  # proofed while the run waits
            arrived.extend(shop.recipients(campaign, 1, S.PROOFED))

    time = FakeTime(on_sleep=arrive)
    batches = _keep_claiming(
        shop, org, rules=Continuation(batch_size=2, idle_seconds=10, poll_seconds=1), time=time
    )

    assert batches == [first, arrived]
    # it waited 3 s for the newcomer, then idle_seconds after it, looking once a second
    assert time.slept == [1.0] * 13
