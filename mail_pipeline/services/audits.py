"""Organization audits (SPEC §3 ``audits.process_audits``): requests arrive on the audit
queue, each is answered with a report stored in ``audits``.

The message contract of the audit queue (``audit-requests``), one message per audit::

    {"organization_id": 12, "requested_by": "ana@brand.com"}

- ``organization_id``: the organization to audit (a positive integer);
- ``requested_by``: who asks, one line of 1-200 characters (kept on the report).

Nothing else is accepted: a message with another key, or a value of the wrong kind, goes to
the dead-letter queue at once with the reason; so does one naming an organization that does
not exist. :func:`audit_request_message` writes a valid message (the CLI's
``mail-pipeline audit ORG --request`` uses it).

:func:`audit_organization` is the audit itself: it reads the organization's facts in one
transaction (:class:`~mail_pipeline.db.audits.AuditGateway`), then, outside any transaction,
makes one harmless read per enabled integration (the Klaviyo account through the CDP client,
the Shopify shop's name and one Ometria order through the order clients) and looks up each
live campaign's segment in Klaviyo; ``domain.audits`` judges the facts. A vendor's failure
is a finding, never an exception.

:func:`process_audit_queue` is one pass over the queue, page by page (at most 10 messages,
then their deletes, then the next page):

1. a message that breaks the contract goes to the DLQ with the reason;
2. a message whose id is already the ``source_message_id`` of a stored report was audited
   before (a redelivery): it is deleted, not audited again;
3. otherwise the organization is audited and the report committed - ``completed`` with its
   findings, or ``failed`` with the reason when the audit itself broke (a bug, an answer no
   client expected) - and only then is the message deleted. An unknown organization is
   dead-lettered instead.

Idempotency: the report is keyed on the message id (unique), so a message delivered twice -
even to two runs at once - is stored once, and a run that dies between the commit and the
delete leaves a message whose next delivery is recognised (step 2). Before each message of a
page after the first, its visibility timeout is restarted, so a slow audit does not let the
rest of the page reappear on the queue meanwhile. A database outage propagates: the messages
already answered are deleted, the others come back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mail_pipeline.db.audits import AuditGateway, CampaignRow, StoredAudit
from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.errors import describe, is_outage
from mail_pipeline.domain.audits import (
    STUCK_AFTER,
    STUCK_STATES,
    AuditReport,
    AuditStatus,
    CampaignFacts,
    IntegrationCheck,
    OrganizationFacts,
    Outcome,
    PrintingFacts,
    SegmentCheck,
    audit_findings,
    failure_findings,
)
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.fields import unstorable_character
from mail_pipeline.domain.metrics import day_of
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    IntegrationError,
    NotFound,
)
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient
from mail_pipeline.integrations.orders.base import OrderClient
from mail_pipeline.integrations.printers.intelliprint import ENVELOPES as INTELLIPRINT_SIZES
from mail_pipeline.integrations.printers.lob import LOB_SIZES
from mail_pipeline.integrations.printers.stannp import SIZES as STANNP_SIZES
from mail_pipeline.integrations.queues.base import MAX_RECEIVE, MessageQueue, QueueMessage
from mail_pipeline.integrations.renderer.models import PostcardDesign
from mail_pipeline.services.draining import dead_letter, delete_processed

logger = logging.getLogger(__name__)

#: The keys of an audit request, and the most characters ``requested_by`` may have (the
#: column's size).
REQUEST_KEYS = ("organization_id", "requested_by")
MAX_REQUESTED_BY = 200
#: Organization ids are BIGINT.
MAX_ORGANIZATION_ID = 2**63 - 1
#: At most this many dead-letter reasons and reports are kept in a result (counts are exact).
MAX_REASONS = 20
MAX_REPORTS = 20
#: The postcard sizes each printer's client accepts (the others are refused at mailing).
PRINTABLE_SIZES: Mapping[str, frozenset[str]] = {
    "lob": frozenset(LOB_SIZES),
    "stannp": frozenset(size for platform in STANNP_SIZES.values() for size in platform),
    "intelliprint": frozenset(INTELLIPRINT_SIZES),
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- the message contract ------------------------------------------------------------------


class MalformedAuditRequest(ValueError):
    """An audit request that breaks the contract; the message says how."""


class UnknownOrganization(LookupError):
    def __init__(self, organization_id: int) -> None:
        self.organization_id = organization_id
        super().__init__(f"organization {organization_id} does not exist")


@dataclass(frozen=True)
class AuditRequest:
    organization_id: int
    requested_by: str


def audit_request_message(organization_id: int, requested_by: str) -> str:
    """The queue message asking to audit ``organization_id``; :class:`MalformedAuditRequest`
    if it would break the contract."""
    request = _checked(organization_id, requested_by)
    return json.dumps(
        {"organization_id": request.organization_id, "requested_by": request.requested_by},
        separators=(",", ":"),
    )


def parse_audit_request(body: str) -> AuditRequest:
    """Read a message; :class:`MalformedAuditRequest` says what is wrong with a bad one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedAuditRequest(f"the audit request is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedAuditRequest("the audit request is not a JSON object")
    unknown = sorted(str(key) for key in data if key not in REQUEST_KEYS)
    if unknown:
        raise MalformedAuditRequest(
            f"the audit request has unknown keys {', '.join(_show(k) for k in unknown)}; "
            "it takes organization_id and requested_by"
        )
    return _checked(data.get("organization_id"), data.get("requested_by"))


def _checked(organization_id: Any, requested_by: Any) -> AuditRequest:
    if (
        isinstance(organization_id, bool)
        or not isinstance(organization_id, int)
        or not 1 <= organization_id <= MAX_ORGANIZATION_ID
    ):
        raise MalformedAuditRequest(
            "the audit request needs a positive integer organization_id, "
            f"not {_show(organization_id)}"
        )
    if not isinstance(requested_by, str) or not requested_by.strip():
        raise MalformedAuditRequest(
            f"the audit request for organization {organization_id} needs requested_by: who "
            "asks (an email or a name)"
        )
    who = requested_by.strip()
    if len(who) > MAX_REQUESTED_BY:
        raise MalformedAuditRequest(
            f"the audit request for organization {organization_id} has a requested_by of "
            f"{len(who)} characters; at most {MAX_REQUESTED_BY}"
        )
    if unstorable_character(who) or any(ord(char) < 32 or ord(char) == 127 for char in who):
        raise MalformedAuditRequest(
            f"the audit request for organization {organization_id} has a requested_by that "
            "is not one line of text"
        )
    return AuditRequest(organization_id, who)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the vendors an audit reads ---------------------------------------------------------------


class CdpClients(Protocol):
    def client_for(self, integration: IntegrationRef) -> KlaviyoClient: ...


class OrderSourceClients(Protocol):
    def client_for(self, integration: IntegrationRef) -> OrderClient: ...


@dataclass(frozen=True)
class AuditVendors:
    """Where an audit's vendor reads go (the CDP and order-source resources build clients
    with each organization's own credentials)."""

    cdp: CdpClients
    order_sources: OrderSourceClients
    #: The printers this deployment can mail with (None: not known; every printer counts).
    printers: frozenset[str] | None = None


def outcome_of(error: Exception) -> Outcome:
    """How a failed vendor read is judged: refused credentials, missing object, a vendor
    that could not be reached (after the client's retries), or a refused request."""
    if isinstance(error, AuthenticationFailed):
        return Outcome.AUTH_REFUSED
    if isinstance(error, NotFound):
        return Outcome.NOT_FOUND
    if isinstance(error, IntegrationError) and error.retryable:
        return Outcome.UNAVAILABLE
    return Outcome.REJECTED


def _reason(error: Exception) -> str:
    if isinstance(error, IntegrationError):
        status = f" (HTTP {error.status_code})" if error.status_code is not None else ""
        return f"{error.message}{status}"
    return str(error)


def check_integration(integration: IntegrationRef, vendors: AuditVendors) -> IntegrationCheck:
    """One harmless read with the integration's credentials: Klaviyo's account through the
    CDP client, the others through their order client (``check_access``)."""
    try:
        if integration.kind is IntegrationKind.KLAVIYO:
            with vendors.cdp.client_for(integration) as klaviyo:
                account = klaviyo.account()
            detail = f"read the account {account.name}"
        else:
            client = vendors.order_sources.client_for(integration)
            try:
                detail = client.check_access()
            finally:
                client.close()
    except (IntegrationError, ValueError) as exc:
        return IntegrationCheck(
            integration.kind, outcome_of(exc), _reason(exc), integration.secret_ref
        )
    return IntegrationCheck(integration.kind, Outcome.OK, detail, integration.secret_ref)


def check_segments(
    campaigns: Sequence[CampaignRow],
    integrations: Sequence[IntegrationRef],
    checks: Sequence[IntegrationCheck],
    cdp: CdpClients,
) -> list[SegmentCheck]:
    """Look up each live campaign's segment in the organization's Klaviyo (each segment
    once); not at all when Klaviyo's own credential check failed."""
    targeted = [(c, c.segment_id) for c in campaigns if c.segment_id]
    if not targeted:
        return []
    segment_ids = list(dict.fromkeys(segment_id for _, segment_id in targeted))
    klaviyo = next((i for i in integrations if i.kind is IntegrationKind.KLAVIYO), None)
    checked = next((c for c in checks if c.kind is IntegrationKind.KLAVIYO), None)
    if klaviyo is None:
        found = dict.fromkeys(segment_ids, (Outcome.NO_CDP, ""))
    elif checked is not None and checked.outcome is not Outcome.OK:
        reason = f"Klaviyo's credential check failed ({checked.detail})"
        found = dict.fromkeys(segment_ids, (Outcome.NOT_CHECKED, reason))
    else:
        found = _look_up_segments(cdp, klaviyo, segment_ids)
    return [
        SegmentCheck(campaign.id, campaign.name, segment_id, *found[segment_id])
        for campaign, segment_id in targeted
    ]


def _look_up_segments(
    cdp: CdpClients, klaviyo: IntegrationRef, segment_ids: Sequence[str]
) -> dict[str, tuple[Outcome, str]]:
    """Each segment's outcome. Once Klaviyo is unreachable (after the client's retries) the
    remaining segments are not asked for: they share that outcome."""
    found: dict[str, tuple[Outcome, str]] = {}
    unreached = (Outcome.NOT_CHECKED, "")
    try:
        with cdp.client_for(klaviyo) as client:
            for segment_id in segment_ids:
                try:
                    segment = client.segment(segment_id)
                except (IntegrationError, ValueError) as exc:
                    found[segment_id] = (outcome_of(exc), _reason(exc))
                    if found[segment_id][0] is Outcome.UNAVAILABLE:
                        unreached = found[segment_id]
                        break
                else:
                    found[segment_id] = (Outcome.OK, segment.name)
    except (IntegrationError, ValueError) as exc:  # the client itself could not be made
        unreached = (Outcome.NOT_CHECKED, _reason(exc))
    return {segment_id: found.get(segment_id, unreached) for segment_id in segment_ids}


def campaign_facts(row: CampaignRow) -> CampaignFacts:
    """A live campaign as the rules judge it: the renderer's verdict on its design."""
    design = row.design or {}
    problems: tuple[str, ...] = ()
    if design:
        try:
            PostcardDesign.from_mapping(design)
        except ValueError as exc:  # InvalidDesign lists every problem
            problems = tuple(getattr(exc, "problems", None) or [str(exc)])
    size = design.get("size")
    return CampaignFacts(
        id=row.id,
        name=row.name,
        mode=row.mode,
        status=row.status,
        segment_id=row.segment_id,
        has_design=bool(design),
        design_problems=problems,
        size=size if isinstance(size, str) and size else "4x6",
        start_date=row.start_date,
        mail_date=row.mail_date,
        daily_send_cap=row.daily_send_cap,
        total_send_cap=row.total_send_cap,
    )


# -- one audit --------------------------------------------------------------------------------


def audit_organization(
    sessions: SessionFactory,
    organization_id: int,
    vendors: AuditVendors,
    *,
    now: datetime | None = None,
    requested_by: str | None = None,
) -> AuditReport:
    """Audit one organization (not stored); :class:`UnknownOrganization` if it does not
    exist. Vendor failures are findings; anything else raises."""
    now = now or _utcnow()
    with sessions() as session:
        gateway = AuditGateway(session)
        organization = gateway.organization(organization_id)
        if organization is None:
            raise UnknownOrganization(organization_id)
        integrations = gateway.integrations(organization_id)
        campaigns = gateway.live_campaigns(organization_id)
        recipients = gateway.recipient_facts(
            organization_id, stuck_states=STUCK_STATES, claimed_before=now - STUCK_AFTER
        )
    checks = [check_integration(i, vendors) for i in integrations]
    segments = check_segments(campaigns, integrations, checks, vendors.cdp)
    facts = [campaign_facts(c) for c in campaigns]
    printing = PrintingFacts(
        country=organization.country,
        preference=organization.printer_preference,
        available=vendors.printers,
        sizes=PRINTABLE_SIZES,
    )
    findings = audit_findings(
        organization,
        integrations=checks,
        segments=segments,
        campaigns=facts,
        printing=printing,
        recipients=recipients,
        today=day_of(now),
    )
    return AuditReport(
        organization.id,
        organization.name,
        tuple(findings),
        requested_by=requested_by,
        audited_at=now,
    )


def run_audit(
    sessions: SessionFactory,
    organization_id: int,
    vendors: AuditVendors,
    *,
    requested_by: str | None,
    source_message_id: str | None = None,
    now: datetime | None = None,
    log: logging.Logger = logger,
) -> AuditReport:
    """Audit one organization and store the report: ``completed`` with its findings, or
    ``failed`` with the reason when the audit broke. The returned report's ``audit_id`` is
    ``None`` when a report of ``source_message_id`` was already stored (nothing is written).

    :class:`UnknownOrganization` and database outages propagate; nothing is stored then.
    """
    now = now or _utcnow()
    status = AuditStatus.COMPLETED
    try:
        report = audit_organization(
            sessions, organization_id, vendors, now=now, requested_by=requested_by
        )
        findings = report.findings
    except UnknownOrganization:
        raise
    except Exception as exc:
        if is_outage(exc):
            raise
        log.exception("the audit of organization %s failed", organization_id)
        status = AuditStatus.FAILED
        findings = tuple(failure_findings(describe(exc)))
    with sessions() as session:
        gateway = AuditGateway(session)
        organization = gateway.organization(organization_id)
        if organization is None:
            raise UnknownOrganization(organization_id)
        audit_id = gateway.record(
            organization_id=organization_id,
            status=status,
            findings=findings,
            requested_by=requested_by,
            source_message_id=source_message_id,
            created_at=now,
            completed_at=_utcnow(),
        )
    return AuditReport(
        organization_id,
        organization.name,
        findings,
        status=status,
        requested_by=requested_by,
        audited_at=now,
        audit_id=audit_id,
    )


# -- the queue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRunResult:
    """What one pass over the audit queue did."""

    received: int = 0
    audits_completed: int = 0
    #: Audits stored as ``failed`` (the audit itself broke; the report says why).
    audits_failed: int = 0
    #: Messages already answered by a stored report (a redelivery): deleted, not audited.
    duplicates: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: tuple[str, ...] = ()
    #: Messages that should have gone to the DLQ but could not be moved there.
    dead_letter_failures: int = 0
    messages_deleted: int = 0
    delete_failures: int = 0
    #: The reports stored by this pass (the first :data:`MAX_REPORTS`).
    reports: tuple[AuditReport, ...] = ()


@dataclass
class _Tally:
    queue: MessageQueue
    log: logging.Logger
    received: int = 0
    completed: int = 0
    failed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    dead_letter_failures: int = 0
    deleted: int = 0
    delete_failures: int = 0
    reasons: list[str] = field(default_factory=list)
    reports: list[AuditReport] = field(default_factory=list)

    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        if dead_letter(self.queue, message, reason, self.log, "audit"):
            self.dead_lettered += 1
            if len(self.reasons) < MAX_REASONS:
                self.reasons.append(reason)
        else:
            self.dead_letter_failures += 1

    def stored(self, report: AuditReport) -> None:
        if report.audit_id is None:
            self.duplicates += 1
            return
        if report.status is AuditStatus.COMPLETED:
            self.completed += 1
        else:
            self.failed += 1
        if len(self.reports) < MAX_REPORTS:
            self.reports.append(report)

    def delete(self, messages: Sequence[QueueMessage]) -> None:
        failures = delete_processed(self.queue, messages, self.log, "audit")
        self.deleted += len(messages) - failures
        self.delete_failures += failures

    def result(self) -> AuditRunResult:
        return AuditRunResult(
            received=self.received,
            audits_completed=self.completed,
            audits_failed=self.failed,
            duplicates=self.duplicates,
            dead_lettered=self.dead_lettered,
            dead_letter_reasons=tuple(self.reasons),
            dead_letter_failures=self.dead_letter_failures,
            messages_deleted=self.deleted,
            delete_failures=self.delete_failures,
            reports=tuple(self.reports),
        )


def process_audit_queue(
    sessions: SessionFactory,
    queue: MessageQueue,
    vendors: AuditVendors,
    *,
    max_receives: int = 5,
    visibility_timeout: int = 120,
    log: logging.Logger = logger,
    clock: Callable[[], datetime] = _utcnow,
) -> AuditRunResult:
    """One pass over the audit queue: at most ``max_receives`` pages of 10 (see the module
    docstring). ``clock`` is the time audits are made at."""
    tally = _Tally(queue, log)
    for _ in range(max_receives):
        page = queue.receive(MAX_RECEIVE, visibility_timeout=visibility_timeout)
        if not page:
            break
        tally.received += len(page)
        done: list[QueueMessage] = []
        try:
            for index, message in enumerate(page):
                if index:
                    _restart_visibility(queue, message, visibility_timeout, log)
                if _answer(sessions, message, vendors, tally, clock, log):
                    done.append(message)
        finally:
            tally.delete(done)
    result = tally.result()
    if result.received:
        log.info(
            "audit queue %s: %s received, %s audits completed, %s failed, %s duplicates, "
            "%s dead-lettered",
            queue.name,
            result.received,
            result.audits_completed,
            result.audits_failed,
            result.duplicates,
            result.dead_lettered,
        )
    return result


def _answer(
    sessions: SessionFactory,
    message: QueueMessage,
    vendors: AuditVendors,
    tally: _Tally,
    clock: Callable[[], datetime],
    log: logging.Logger,
) -> bool:
    """Answer one message; True when it may be deleted (its report is committed, now or
    before)."""
    try:
        request = parse_audit_request(message.body)
    except MalformedAuditRequest as exc:
        tally.dead_letter(message, str(exc))
        return False
    with sessions() as session:
        earlier = AuditGateway(session).by_source_message(message.message_id)
    if earlier is not None:
        log.info(
            "audit message %s was answered by audit %s already", message.message_id, earlier.id
        )
        tally.duplicates += 1
        return True
    try:
        report = run_audit(
            sessions,
            request.organization_id,
            vendors,
            requested_by=request.requested_by,
            source_message_id=message.message_id,
            now=clock(),
            log=log,
        )
    except UnknownOrganization as exc:
        tally.dead_letter(message, f"{exc} (the audit request's organization_id)")
        return False
    except Exception as exc:
        if is_outage(exc):
            raise
        tally.dead_letter(message, f"the audit report could not be stored: {describe(exc)}")
        return False
    tally.stored(report)
    return True


def _restart_visibility(
    queue: MessageQueue, message: QueueMessage, seconds: int, log: logging.Logger
) -> None:
    """Hide ``message`` for ``seconds`` from now; a failure is logged (if the message comes
    back meanwhile, its report is recognised by its id)."""
    try:
        queue.change_visibility(message.receipt_handle, seconds)
    except IntegrationError as exc:
        log.warning("audit message %s: visibility not extended: %s", message.message_id, exc)


def request_audit(queue: MessageQueue, organization_id: int, requested_by: str) -> str:
    """Put an audit request on the queue; the message id."""
    return queue.send(audit_request_message(organization_id, requested_by))


# -- reading stored audits ----------------------------------------------------------------


def find_organization(sessions: SessionFactory, key: str) -> OrganizationFacts | None:
    """An organization by id or slug."""
    with sessions() as session:
        return AuditGateway(session).find_organization(key)


def recent_audits(
    sessions: SessionFactory, organization_id: int, *, limit: int = 20
) -> list[AuditReport]:
    """The organization's latest stored audits, newest first, as reports."""
    with sessions() as session:
        gateway = AuditGateway(session)
        organization = gateway.organization(organization_id)
        if organization is None:
            raise UnknownOrganization(organization_id)
        return [_report(organization, a) for a in gateway.recent(organization_id, limit)]


def stored_report(sessions: SessionFactory, audit_id: int) -> AuditReport | None:
    with sessions() as session:
        gateway = AuditGateway(session)
        audit = gateway.get(audit_id)
        if audit is None:
            return None
        organization = gateway.organization(audit.organization_id)
        assert organization is not None  # audits.organization_id is a foreign key
        return _report(organization, audit)


def _report(organization: OrganizationFacts, audit: StoredAudit) -> AuditReport:
    return AuditReport(
        organization.id,
        organization.name,
        audit.findings,
        status=audit.status,
        requested_by=audit.requested_by,
        audited_at=audit.created_at,
        audit_id=audit.id,
    )
