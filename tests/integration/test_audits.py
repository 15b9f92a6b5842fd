"""Organization audits on a real database (SQLite, or PostgreSQL when
MAIL_PIPELINE_TEST_DATABASE_URL is set) with the sandbox vendors: what a good organization
gets, what each kind of problem produces, how reports are stored once per message, and the
harmless reads the audit adds to the Klaviyo, Shopify and Ometria clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mail_pipeline.cli import main
from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Audit, Campaign, Organization, OrganizationIntegration
from mail_pipeline.domain.audits import (
    Area,
    AuditReport,
    AuditStatus,
    Finding,
    Severity,
    Verdict,
)
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    IntegrationError,
    NotFound,
    RateLimited,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient
from mail_pipeline.integrations.klaviyo.sandbox import KlaviyoSandbox
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, profile_resource
from mail_pipeline.integrations.orders.ometria import OmetriaOrderClient
from mail_pipeline.integrations.orders.sandbox import OmetriaSandbox, ShopifySandbox
from mail_pipeline.integrations.orders.sandbox.shopify import SANDBOX_ACCESS_TOKEN, ShopifyBucket
from mail_pipeline.integrations.orders.shopify import ShopifyOrderClient
from mail_pipeline.integrations.queues.base import DeleteFailure, MessageQueue, QueueMessage
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.cdp import KlaviyoCdp, SandboxCdp
from mail_pipeline.resources.orders import SandboxOrderSources
from mail_pipeline.resources.queues import LocalQueues
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.services.audits import (
    AuditVendors,
    UnknownOrganization,
    audit_organization,
    audit_request_message,
    process_audit_queue,
    recent_audits,
    run_audit,
)

S = RecipientStatus
NOW = datetime.now(UTC).replace(microsecond=0)
DESIGN = {"template": "classic", "brand_name": "Juniper", "headline": "Hello {first_name}"}
GOOD_SEGMENT = "SEG-GOOD"
QUICK_RETRY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, max_retry_after=0.0)


@dataclass
class World:
    db_url: str
    sandbox_path: str
    make_campaign: Any
    add_recipients: Any

    @property
    def store(self) -> SandboxStore:
        return shared_store(self.sandbox_path)

    @property
    def sessions(self) -> Any:
        return partial(unit_of_work, self.db_url)

    def vendors(self, cdp: Any = None) -> AuditVendors:
        return AuditVendors(
            cdp=cdp or SandboxCdp(sandbox_path=self.sandbox_path),
            order_sources=SandboxOrderSources(sandbox_path=self.sandbox_path),
            printers=frozenset({"lob", "stannp"}),
        )

    def organization(
        self,
        *,
        stripe: str | None = "cus_good",
        segment: str | None = GOOD_SEGMENT,
        design: dict[str, Any] | None = None,
        kinds: Sequence[IntegrationKind] = (IntegrationKind.KLAVIYO, IntegrationKind.SHOPIFY),
    ) -> tuple[int, int]:
        """A healthy organization (Klaviyo and Shopify connected, billed, one Active
        automated campaign on an existing segment) unless told otherwise."""
        org_id, campaign_id = self.make_campaign(
            provider_segment_id=segment, design=DESIGN if design is None else design
        )
        with unit_of_work(self.db_url) as session:
            session.get_one(Organization, org_id).stripe_customer_id = stripe
            for kind in kinds:
                session.add(
                    OrganizationIntegration(
                        organization_id=org_id,
                        kind=kind,
                        secret_ref=f"{kind.upper()}_API_KEY",
                        settings={"shop": "juniper-trail"}
                        if kind is IntegrationKind.SHOPIFY
                        else {},
                    )
                )
        return org_id, campaign_id

    def audit(self, org_id: int, vendors: AuditVendors | None = None) -> AuditReport:
        return audit_organization(self.sessions, org_id, vendors or self.vendors(), now=NOW)


@pytest.fixture
def world(db_url: str, tmp_path: Path, make_campaign: Any, add_recipients: Any) -> World:
    world = World(db_url, str(tmp_path / "sandbox.sqlite"), make_campaign, add_recipients)
    KlaviyoSandboxData(world.store).put_segment_profiles(
        GOOD_SEGMENT, [profile_resource("P1", "p1@example.com", "Ann", "Lee")]
    )
    return world


def _problems(report: AuditReport) -> list[tuple[Severity, Area]]:
    return [(f.severity, f.area) for f in report.findings if f.severity is not Severity.OK]


def _one(report: AuditReport, area: Area, severity: Severity = Severity.ERROR) -> Finding:
    found = [f for f in report.findings if f.area is area and f.severity is severity]
    assert len(found) == 1, report.markdown()
    return found[0]


class RevokedKlaviyo:
    """The CDP with a key Klaviyo refuses: the real client against the sandbox."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        return KlaviyoClient("pk_revoked", transport=KlaviyoSandbox(self.store))


class DownKlaviyo(RevokedKlaviyo):
    """Klaviyo answering 503 to everything (the client gives up after its retries)."""

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        sandbox = KlaviyoSandbox(self.store, SandboxBehaviour(failure_rate=1.0))
        return KlaviyoClient("pk_sandbox_klaviyo", transport=sandbox, retry=QUICK_RETRY)


# -- what the audit finds ------------------------------------------------------------------


def test_a_good_organization_passes(world: World) -> None:
    org_id, campaign_id = world.organization()
    world.add_recipients(campaign_id, 3, S.PENDING)
    world.add_recipients(campaign_id, 2, S.SENDING, claimed_at=NOW - timedelta(minutes=10))
    world.add_recipients(campaign_id, 1, S.ERROR, status_reason="no printer mails to FR")

    report = world.audit(org_id)

    assert report.verdict is Verdict.PASSED, report.markdown()
    areas = {f.area for f in report.findings}
    assert areas == {
        Area.INTEGRATIONS,
        Area.SEGMENTS,
        Area.CAMPAIGNS,
        Area.PRINTING,
        Area.RECIPIENTS,
        Area.BILLING,
    }
    messages = [f.message for f in report.findings]
    assert "Klaviyo: the credentials work (read the account Klaviyo sandbox)." in messages
    assert (
        "Shopify: the credentials work (read the name of the shop juniper-trail: "
        "Juniper Trail)." in messages
    )
    assert "Recipients by state: Pending 3, Sending 2, Error 1." in messages
    assert "Postcards to US are printed by Lob." in messages


def test_a_bad_klaviyo_key_is_an_error_and_its_segments_are_not_checked(world: World) -> None:
    org_id, _ = world.organization()
    report = world.audit(org_id, world.vendors(cdp=RevokedKlaviyo(world.store)))
    refused = _one(report, Area.INTEGRATIONS)
    assert refused.message == (
        "Klaviyo refused the organization's credentials: Incorrect authentication "
        "credentials. (at /data/) (HTTP 401)"
    )
    assert "'KLAVIYO_API_KEY'" in refused.action
    skipped = _one(report, Area.SEGMENTS, Severity.WARNING)
    assert skipped.message.startswith(
        "The segments of 1 campaign were not checked: Klaviyo's credential check failed"
    )
    assert report.verdict is Verdict.HAS_ERRORS


def test_a_klaviyo_key_that_cannot_be_resolved_is_an_error_not_a_crash(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_id, _ = world.organization(kinds=(IntegrationKind.KLAVIYO,))
    monkeypatch.delenv(f"MAIL_PIPELINE_ORG_{org_id}_KLAVIYO_API_KEY", raising=False)
    report = world.audit(org_id, world.vendors(cdp=KlaviyoCdp(secrets="environment")))
    refused = _one(report, Area.INTEGRATIONS)
    assert refused.message.startswith("Klaviyo refused the organization's credentials:")
    assert f"organization {org_id}" in refused.message


def test_an_unreachable_klaviyo_is_a_warning(world: World) -> None:
    org_id, _ = world.organization(kinds=(IntegrationKind.KLAVIYO,))
    report = world.audit(org_id, world.vendors(cdp=DownKlaviyo(world.store)))
    assert _one(report, Area.INTEGRATIONS, Severity.WARNING).message.startswith(
        "Klaviyo could not be reached, so its credentials were not checked"
    )
    assert report.verdict is Verdict.HAS_WARNINGS


class SegmentsDown(RevokedKlaviyo):
    """Klaviyo whose segments endpoint answers 503 (the account still answers); counts the
    segment requests."""

    def __init__(self, store: SandboxStore) -> None:
        super().__init__(store)
        self.segment_requests = 0

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        sandbox = KlaviyoSandbox(self.store)

        def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path.startswith("/api/segments/"):
                self.segment_requests += 1
                return sandbox.error(503, "Service unavailable.")
            return sandbox.handle_request(request)

        transport = httpx.MockTransport(handle)
        return KlaviyoClient("pk_sandbox_klaviyo", transport=transport, retry=QUICK_RETRY)


def test_once_klaviyo_is_unreachable_the_other_segments_are_not_asked(world: World) -> None:
    org_id, _ = world.organization(kinds=(IntegrationKind.KLAVIYO,))
    with unit_of_work(world.db_url) as session:
        for n in range(2):
            session.add(
                Campaign(
                    organization_id=org_id,
                    name=f"More {n}",
                    campaign_mode=CampaignMode.AUTOMATED,
                    status=CampaignStatus.ACTIVE,
                    provider_segment_id=f"SEG-{n}",
                    design=DESIGN,
                )
            )
    cdp = SegmentsDown(world.store)
    report = world.audit(org_id, world.vendors(cdp=cdp))
    warnings = [f for f in report.findings if f.area is Area.SEGMENTS]
    assert [f.severity for f in warnings] == [Severity.WARNING] * 3
    assert all("Service unavailable. (at /data/) (HTTP 503)" in f.message for f in warnings), [
        f.message for f in warnings
    ]
    assert cdp.segment_requests == QUICK_RETRY.max_attempts, "one segment was asked"


def test_a_missing_segment_is_an_error_naming_it_and_its_campaign(world: World) -> None:
    org_id, campaign_id = world.organization(segment="SEG-GONE")
    report = world.audit(org_id)
    assert _problems(report) == [(Severity.ERROR, Area.SEGMENTS)]
    assert _one(report, Area.SEGMENTS).message == (
        f"Segment SEG-GONE of campaign 'Campaign {campaign_id}' ({campaign_id}) does not "
        "exist in Klaviyo."
    )


def test_a_segment_without_a_klaviyo_integration_is_an_error(world: World) -> None:
    org_id, _ = world.organization(kinds=(IntegrationKind.OMETRIA,))
    report = world.audit(org_id)
    assert "no enabled Klaviyo integration" in _one(report, Area.SEGMENTS).message
    assert "Ometria: the credentials work" in " ".join(f.message for f in report.findings)


def test_a_campaign_without_design_is_an_error(world: World) -> None:
    org_id, campaign_id = world.organization(design={})
    report = world.audit(org_id)
    assert _problems(report) == [(Severity.ERROR, Area.CAMPAIGNS)]
    assert _one(report, Area.CAMPAIGNS).message.endswith(
        f"({campaign_id}) has no design: no postcard can be rendered."
    )


def test_an_unrenderable_design_lists_what_the_renderer_refuses(world: World) -> None:
    org_id, _ = world.organization(design={"template": "classic", "headine": "Hi"})
    message = _one(world.audit(org_id), Area.CAMPAIGNS).message
    assert "unknown field 'headine'" in message and "headline is missing" in message


def test_an_a6_design_for_a_us_organization_cannot_be_printed(world: World) -> None:
    org_id, _ = world.organization(design={**DESIGN, "size": "A6"})
    assert _one(world.audit(org_id), Area.PRINTING).message.startswith(
        "Lob does not print A6 postcards"
    )


def test_completed_campaigns_are_not_audited(world: World) -> None:
    org_id, _ = world.organization()
    with unit_of_work(world.db_url) as session:
        session.add(
            Campaign(
                organization_id=org_id,
                name="Old",
                campaign_mode=CampaignMode.AUTOMATED,
                status=CampaignStatus.COMPLETED,
                design={},
            )
        )
    assert world.audit(org_id).verdict is Verdict.PASSED


def test_an_error_without_reason_is_an_error(world: World) -> None:
    org_id, campaign_id = world.organization()
    unexplained = world.add_recipients(campaign_id, 2, S.ERROR)
    world.add_recipients(campaign_id, 1, S.ERROR, status_reason="no route")
    world.add_recipients(campaign_id, 1, S.ERROR, status_reason="   ")
    report = world.audit(org_id)
    assert _problems(report) == [(Severity.ERROR, Area.RECIPIENTS)]
    message = _one(report, Area.RECIPIENTS).message
    assert message.startswith("3 recipients in Error without a reason (e.g. ")
    assert all(str(i) in message for i in unexplained)


def test_a_recipient_sending_for_hours_is_stuck(world: World) -> None:
    org_id, campaign_id = world.organization()
    (stuck,) = world.add_recipients(campaign_id, 1, S.SENDING, claimed_at=NOW - timedelta(hours=3))
    world.add_recipients(campaign_id, 4, S.SENDING, claimed_at=NOW - timedelta(minutes=30))
    world.add_recipients(campaign_id, 1, S.SENT, claimed_at=NOW - timedelta(days=3))
    report = world.audit(org_id)
    assert _problems(report) == [(Severity.ERROR, Area.RECIPIENTS)]
    finding = _one(report, Area.RECIPIENTS)
    assert finding.message.startswith("1 recipient stuck in Sending for more than 2 hours")
    assert f"(e.g. {stuck})" in finding.message
    assert "Do not edit them by hand" in finding.action


def test_no_stripe_customer_is_an_error(world: World) -> None:
    org_id, _ = world.organization(stripe=None)
    report = world.audit(org_id)
    assert _problems(report) == [(Severity.ERROR, Area.BILLING)]
    assert "postcards it mails are never billed" in _one(report, Area.BILLING).message


def test_an_unknown_organization_is_refused(world: World) -> None:
    with pytest.raises(UnknownOrganization, match="organization 999 does not exist"):
        world.audit(999)


# -- storing reports --------------------------------------------------------------------------


def _audits(db_url: str) -> list[Audit]:
    with unit_of_work(db_url) as session:
        return list(session.scalars(select(Audit).order_by(Audit.id)))


def test_a_report_is_stored_once_per_source_message(world: World) -> None:
    org_id, _ = world.organization(stripe=None)
    first = run_audit(
        world.sessions,
        org_id,
        world.vendors(),
        requested_by="ana@brand.com",
        source_message_id="m-1",
    )
    again = run_audit(
        world.sessions,
        org_id,
        world.vendors(),
        requested_by="ana@brand.com",
        source_message_id="m-1",
    )
    assert first.audit_id is not None and again.audit_id is None
    (row,) = _audits(world.db_url)
    assert (row.id, row.status, row.requested_by) == (first.audit_id, "completed", "ana@brand.com")
    assert row.completed_at is not None
    assert [Finding.from_json(doc) for doc in row.findings] == list(first.findings)
    assert {"severity": "error", "area": "billing"}.items() <= row.findings[0].items()
    (listed,) = recent_audits(world.sessions, org_id)
    assert listed.verdict is Verdict.HAS_ERRORS and listed.audit_id == first.audit_id


class CountingCdp:
    def __init__(self, sandbox_path: str) -> None:
        self.inner = SandboxCdp(sandbox_path=sandbox_path)
        self.calls = 0

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        self.calls += 1
        return self.inner.client_for(integration)


class BrokenCdp:
    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        raise RuntimeError("the CDP client blew up")


def test_an_audit_that_breaks_is_stored_as_failed_with_the_reason(world: World) -> None:
    org_id, _ = world.organization()
    report = run_audit(world.sessions, org_id, world.vendors(cdp=BrokenCdp()), requested_by="x")
    assert report.status is AuditStatus.FAILED
    (row,) = _audits(world.db_url)
    assert row.status == "failed"
    (finding,) = (Finding.from_json(doc) for doc in row.findings)
    assert finding.area is Area.AUDIT and finding.severity is Severity.ERROR
    assert "RuntimeError: the CDP client blew up" in finding.message


# -- the queue, with SQS semantics ------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> Iterator[LocalQueue]:
    queue = LocalQueue(":memory:", "audit-requests", visibility_timeout=120, clock=clock)
    yield queue
    queue.database.close()


class LosesDeletes(MessageQueue):
    """A queue whose deletes are lost (a run that died after the commit, before the delete)."""

    def __init__(self, inner: LocalQueue) -> None:
        self.inner = inner
        self.name = inner.name

    def send(self, body: str, *, attributes: Any = None) -> str:
        return self.inner.send(body, attributes=attributes)

    def send_batch(self, bodies: Sequence[str]) -> list[str]:
        return self.inner.send_batch(bodies)

    def receive(self, max_messages: int = 10, **kwargs: Any) -> list[QueueMessage]:
        return self.inner.receive(max_messages, **kwargs)

    def delete(self, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        raise IntegrationError("AWS SQS", "the connection was lost")

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.inner.change_visibility(receipt_handle, seconds)

    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        self.inner.dead_letter(message, reason)

    def approximate_depth(self) -> int:
        return self.inner.approximate_depth()


def test_the_queue_answers_each_request_and_dead_letters_the_bad_ones(
    world: World, queue: LocalQueue
) -> None:
    org_id, _ = world.organization()
    ok = queue.send(audit_request_message(org_id, "ana@brand.com"))
    queue.send('{"organization_id": "twelve", "requested_by": "ana"}')
    queue.send(json.dumps({"organization_id": 999_999, "requested_by": "ana"}))

    result = process_audit_queue(world.sessions, queue, world.vendors())

    assert (result.received, result.audits_completed, result.dead_lettered) == (3, 1, 2)
    assert result.messages_deleted == 1 and queue.approximate_depth() == 0
    (row,) = _audits(world.db_url)
    assert (row.source_message_id, row.organization_id) == (ok, org_id)
    assert result.reports[0].audit_id == row.id
    reasons = {m.attributes["reason"] for m in queue.dlq().receive(10)}
    assert reasons == {
        "the audit request needs a positive integer organization_id, not 'twelve'",
        "organization 999999 does not exist (the audit request's organization_id)",
    }


def test_a_request_redelivered_after_a_lost_delete_is_audited_once(
    world: World, queue: LocalQueue, clock: FakeClock
) -> None:
    org_id, _ = world.organization()
    queue.send(audit_request_message(org_id, "ana@brand.com"))

    first = process_audit_queue(world.sessions, LosesDeletes(queue), world.vendors())
    assert (first.audits_completed, first.delete_failures) == (1, 1)
    clock.advance(121)  # the message reappears, as SQS redelivers it
    cdp = CountingCdp(world.sandbox_path)
    second = process_audit_queue(world.sessions, queue, world.vendors(cdp=cdp))

    assert (second.received, second.duplicates, second.audits_completed) == (1, 1, 0)
    assert cdp.calls == 0, "a message already answered is not audited again"
    assert second.messages_deleted == 1 and queue.approximate_depth() == 0
    assert len(_audits(world.db_url)) == 1


def test_the_same_message_delivered_twice_at_once_is_audited_once(world: World) -> None:
    org_id, _ = world.organization()
    body = audit_request_message(org_id, "ana@brand.com")
    twice = [QueueMessage("m-1", "h-1", body), QueueMessage("m-1", "h-2", body)]

    class Twice(LosesDeletes):
        def __init__(self) -> None:
            self.name = "audit-requests"
            self.pages = [twice]
            self.deleted: list[str] = []

        def receive(self, max_messages: int = 10, **kwargs: Any) -> list[QueueMessage]:
            return self.pages.pop() if self.pages else []

        def change_visibility(self, receipt_handle: str, seconds: int) -> None:
            pass

        def delete(self, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
            self.deleted += receipt_handles
            return []

    duplicating = Twice()
    result = process_audit_queue(world.sessions, duplicating, world.vendors())
    assert (result.audits_completed, result.duplicates) == (1, 1)
    assert duplicating.deleted == ["h-1", "h-2"]
    assert len(_audits(world.db_url)) == 1


# -- the harmless reads in the clients and their sandboxes ----------------------------------


def test_klaviyo_account_and_segment_reads(world: World) -> None:
    client = KlaviyoClient("pk_sandbox_klaviyo", transport=KlaviyoSandbox(world.store))
    account = client.account()
    assert (account.id, account.name) == ("SbxK1a", "Klaviyo sandbox")
    assert client.segment(GOOD_SEGMENT).id == GOOD_SEGMENT
    with pytest.raises(NotFound, match="A segment with id SEG-NONE does not exist"):
        client.segment("SEG-NONE")
    with pytest.raises(AuthenticationFailed, match="Incorrect authentication credentials"):
        KlaviyoClient("pk_other", transport=KlaviyoSandbox(world.store)).account()


def test_the_klaviyo_accounts_endpoint_keeps_klaviyos_rate_limit(world: World) -> None:
    sleeps: list[float] = []
    sandbox = KlaviyoSandbox(world.store, clock=lambda: 1_000.5)
    client = KlaviyoClient(
        "pk_sandbox_klaviyo",
        transport=sandbox,
        sleep=sleeps.append,
        retry=RetryPolicy(max_attempts=1),
    )
    client.account()
    with pytest.raises(RateLimited):
        client.account()  # 1 per second


def test_shopify_shop_name_read(world: World) -> None:
    def client(token: str, bucket: ShopifyBucket | None = None) -> ShopifyOrderClient:
        sandbox = ShopifySandbox(world.store, bucket=bucket)
        return ShopifyOrderClient(token, "juniper-trail", transport=sandbox)

    assert client(SANDBOX_ACCESS_TOKEN).store_name() == "Juniper Trail"
    with pytest.raises(AuthenticationFailed, match="Invalid API key or access token"):
        client("shpat_wrong").store_name()
    with pytest.raises(RateLimited, match="throttled"):
        client(SANDBOX_ACCESS_TOKEN, ShopifyBucket(maximum=0.5, restore_rate=0.1)).store_name()


def test_ometria_one_order_read(world: World) -> None:
    def client(key: str) -> OmetriaOrderClient:
        sandbox = OmetriaSandbox(world.store, account="organization-1")
        return OmetriaOrderClient(key, transport=sandbox)

    assert client("sandbox-ometria-key").check_access() == "read a page of orders: 0 of at most 1"
    with pytest.raises(AuthenticationFailed, match="HTTP 403"):
        client("wrong").check_access()


def test_an_active_one_off_past_its_mail_date_is_a_warning(world: World) -> None:
    org_id, campaign_id = world.organization()
    with unit_of_work(world.db_url) as session:
        campaign = session.get_one(Campaign, campaign_id)
        campaign.campaign_mode = CampaignMode.ONE_OFF
        campaign.mail_date = date(2026, 1, 1)
    warning = _one(world.audit(org_id), Area.CAMPAIGNS, Severity.WARNING)
    assert "its mail date 2026-01-01 has passed" in warning.message
    with unit_of_work(world.db_url) as session:
        assert session.scalar(select(func.count()).select_from(Audit)) == 0, "not stored"


# -- the CLI ----------------------------------------------------------------------------------


def test_the_cli_audits_now_requests_and_lists(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("MAIL_PIPELINE_ENV", "test")
    monkeypatch.setenv("MAIL_PIPELINE_DATA_DIR", str(tmp_path))  # the world's sandbox too
    monkeypatch.setenv("MAIL_PIPELINE_TEST_DATABASE_URL", world.db_url)
    org_id, _ = world.organization(stripe=None)
    with unit_of_work(world.db_url) as session:
        slug = session.get_one(Organization, org_id).slug

    assert main(["audit", slug, "--by", "ana@ops"]) == 1  # it has errors
    printed = capsys.readouterr().out
    assert f"(organization {org_id}), audit " in printed and ": has errors" in printed
    assert "| error | billing | The organization has no Stripe customer" in printed
    (row,) = _audits(world.db_url)
    assert (row.requested_by, row.source_message_id) == ("ana@ops", None)

    assert main(["audit", str(org_id), "--request"]) == 2  # who asks?
    assert main(["audit", str(org_id), "--request", "--by", "ana@ops"]) == 0
    queue = LocalQueues(path=str(tmp_path / "queues.sqlite")).audit_queue()
    (message,) = queue.receive(10)
    assert json.loads(message.body) == {"organization_id": org_id, "requested_by": "ana@ops"}

    capsys.readouterr()
    assert main(["audits", str(org_id)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[0] == str(row.id) and "has errors" in line and "ana@ops" in line
    assert main(["audits", slug, "--show", str(row.id)]) == 0
    assert capsys.readouterr().out.startswith("### Audit of ")
    assert main(["audit", "no-such-brand"]) == 2
