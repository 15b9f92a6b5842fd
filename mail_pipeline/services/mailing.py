"""Mailing a batch (seed 001 §4): SendingStaged -> Sending -> Sent.

The run takes its batch (SendingStaged -> Sending: the batch's lease and fencing token, see
:mod:`mail_pipeline.services.leases`) and renews the lease while it works; every write is
guarded by the token, and a run whose batch was returned by recovery stops before asking a
printer for anything. For each recipient, with bounded concurrency inside the run:

1. the address is checked and the printer chosen by the strategy (the organization's
   preference, else the country's default); a bad address or an unroutable country puts the
   recipient in ``Error`` before anything is asked of anyone; a new postcard then passes the
   gate: a suppression that applies since the sync (``domain.suppressions``) makes the
   recipient ``Skipped`` with the rule, a pause or a full daily cap (``domain.sending``)
   sends it back to ``Proofed`` with the reason, before any printer is asked;
2. the mailpiece row with the recipient's idempotency key is **committed before the printer
   is called**, in a transaction that also checks the run still holds the recipient. If the
   row was already there (a resumed run), the printer is first asked whether it has a piece
   with that key (reconciliation, which also covers crashes older than the printer's 24 h
   idempotency window); only if it has none is the postcard created, with the same key. A
   postcard is never printed twice. A piece the printer failed or cancelled after accepting
   it is dead: a retried recipient gets a new print attempt with a new key;
3. the printer's answer is committed; a refusal (4xx) is ``Error`` with the printer's
   reason (no postcard exists); an outage that outlived the retries leaves the recipient in
   ``Sending`` for recovery to resume;
4. each follow-up - Stripe meter event, Klaviyo "Postcard Sent" event, deletion of the
   hosted proof images - gets a ledger row with its key before the call and is marked done
   after it. A retryable failure leaves the recipient in ``Sending`` (resumed later, same
   keys); a permanent one is recorded on the ledger row and reported, and the recipient
   still becomes ``Sent``, because the postcard is in the mail;
5. ``Sending -> Sent``.

The run takes its recipients through these steps a chunk at a time (``CHUNK_SIZE``, several
chunks in flight): each step is one transaction for the whole chunk - the attempts written
together before any printer of the chunk is asked, the printers' answers written together,
the follow-ups' keys, then their results and ``Sent`` - and the vendor calls of a step run
concurrently (the meter events of a chunk in one call, and its Klaviyo events in one bulk call
per Klaviyo account: ``_send_cdp_events``). A chunk holds at most the run's
``concurrency`` recipients, and at most ``CHUNKS_IN_FLIGHT`` chunks are past the gate at once:
a pause that lands mid-run is honoured from the next chunk. A chunk
that fails as a whole (a database error mid-step) is taken again recipient by recipient
(``_mail_one``), which resumes from what the ledger holds, as a resumed run does.

Recipients left in ``Sending`` (a retryable outage) are handed to recovery: the lease is
handed back to expire ``LeasePolicy.deferred`` later, when a new mailing run resumes them with
the same keys.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.mailpiece_status import MailpieceStatusGateway
from mail_pipeline.db.mailpieces import MailpieceLedger, MailpieceRecord, PieceRequest
from mail_pipeline.db.models import Campaign, Organization, Recipient
from mail_pipeline.db.models import utcnow as _utcnow
from mail_pipeline.db.organizations import cdp_integrations
from mail_pipeline.db.recipients import RecipientGateway, campaigns_by_id, organizations_by_id
from mail_pipeline.db.sending import SendGate
from mail_pipeline.domain.addresses import Address, InvalidAddress
from mail_pipeline.domain.claims import DEFAULT_LEASES, LeasePolicy
from mail_pipeline.domain.ledger import SideEffectKind, ledger_kind
from mail_pipeline.domain.mailpieces import MailpieceStatus, PrintedPiece
from mail_pipeline.domain.metrics import day_of
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.sending import paused_reason
from mail_pipeline.failpoints import failpoint
from mail_pipeline.integrations.billing import InvalidUsageEvents, StripeMeter, UsageEvent
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient
from mail_pipeline.integrations.klaviyo.models import CdpEvent
from mail_pipeline.integrations.printers.base import PostcardRequest, Printer
from mail_pipeline.integrations.printers.strategy import PrinterStrategy, RoutingError
from mail_pipeline.integrations.queues.base import MessageQueue
from mail_pipeline.services.image_cleanup import deletion_message
from mail_pipeline.services.leases import BatchHold, holder_token

log = logging.getLogger(__name__)
S = RecipientStatus
CDP_EVENT = "Postcard Sent"
#: Recipients taken through each step together (one transaction per step per chunk).
CHUNK_SIZE = 25
#: Chunks in flight at once in a run; their vendor calls share the run's ``concurrency``.
CHUNKS_IN_FLIGHT = 4


class CdpClients(Protocol):
    def client_for(self, integration: IntegrationRef) -> KlaviyoClient: ...


@dataclass(frozen=True)
class MailingServices:
    """Everything a mailing run talks to."""

    printers: PrinterStrategy
    billing: StripeMeter
    cdp: CdpClients
    image_deletions: MessageQueue
    test_mode: bool = True


class Result(StrEnum):
    SENT = "sent"
    ERROR = "error"
    DEFERRED = "deferred"
    #: Back to Proofed before the printer was asked: a pause or a daily cap (``domain.sending``).
    HELD_BACK = "held_back"
    #: Skipped before the printer was asked: a suppression (``domain.suppressions``).
    SUPPRESSED = "suppressed"
    #: The run no longer held the recipient (recovery returned its batch): nothing done.
    LOST = "lost"


@dataclass(frozen=True)
class MailOutcome:
    recipient_id: int
    result: Result
    reason: str | None = None
    printer: str | None = None
    reconciled: bool = False
    created: bool = False
    follow_up_failures: tuple[str, ...] = ()


@dataclass
class MailingResult:
    batch_id: str
    taken: int = 0
    sent: int = 0
    #: Left in Sending (an outage outlived the retries); recovery resumes them.
    deferred: dict[int, str] = field(default_factory=dict)
    #: Back to Proofed, with the reason: paused, or a daily cap reached.
    held_back: dict[int, str] = field(default_factory=dict)
    #: Skipped, with the suppression that applied since the sync.
    suppressed: dict[int, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    printers: Counter[str] = field(default_factory=Counter)
    #: Postcards the printer already had when asked (a resumed run's reconciliation).
    reconciled: int = 0
    #: Postcards this run's printer calls created (also those of a chunk that was then taken
    #: again one by one, which finds them on the ledger or at the printer).
    created: int = 0
    #: Permanent failures of billing/CDP/image follow-ups, for an operator.
    follow_up_failures: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: Recipients this run no longer held when it came to them (recovery returned them).
    lost: int = 0
    #: False when the batch was not this run's to take (already returned or taken).
    held: bool = True
    #: Why, when ``held`` is False: the batch's lease as the run found it.
    refusal: str | None = None

    def absorb(self, other: MailingResult) -> None:
        """Add a later batch's result of the same run to this one."""
        self.taken += other.taken
        self.sent += other.sent
        self.deferred.update(other.deferred)
        self.held_back.update(other.held_back)
        self.suppressed.update(other.suppressed)
        self.errors.update(other.errors)
        self.printers.update(other.printers)
        self.reconciled += other.reconciled
        self.created += other.created
        self.follow_up_failures.update(other.follow_up_failures)
        self.lost += other.lost
        self.held = self.held or other.held


@dataclass(frozen=True)
class _Context:
    campaign: Campaign
    organization: Organization
    cdp: IntegrationRef | None


def mail_batch(
    sessions: SessionFactory,
    batch_id: str,
    services: MailingServices,
    *,
    run_id: str | None = None,
    concurrency: int = 16,
    chunk_size: int = CHUNK_SIZE,
    clock: Callable[[], datetime] = _utcnow,
    leases: LeasePolicy = DEFAULT_LEASES,
) -> MailingResult:
    result = MailingResult(batch_id)
    hold = BatchHold(sessions, batch_id, holder_token(run_id), policy=leases, clock=clock)
    if hold.start(S.SENDING_STAGED, S.SENDING) is None:
        result.held = False
        result.refusal = hold.refusal
        return result
    with sessions() as session:
        recipients = RecipientGateway(session).batch(batch_id, S.SENDING, holder=hold.holder)
        contexts = _contexts(session, recipients)
    result.taken = len(recipients)
    with (
        hold,
        _CachedCdp(services.cdp) as cdp,
        ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="vendor") as calls,
        ThreadPoolExecutor(
            min(CHUNKS_IN_FLIGHT, concurrency), thread_name_prefix="chunk"
        ) as chunks,
    ):
        work = _ChunkWork(sessions, replace(services, cdp=cdp), contexts, clock, hold, calls)
        # A chunk's printer calls run at once: a chunk larger than the run's concurrency
        # would only wait, and would take more recipients past the gate (a pause is honoured
        # from the next chunk on).
        size = max(1, min(chunk_size, concurrency))
        outcomes = [
            outcome
            for part in chunks.map(work.mail, _chunked(recipients, size))
            for outcome in part
        ]
    for outcome in outcomes:
        if outcome.printer:
            result.printers[outcome.printer] += 1
        result.reconciled += outcome.reconciled
        result.created += outcome.created
        if outcome.follow_up_failures:
            result.follow_up_failures[outcome.recipient_id] = outcome.follow_up_failures
        if outcome.result is Result.SENT:
            result.sent += 1
        elif outcome.result is Result.ERROR:
            result.errors[outcome.recipient_id] = outcome.reason or "mailing failed"
        elif outcome.result is Result.LOST:
            result.lost += 1
        elif outcome.result is Result.HELD_BACK:
            result.held_back[outcome.recipient_id] = outcome.reason or "held back"
        elif outcome.result is Result.SUPPRESSED:
            result.suppressed[outcome.recipient_id] = outcome.reason or "suppressed"
        else:
            result.deferred[outcome.recipient_id] = outcome.reason or "deferred"
    if not hold.lost.is_set():
        hold.finish(unfinished=len(result.deferred))
    return result


def _contexts(session: Session, recipients: list[Recipient]) -> dict[int, _Context]:
    campaigns = campaigns_by_id(session, (r.campaign_id for r in recipients))
    organizations = organizations_by_id(session, (r.organization_id for r in recipients))
    integrations = cdp_integrations(session, organizations)
    return {
        r.id: _Context(
            campaigns[r.campaign_id],
            organizations[r.organization_id],
            integrations.get(r.organization_id),
        )
        for r in recipients
    }


def _mail_safely(
    sessions: SessionFactory,
    recipient: Recipient,
    context: _Context,
    services: MailingServices,
    clock: Callable[[], datetime],
    hold: BatchHold,
) -> MailOutcome:
    if hold.lost.is_set():
        return MailOutcome(recipient.id, Result.LOST, "the batch was returned by recovery")
    try:
        return _mail_one(sessions, recipient, context, services, clock, hold.holder)
    except Exception as exc:
        log.exception("recipient %s: unexpected failure; left in Sending", recipient.id)
        return MailOutcome(recipient.id, Result.DEFERRED, f"unexpected failure: {exc!r}")


def _mail_one(
    sessions: SessionFactory,
    recipient: Recipient,
    context: _Context,
    services: MailingServices,
    clock: Callable[[], datetime],
    holder: str,
) -> MailOutcome:
    rid = recipient.id
    with sessions() as session:
        mailpiece = MailpieceLedger(session).current(rid)
    if mailpiece is None or mailpiece.provider_piece_id is None or mailpiece.dead:
        try:
            request, printer = _postcard(
                recipient,
                context,
                services,
                None if mailpiece is None or mailpiece.dead else mailpiece,
            )
        except (InvalidAddress, RoutingError) as exc:
            return _error(sessions, rid, f"cannot mail this recipient: {exc}", clock, holder)
        # A new postcard passes the gate (pause, daily caps) in the transaction that writes
        # its row; a resumed attempt's row says the decision was made (domain.sending).
        gated = mailpiece is None or mailpiece.dead
        day = day_of(clock())
        with sessions() as session:
            if not RecipientGateway(session).holds(rid, S.SENDING, holder):
                return MailOutcome(rid, Result.LOST, "the batch was returned by recovery")
            if gated:
                gate, now = SendGate(session), clock()
                stopped = _gate(gate, recipient, day, now, holder, gate.suppression(recipient, now))
                if stopped is not None:
                    return stopped
            mailpiece = MailpieceLedger(session).request(
                recipient_id=rid,
                organization_id=recipient.organization_id,
                campaign_id=recipient.campaign_id,
                printer=printer.name,
                postage=context.campaign.postage,
            )
        request = _with_key(request, mailpiece.idempotency_key)
        try:
            piece, reconciled = _print_once(printer, request, mailpiece)
        except IntegrationError as exc:
            if exc.retryable:
                return MailOutcome(rid, Result.DEFERRED, str(exc), printer=printer.name)
            with sessions() as session:
                MailpieceLedger(session).rejected(mailpiece.id, now=clock())
                if gated:  # nothing was printed: its places under the caps are free again
                    SendGate(session).release(recipient.campaign_id, day)
            return _error(
                sessions, rid, f"{printer.name} refused the postcard: {exc}", clock, holder
            )
        with sessions() as session:
            # The printer's answer is a fact worth keeping whoever holds the recipient now.
            MailpieceLedger(session).accepted(mailpiece.id, piece, now=clock())
            mailpiece = MailpieceLedger(session).current(rid)
        assert mailpiece is not None
        created, reconciled_flag = not reconciled, reconciled
    else:
        created, reconciled_flag = False, False
    with sessions() as session:
        if not RecipientGateway(session).holds(rid, S.SENDING, holder):
            # Recovery returned the batch: the run that holds it now finishes the follow-ups.
            return MailOutcome(
                rid,
                Result.LOST,
                "the batch was returned by recovery",
                printer=mailpiece.printer,
                reconciled=reconciled_flag,
                created=created,
            )
    deferred, failures = _follow_ups(sessions, recipient, context, services, mailpiece)
    if deferred:
        return MailOutcome(
            rid,
            Result.DEFERRED,
            deferred,
            printer=mailpiece.printer,
            reconciled=reconciled_flag,
            created=created,
            follow_up_failures=failures,
        )
    with sessions() as session:
        sent = RecipientGateway(session).transition(
            rid,
            S.SENDING,
            S.SENT,
            now=clock(),
            values={"sent_at": clock(), "status_reason": None},
            holder=holder,
        )
        # A delivery or failure webhook may have been applied while it was still Sending.
        MailpieceStatusGateway(session).settle_sent([rid], now=clock())
    if not sent:
        return MailOutcome(rid, Result.LOST, "the batch was returned by recovery")
    return MailOutcome(
        rid,
        Result.SENT,
        printer=mailpiece.printer,
        reconciled=reconciled_flag,
        created=created,
        follow_up_failures=failures,
    )


def _gate(
    gate: SendGate,
    recipient: Recipient,
    day: date,
    now: datetime,
    holder: str,
    suppressed: str | None,
) -> MailOutcome | None:
    """The gate before a new postcard (``domain.suppressions``, ``domain.sending``): a
    suppression (``suppressed``: :meth:`SendGate.suppression`, or one of a chunk's
    :meth:`SendGate.suppressions`) makes the recipient Skipped, a pause or a full cap sends it
    back to Proofed, each with the reason; ``None`` when it may be printed (its places under
    the caps taken)."""
    held = None
    if suppressed is None:
        held = paused_reason(gate.facts(recipient.campaign_id)) or gate.reserve(
            recipient.campaign_id, day
        )
    reason = suppressed or held
    if reason is None:
        return None
    RecipientGateway(gate.session).transition(
        recipient.id,
        S.SENDING,
        S.SKIPPED if suppressed else S.PROOFED,
        now=now,
        values={"status_reason": reason},
        holder=holder,
    )
    return MailOutcome(recipient.id, Result.SUPPRESSED if suppressed else Result.HELD_BACK, reason)


def _postcard(
    recipient: Recipient,
    context: _Context,
    services: MailingServices,
    existing: MailpieceRecord | None,
) -> tuple[PostcardRequest, Printer]:
    """The request (without its key yet) and the printer: the one already on the ledger
    for a resumed attempt, else the strategy's choice."""
    to = Address.build(
        name=" ".join(p for p in (recipient.first_name, recipient.last_name) if p),
        line1=recipient.address1,
        line2=recipient.address2,
        city=recipient.city,
        region=recipient.region,
        postal_code=recipient.postal_code,
        country=recipient.country,
    )
    if existing is not None and existing.printer in services.printers.printers:
        printer = services.printers.printers[existing.printer]
    else:
        printer = services.printers.choose(to.country, context.organization.printer_preference)
    if not (recipient.proof_front_url and recipient.proof_back_url):
        raise InvalidAddress("the recipient has no proof images")
    request = PostcardRequest(
        idempotency_key="",
        recipient_id=recipient.id,
        campaign_id=recipient.campaign_id,
        organization_id=recipient.organization_id,
        to=to,
        front_url=recipient.proof_front_url,
        back_url=recipient.proof_back_url,
        postage=str(
            existing.postage if existing and existing.postage else context.campaign.postage
        ),
        size=str((context.campaign.design or {}).get("size") or "4x6"),
        sender=_sender(context.organization),
        test_mode=services.test_mode,
    )
    return request, printer


def _with_key(request: PostcardRequest, key: str) -> PostcardRequest:
    return replace(request, idempotency_key=key)


def _print_once(
    printer: Printer, request: PostcardRequest, mailpiece: MailpieceRecord
) -> tuple[PrintedPiece, bool]:
    """Create the postcard, unless an earlier attempt already did (then return that one)."""
    if not mailpiece.new:
        found = printer.find_postcard(request.idempotency_key, request.recipient_id)
        if found is not None:
            log.info(
                "recipient %s: %s already had piece %s (reconciled)",
                request.recipient_id,
                printer.name,
                found.provider_piece_id,
            )
            return found, True
    return printer.create_postcard(request), False


def _follow_ups(
    sessions: SessionFactory,
    recipient: Recipient,
    context: _Context,
    services: MailingServices,
    mailpiece: MailpieceRecord,
) -> tuple[str | None, tuple[str, ...]]:
    """Run the pending follow-ups; return (a retryable failure, permanent failures)."""
    failures: list[str] = []
    for effect, action in _follow_up_actions(recipient, context, services, mailpiece):
        kind = ledger_kind(effect, mailpiece.attempt)
        with sessions() as session:
            ledger = MailpieceLedger(session)
            if ledger.side_effect_done(recipient.id, kind):
                continue
            key = ledger.begin_side_effect(recipient.id, kind)
        try:
            action(key)
        except IntegrationError as exc:
            with sessions() as session:
                if exc.retryable:
                    MailpieceLedger(session).side_effect_deferred(key, str(exc))
                    return f"{kind} will be retried: {exc}", tuple(failures)
                MailpieceLedger(session).finish_side_effect(key, error=str(exc))
            failures.append(f"{kind}: {exc}")
            log.error("recipient %s: %s failed for good: %s", recipient.id, kind, exc)
            continue
        with sessions() as session:
            MailpieceLedger(session).finish_side_effect(key)
    return None, tuple(failures)


def _follow_up_actions(
    recipient: Recipient,
    context: _Context,
    services: MailingServices,
    mailpiece: MailpieceRecord,
) -> list[tuple[SideEffectKind, Callable[[str], object]]]:
    """The follow-ups a mailed recipient has, in order, each a call taking its ledger key."""
    mailed_at = mailpiece.accepted_at or _utcnow()
    actions: list[tuple[SideEffectKind, Callable[[str], object]]] = []
    if context.organization.stripe_customer_id:
        customer = context.organization.stripe_customer_id
        actions.append(
            (
                SideEffectKind.BILLING,
                lambda key: services.billing.record_usage(
                    customer_id=customer, identifier=key, value=1, timestamp=mailed_at
                ),
            )
        )
    if context.cdp is not None and (recipient.email or recipient.external_profile_id):
        cdp = context.cdp
        actions.append(
            (
                SideEffectKind.CDP_EVENT,
                lambda key: _cdp_event(
                    services, cdp, recipient, context, mailpiece, key, mailed_at
                ),
            )
        )
    if recipient.proof_image_ids:
        ids = list(recipient.proof_image_ids)
        actions.append(
            (
                SideEffectKind.IMAGE_DELETION,
                lambda key: _enqueue_deletion(services.image_deletions, recipient.id, ids),
            )
        )
    return actions


def _cdp_event(
    services: MailingServices,
    cdp: IntegrationRef,
    recipient: Recipient,
    context: _Context,
    mailpiece: MailpieceRecord,
    key: str,
    mailed_at: datetime,
) -> None:
    client = services.cdp.client_for(cdp)
    client.send_event(_cdp_event_of(recipient, context, mailpiece, key, mailed_at))


def _cdp_event_of(
    recipient: Recipient,
    context: _Context,
    mailpiece: MailpieceRecord,
    key: str,
    mailed_at: datetime,
) -> CdpEvent:
    """The "Postcard Sent" event of a mailed recipient; its ledger key is its ``unique_id``."""
    return CdpEvent(
        metric_name=CDP_EVENT,
        unique_id=key,
        email=recipient.email,
        profile_id=None if recipient.email else recipient.external_profile_id,
        properties={
            "campaign_id": context.campaign.id,
            "campaign_name": context.campaign.name,
            "printer": mailpiece.printer,
            "provider_piece_id": mailpiece.provider_piece_id or "",
        },
        time=mailed_at,
    )


#: A bulk call Klaviyo refuses with one of these names an invalid event: the chunk's events
#: are then sent one by one, so only that event is refused and the others are recorded.
_INVALID_JOB_STATUSES = frozenset({400, 413, 422})


def _send_cdp_events(
    clients: CdpClients, cdp: IntegrationRef, events: Mapping[str, CdpEvent]
) -> dict[str, IntegrationError]:
    """A chunk's events for one Klaviyo account in one bulk call; returns the events refused
    for good (by ledger key, each with Klaviyo's reason) after the others were recorded.

    Klaviyo validates a job whole, so an invalid event refuses the call: the events are then
    sent one by one (each keeps its ``unique_id``, so one recorded by an earlier call is not
    recorded twice) and only the invalid one is refused. Any other permanent refusal (a
    revoked key) refuses every event of the call; a retryable failure is raised, and the
    whole chunk's events are retried later with the same keys.
    """
    if not events:
        return {}
    client = clients.client_for(cdp)
    try:
        client.send_events(list(events.values()))
    except IntegrationError as exc:
        if exc.retryable:
            raise
        if exc.status_code not in _INVALID_JOB_STATUSES:
            return dict.fromkeys(events, exc)
        refused: dict[str, IntegrationError] = {}
        for key, event in events.items():
            try:
                client.send_event(event)
            except IntegrationError as single:
                if single.retryable:
                    raise
                refused[key] = single
        return refused
    return {}


def _record_usage(meter: StripeMeter, events: list[UsageEvent]) -> dict[str, IntegrationError]:
    """Record a chunk's meter events in one call; returns the events Stripe would drop (by
    identifier, each with its reason as a permanent error) after sending the others."""
    if not events:
        return {}
    try:
        meter.record_usage_many(events)
    except InvalidUsageEvents as exc:
        refused: dict[str, IntegrationError] = {
            key: InvalidUsageEvents({key: reason}, 1) for key, reason in exc.problems.items()
        }
        rest = [e for e in events if e.identifier not in refused]
        if rest:
            meter.record_usage_many(rest)
        return refused
    return {}


def _enqueue_deletion(queue: MessageQueue, recipient_id: int, image_ids: list[str]) -> None:
    queue.send(deletion_message(recipient_id, image_ids))


def _sender(organization: Organization) -> Address | None:
    raw: Mapping[str, Any] | None = organization.return_address
    if not raw:
        return None
    try:
        return Address.build(
            name=raw.get("name"),
            line1=raw.get("line1"),
            line2=raw.get("line2"),
            city=raw.get("city"),
            region=raw.get("region"),
            postal_code=raw.get("postal_code"),
            country=raw.get("country"),
        )
    except InvalidAddress:
        log.warning("organization %s has an unusable return address", organization.id)
        return None


def _error(
    sessions: SessionFactory,
    recipient_id: int,
    reason: str,
    clock: Callable[[], datetime],
    holder: str,
) -> MailOutcome:
    with sessions() as session:
        marked = RecipientGateway(session).mark_error(
            recipient_id, S.SENDING, reason, now=clock(), holder=holder
        )
    if not marked:
        return MailOutcome(recipient_id, Result.LOST, "the batch was returned by recovery")
    return MailOutcome(recipient_id, Result.ERROR, reason)


# -- the chunk path: each step once per chunk ---------------------------------------------


def _chunked(recipients: Sequence[Recipient], size: int) -> Iterator[list[Recipient]]:
    step = max(1, size)
    for start in range(0, len(recipients), step):
        yield list(recipients[start : start + step])


def _cdp_account(integration: IntegrationRef) -> tuple[int, str, str]:
    """The Klaviyo account an integration names: one client, and one bulk call per chunk."""
    return (integration.organization_id, str(integration.kind), integration.secret_ref)


class _CachedCdp:
    """One CDP client per integration for the whole run (a client per event would build a
    connection pool, and a TLS context, per postcard); closed when the run's batch is done."""

    def __init__(self, inner: CdpClients) -> None:
        self.inner = inner
        self._clients: dict[tuple[int, str, str], KlaviyoClient] = {}
        self._lock = threading.Lock()

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        key = _cdp_account(integration)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self.inner.client_for(integration)
            return client

    def __enter__(self) -> _CachedCdp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


@dataclass(frozen=True)
class _Printing:
    recipient: Recipient
    request: PostcardRequest
    printer: Printer
    #: The recipient's latest attempt before this run wrote anything (None: none).
    before: MailpieceRecord | None

    @property
    def gated(self) -> bool:
        """A new postcard (no attempt yet, or a dead one) passes the gate first."""
        return self.before is None or self.before.dead


@dataclass(frozen=True)
class _FollowUp:
    recipient: Recipient
    mailpiece: MailpieceRecord
    created: bool
    reconciled: bool


@dataclass(frozen=True)
class _ChunkWork:
    """A chunk of a batch taken through the steps of mailing together (see the module's
    docstring); every write carries the run's fencing token, as ``_mail_one``'s do."""

    sessions: SessionFactory
    services: MailingServices
    contexts: Mapping[int, _Context]
    clock: Callable[[], datetime]
    hold: BatchHold
    calls: ThreadPoolExecutor

    def mail(self, chunk: list[Recipient]) -> list[MailOutcome]:
        if self.hold.lost.is_set():
            return [_lost(r.id) for r in chunk]
        created: set[int] = set()
        try:
            return self._mail(chunk, created)
        except Exception:
            # Whatever was committed is on the ledger; one by one resumes from it (the
            # printer is asked for an attempt already written before it is asked to print).
            log.exception("a chunk of %s recipients failed; mailing them one by one", len(chunk))
            outcomes = [
                _mail_safely(
                    self.sessions, r, self.contexts[r.id], self.services, self.clock, self.hold
                )
                for r in chunk
            ]
            # A postcard the chunk's printer call created was created by this run, although
            # one by one finds it on the ledger or at the printer.
            return [replace(o, created=True) if o.recipient_id in created else o for o in outcomes]

    def _mail(self, chunk: list[Recipient], created: set[int]) -> list[MailOutcome]:
        outcomes: dict[int, MailOutcome] = {}
        with self.sessions() as session:
            current = MailpieceLedger(session).current_many([r.id for r in chunk])
        printing: dict[int, _Printing] = {}
        unmailable: dict[int, str] = {}
        follow: list[_FollowUp] = []
        for recipient in chunk:
            piece = current.get(recipient.id)
            if piece is not None and piece.provider_piece_id is not None and not piece.dead:
                follow.append(_FollowUp(recipient, piece, created=False, reconciled=False))
                continue
            resumable = None if piece is None or piece.dead else piece
            try:
                request, printer = _postcard(
                    recipient, self.contexts[recipient.id], self.services, resumable
                )
            except (InvalidAddress, RoutingError) as exc:
                unmailable[recipient.id] = f"cannot mail this recipient: {exc}"
                continue
            printing[recipient.id] = _Printing(recipient, request, printer, piece)
        records = self._write_attempts(chunk, printing, unmailable, current, outcomes)
        follow += self._print(printing, records, outcomes, created)
        self._follow_up(follow, outcomes)
        return [outcomes.get(r.id) or _lost(r.id) for r in chunk]

    def _write_attempts(
        self,
        chunk: list[Recipient],
        printing: dict[int, _Printing],
        unmailable: dict[int, str],
        current: Mapping[int, MailpieceRecord],
        outcomes: dict[int, MailOutcome],
    ) -> dict[int, MailpieceRecord]:
        """One transaction: the unmailable in Error, the gate for new postcards, and the print
        attempts written (committed before any printer of the chunk is asked)."""
        by_id = {r.id: r for r in chunk}
        now = self.clock()
        day = day_of(now)
        holder = self.hold.holder
        with self.sessions() as session:
            recipients = RecipientGateway(session)
            held = recipients.held([*printing, *unmailable], S.SENDING, holder)
            errors = {rid: reason for rid, reason in unmailable.items() if rid in held}
            for rid in recipients.mark_errors(errors, S.SENDING, now=now, holder=holder):
                outcomes[rid] = MailOutcome(rid, Result.ERROR, errors[rid])
            gate = SendGate(session)
            suppressed = gate.suppressions(
                [by_id[rid] for rid, job in printing.items() if rid in held and job.gated], now
            )
            requests: list[PieceRequest] = []
            for rid, job in list(printing.items()):
                if rid not in held:
                    del printing[rid]
                    continue
                if job.gated:
                    stopped = _gate(gate, by_id[rid], day, now, holder, suppressed.get(rid))
                    if stopped is not None:
                        outcomes[rid] = stopped
                        del printing[rid]
                        continue
                recipient = by_id[rid]
                requests.append(
                    PieceRequest(
                        recipient_id=rid,
                        organization_id=recipient.organization_id,
                        campaign_id=recipient.campaign_id,
                        printer=job.printer.name,
                        postage=self.contexts[rid].campaign.postage,
                    )
                )
            written = MailpieceLedger(session).request_many(requests, current)
        failpoint("mailing.attempts_written")
        return written

    def _print(
        self,
        printing: dict[int, _Printing],
        records: Mapping[int, MailpieceRecord],
        outcomes: dict[int, MailOutcome],
        created: set[int],
    ) -> list[_FollowUp]:
        """Ask the printers (concurrently), then write every answer in one transaction;
        ``created`` gets the recipients whose postcard a printer created here."""
        if not printing or self.hold.lost.is_set():
            return []
        futures = {
            rid: self.calls.submit(
                _print_once,
                job.printer,
                _with_key(job.request, records[rid].idempotency_key),
                records[rid],
            )
            for rid, job in printing.items()
        }
        accepted: dict[int, tuple[PrintedPiece, bool]] = {}
        refused: dict[int, IntegrationError] = {}
        for rid, future in futures.items():
            name = printing[rid].printer.name
            try:
                accepted[rid] = future.result()
                if not accepted[rid][1]:  # not reconciled: this call created the postcard
                    created.add(rid)
            except IntegrationError as exc:
                if exc.retryable:
                    outcomes[rid] = MailOutcome(rid, Result.DEFERRED, str(exc), printer=name)
                else:
                    refused[rid] = exc
            except Exception as exc:
                log.exception("recipient %s: unexpected failure while printing", rid)
                outcomes[rid] = MailOutcome(
                    rid, Result.DEFERRED, f"unexpected failure: {exc!r}", printer=name
                )
        if accepted:
            failpoint("mailing.printed")
        now = self.clock()
        day = day_of(now)
        with self.sessions() as session:
            ledger = MailpieceLedger(session)
            # The printers' answers are facts worth keeping whoever holds the recipients now.
            ledger.accepted_many({records[rid].id: piece for rid, (piece, _r) in accepted.items()})
            gate = SendGate(session)
            reasons: dict[int, str] = {}
            for rid, refusal in refused.items():
                ledger.rejected(records[rid].id, now=now)
                job = printing[rid]
                if job.gated:  # nothing was printed: its places under the caps are free again
                    gate.release(job.request.campaign_id, day)
                reasons[rid] = f"{job.printer.name} refused the postcard: {refusal}"
            marked = set(
                RecipientGateway(session).mark_errors(
                    reasons, S.SENDING, now=now, holder=self.hold.holder
                )
            )
        for rid, reason in reasons.items():
            outcomes[rid] = MailOutcome(rid, Result.ERROR, reason) if rid in marked else _lost(rid)
        follow: list[_FollowUp] = []
        for rid, (piece, reconciled) in accepted.items():
            record = replace(
                records[rid],
                provider_piece_id=piece.provider_piece_id,
                status=MailpieceStatus.CREATED,
                accepted_at=now,
            )
            follow.append(
                _FollowUp(
                    printing[rid].recipient, record, created=not reconciled, reconciled=reconciled
                )
            )
        return follow

    def _cdp_calls(
        self, items: Mapping[tuple[int, str], _FollowUp], keys: Mapping[tuple[int, str], str]
    ) -> list[tuple[list[tuple[int, str]], Future[Any]]]:
        """The chunk's Klaviyo events submitted as one bulk call per Klaviyo account: each
        call's follow-ups and its future (an event that cannot be built fails alone)."""
        accounts: dict[
            tuple[int, str, str], tuple[IntegrationRef, dict[tuple[int, str], CdpEvent]]
        ] = {}
        calls: list[tuple[list[tuple[int, str]], Future[Any]]] = []
        for pair, item in items.items():
            context = self.contexts[item.recipient.id]
            ref = context.cdp
            if ref is None:
                continue
            try:
                event = _cdp_event_of(
                    item.recipient,
                    context,
                    item.mailpiece,
                    keys[pair],
                    item.mailpiece.accepted_at or _utcnow(),
                )
            except ValueError as exc:
                calls.append(([pair], _failed(exc)))
                continue
            accounts.setdefault(_cdp_account(ref), (ref, {}))[1][pair] = event
        for ref, events in accounts.values():
            future = self.calls.submit(
                _send_cdp_events,
                self.services.cdp,
                ref,
                {keys[pair]: event for pair, event in events.items()},
            )
            calls.append((list(events), future))
        return calls

    def _follow_up(self, follow: list[_FollowUp], outcomes: dict[int, MailOutcome]) -> None:
        """The follow-ups' keys written, their calls made (concurrently), their results and
        ``Sent`` written: two transactions for the chunk."""
        if not follow:
            return
        holder = self.hold.holder
        planned: dict[tuple[int, str], Callable[[str], object]] = {}
        #: The chunk's meter events, sent in one call: (recipient, kind) -> (customer, time).
        usage: dict[tuple[int, str], tuple[str, datetime]] = {}
        #: The chunk's Klaviyo events, one bulk call per account: (recipient, kind) -> item.
        cdp: dict[tuple[int, str], _FollowUp] = {}
        with self.sessions() as session:
            held = RecipientGateway(session).held(
                [f.recipient.id for f in follow], S.SENDING, holder
            )
            for item in follow:
                rid = item.recipient.id
                if rid not in held:
                    # Recovery returned the batch: the run that holds it now finishes them.
                    outcomes[rid] = _lost(rid, item)
                    continue
                context = self.contexts[rid]
                for effect, action in _follow_up_actions(
                    item.recipient, context, self.services, item.mailpiece
                ):
                    pair = (rid, ledger_kind(effect, item.mailpiece.attempt))
                    planned[pair] = action
                    customer = context.organization.stripe_customer_id
                    if effect is SideEffectKind.BILLING and customer:
                        usage[pair] = (customer, item.mailpiece.accepted_at or _utcnow())
                    elif effect is SideEffectKind.CDP_EVENT:
                        cdp[pair] = item
            ledger = MailpieceLedger(session)
            settled = ledger.side_effects_settled(
                {rid for rid, _k in planned}, {k for _r, k in planned}
            )
            todo = {pair: action for pair, action in planned.items() if pair not in settled}
            keys = ledger.begin_side_effects(list(todo))
        failpoint("mailing.follow_ups_begun")
        events = {
            pair: UsageEvent(customer, keys[pair], 1, mailed_at)
            for pair, (customer, mailed_at) in usage.items()
            if pair in todo
        }
        billed = self.calls.submit(_record_usage, self.services.billing, list(events.values()))
        futures: dict[tuple[int, str], Future[Any]] = dict.fromkeys(events, billed)
        batched: set[Future[Any]] = {billed}
        for pairs, future in self._cdp_calls(
            {pair: item for pair, item in cdp.items() if pair in todo}, keys
        ):
            batched.add(future)
            futures.update(dict.fromkeys(pairs, future))
        for pair, action in todo.items():
            if pair not in futures:
                futures[pair] = self.calls.submit(action, keys[pair])
        done: list[str] = []
        failed: dict[str, str] = {}
        deferred: dict[str, str] = {}
        retry: dict[int, str] = {}
        failures: dict[int, list[str]] = {}
        for (rid, kind), future in futures.items():
            key = keys[(rid, kind)]
            try:
                answer = future.result()
                if future in batched and key in answer:
                    raise answer[key]
            except IntegrationError as exc:
                if exc.retryable:
                    deferred[key] = str(exc)
                    retry.setdefault(rid, f"{kind} will be retried: {exc}")
                else:
                    failed[key] = str(exc)
                    failures.setdefault(rid, []).append(f"{kind}: {exc}")
                    log.error("recipient %s: %s failed for good: %s", rid, kind, exc)
                continue
            except Exception as exc:
                log.exception("recipient %s: unexpected failure of %s", rid, kind)
                deferred[key] = f"unexpected failure: {exc!r}"
                retry.setdefault(rid, f"{kind}: unexpected failure: {exc!r}")
                continue
            done.append(key)
        if done:
            failpoint("mailing.follow_ups_called")
        mailable = [f.recipient.id for f in follow if f.recipient.id in held]
        now = self.clock()
        with self.sessions() as session:
            MailpieceLedger(session).finish_side_effects(
                done, failed=failed, deferred=deferred, now=now
            )
            sent = set(
                RecipientGateway(session).transition_many(
                    [rid for rid in mailable if rid not in retry],
                    S.SENDING,
                    S.SENT,
                    now=now,
                    values={"sent_at": now, "status_reason": None},
                    holder=holder,
                )
            )
            # A delivery or failure webhook may have been applied while it was still Sending.
            MailpieceStatusGateway(session).settle_sent(sorted(sent), now=now)
        for item in follow:
            rid = item.recipient.id
            if rid not in held:
                continue
            if rid in retry:
                result, reason = Result.DEFERRED, retry[rid]
            elif rid in sent:
                result, reason = Result.SENT, None
            else:
                result, reason = Result.LOST, "the batch was returned by recovery"
            outcomes[rid] = MailOutcome(
                rid,
                result,
                reason,
                printer=item.mailpiece.printer,
                reconciled=item.reconciled,
                created=item.created,
                follow_up_failures=tuple(failures.get(rid, ())),
            )


def _failed(exc: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(exc)
    return future


def _lost(recipient_id: int, item: _FollowUp | None = None) -> MailOutcome:
    if item is None:
        return MailOutcome(recipient_id, Result.LOST, "the batch was returned by recovery")
    return MailOutcome(
        recipient_id,
        Result.LOST,
        "the batch was returned by recovery",
        printer=item.mailpiece.printer,
        reconciled=item.reconciled,
        created=item.created,
    )
