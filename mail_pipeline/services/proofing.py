"""Proofing a batch (seed 001 §3): ProofingStaged -> Proofing -> Proofed.

The run takes its batch (ProofingStaged -> Proofing: the batch's lease and fencing token, see
:mod:`mail_pipeline.services.leases`), gives every recipient without one its offer code
(:func:`mail_pipeline.services.offer_codes.assign_offer_codes`: from the organization's pool,
else generated; written under the run's token before anything is rendered, and kept for good),
renders each recipient's postcard with its code and QR link and uploads front and back, with
bounded concurrency inside the run, renewing the lease as it goes. Results are written in small
groups as they finish, each write guarded by the run's token, so a crash loses little and
recovery redoes the rest (uploads are idempotent: the image id is derived from campaign,
recipient and the card's content). A run that finds its batch already returned by recovery does
nothing.

Per recipient, failures stay with that recipient and never stop the batch:

- a request no renderer can draw (bad design, incomplete address) -> ``Error`` with the reason;
- no free offer code after a few draws (practically never: a generated code repeats with
  probability 2^-57) -> back to ``Pending`` like an outage;
- a vendor outage that outlived the retries (every renderer down, image host 429 lockout) ->
  back to ``Pending`` for a later batch, until the recipient has been tried ``max_attempts``
  times; then ``Error`` with the last reason. A recipient whose vendor was not called at all
  (its circuit open: :mod:`mail_pipeline.integrations.circuit`) goes back to ``Pending`` with
  the reason and this claim not counted as an attempt: an outage long enough to keep the
  circuit open through several batches never turns a recipient into ``Error``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import Campaign, Recipient, utcnow
from mail_pipeline.db.recipients import RecipientGateway, campaigns_by_id
from mail_pipeline.domain.claims import DEFAULT_LEASES, LeasePolicy
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.failpoints import failpoint
from mail_pipeline.integrations.circuit import not_called
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.images.cloudflare import CloudflareImages, proof_image_id
from mail_pipeline.integrations.renderer.chain import FallbackRenderer
from mail_pipeline.integrations.renderer.models import (
    InvalidProofRequest,
    PostcardDesign,
    ProofRequest,
)
from mail_pipeline.integrations.renderer.personalize import defaults_used
from mail_pipeline.services.leases import BatchHold, holder_token
from mail_pipeline.services.offer_codes import CodeAssignment, CodeNeed, assign_offer_codes

log = logging.getLogger(__name__)
S = RecipientStatus
FLUSH_EVERY = 25


@dataclass(frozen=True)
class ProofOutcome:
    recipient_id: int
    #: Proofed values on success; None on failure.
    values: dict[str, Any] | None = None
    reason: str | None = None
    retryable: bool = False
    #: The vendor was not called (its circuit was open): not an attempt at this recipient.
    not_called: bool = False
    #: The batch was taken away (recovery returned it): nothing is written for it.
    lost: bool = False


@dataclass
class ProofingResult:
    batch_id: str
    taken: int = 0
    proofed: int = 0
    released: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    renderers: Counter[str] = field(default_factory=Counter)
    #: A few (recipient id, front URL, back URL) to look at.
    samples: list[tuple[int, str, str]] = field(default_factory=list)
    #: Recipients this run no longer held when it came to write (recovery returned them).
    lost: int = 0
    #: False when the batch was not this run's to take (already returned or taken).
    held: bool = True
    #: Why, when ``held`` is False: the batch's lease as the run found it.
    refusal: str | None = None
    #: Offer codes given in this run: drawn from an uploaded pool, or generated.
    codes_from_pool: int = 0
    codes_generated: int = 0
    #: Recipients that already had their code (a re-proof) and kept it.
    codes_kept: int = 0
    #: Campaigns whose uploaded pool ran out in this run (their recipients got generated codes).
    pool_exhausted: list[int] = field(default_factory=list)

    def absorb(self, other: ProofingResult) -> None:
        """Add a later batch's result of the same run to this one."""
        self.taken += other.taken
        self.proofed += other.proofed
        self.released += other.released
        self.errors.update(other.errors)
        self.renderers.update(other.renderers)
        self.samples.extend(other.samples[: max(0, 5 - len(self.samples))])
        self.lost += other.lost
        self.held = self.held or other.held
        self.codes_from_pool += other.codes_from_pool
        self.codes_generated += other.codes_generated
        self.codes_kept += other.codes_kept
        self.pool_exhausted = sorted({*self.pool_exhausted, *other.pool_exhausted})

    def offer_code_metadata(self) -> dict[str, Any]:
        """The run's offer-code figures, for its metadata (no code is listed)."""
        return {
            "offer_codes_from_pool": self.codes_from_pool,
            "offer_codes_generated": self.codes_generated,
            "offer_codes_kept": self.codes_kept,
            "offer_code_pools_exhausted": list(self.pool_exhausted),
        }


def proof_batch(
    sessions: SessionFactory,
    batch_id: str,
    renderer: FallbackRenderer,
    images: CloudflareImages,
    *,
    id_key: str,
    run_id: str | None = None,
    concurrency: int = 16,
    max_attempts: int = 3,
    clock: Callable[[], datetime] = utcnow,
    leases: LeasePolicy = DEFAULT_LEASES,
) -> ProofingResult:
    result = ProofingResult(batch_id)
    hold = BatchHold(sessions, batch_id, holder_token(run_id), policy=leases, clock=clock)
    # A retried op of the same run also finishes what its batch left in Proofing.
    if hold.start(S.PROOFING_STAGED, S.PROOFING) is None:
        result.held = False
        result.refusal = hold.refusal
        return result
    with sessions() as session:
        recipients = RecipientGateway(session).batch(batch_id, S.PROOFING, holder=hold.holder)
        campaigns = campaigns_by_id(session, (r.campaign_id for r in recipients))
    result.taken = len(recipients)
    pending: list[ProofOutcome] = []
    with hold, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        codes = _give_codes(sessions, recipients, campaigns, hold.holder, clock, result)
        futures = [
            pool.submit(
                _proof_one,
                r,
                campaigns[r.campaign_id],
                renderer,
                images,
                clock,
                hold,
                id_key,
                codes,
            )
            for r in recipients
        ]
        for future in as_completed(futures):
            pending.append(future.result())
            if len(pending) >= FLUSH_EVERY:
                _apply(sessions, pending, result, recipients, max_attempts, clock, hold.holder)
                pending = []
        _apply(sessions, pending, result, recipients, max_attempts, clock, hold.holder)
    if not hold.lost.is_set():
        hold.finish()
    return result


def _give_codes(
    sessions: SessionFactory,
    recipients: list[Recipient],
    campaigns: dict[int, Campaign],
    holder: str,
    clock: Callable[[], datetime],
    result: ProofingResult,
) -> CodeAssignment:
    """Offer codes for the recipients that have none and can be proofed (a recipient whose
    design or address cannot be drawn fails at rendering and takes no code from a pool)."""
    needs: list[CodeNeed] = []
    for recipient in recipients:
        if recipient.offer_code:
            result.codes_kept += 1
            continue
        try:
            request = proof_request(recipient, campaigns[recipient.campaign_id])
        except InvalidProofRequest:
            continue
        needs.append(
            CodeNeed(
                recipient.id,
                recipient.organization_id,
                recipient.campaign_id,
                request.design.offer_code_prefix,
            )
        )
    assignment = assign_offer_codes(sessions, needs, holder, clock=clock)
    result.codes_from_pool = assignment.from_pool
    result.codes_generated = assignment.generated
    result.pool_exhausted = sorted(assignment.pool_exhausted)
    return assignment


def _proof_one(
    recipient: Recipient,
    campaign: Campaign,
    renderer: FallbackRenderer,
    images: CloudflareImages,
    clock: Callable[[], datetime],
    hold: BatchHold,
    id_key: str,
    codes: CodeAssignment,
) -> ProofOutcome:
    if hold.lost.is_set() or recipient.id in codes.lost:
        return ProofOutcome(recipient.id, lost=True)
    try:
        code = recipient.offer_code or codes.codes.get(recipient.id)
        request = proof_request(recipient, campaign, offer_code=code)
        if code is None:
            return ProofOutcome(
                recipient.id, reason="no free offer code could be drawn", retryable=True
            )
        outcome = renderer.render_with_report(request)
        proof = outcome.proof
        failpoint("proofing.rendered")
        fingerprint = request.fingerprint()
        hosted = {}
        for side, png in (("front", proof.front_png), ("back", proof.back_png)):
            image_id = proof_image_id(id_key, campaign.id, recipient.id, fingerprint, side)
            hosted[side] = images.upload(
                image_id,
                png,
                {"recipient_id": recipient.id, "campaign_id": campaign.id, "side": side},
            )
        failpoint("proofing.uploaded")
    except InvalidProofRequest as exc:
        return ProofOutcome(recipient.id, reason=f"cannot proof this recipient: {exc}")
    except IntegrationError as exc:
        return ProofOutcome(
            recipient.id, reason=str(exc), retryable=exc.retryable, not_called=not_called(exc)
        )
    except Exception as exc:
        log.exception("recipient %s: unexpected failure while proofing", recipient.id)
        return ProofOutcome(recipient.id, reason=f"unexpected failure while proofing: {exc!r}")
    return ProofOutcome(
        recipient.id,
        values={
            "proof_front_url": hosted["front"].url,
            "proof_back_url": hosted["back"].url,
            "proof_image_ids": [hosted["front"].id, hosted["back"].id],
            "proof_renderer": proof.renderer,
            # the placeholders printed with the design's default (profile enrichment)
            "proof_defaults": list(defaults_used(request)),
            "proofed_at": clock(),
            "status_reason": None,
        },
    )


def proof_request(
    recipient: Recipient, campaign: Campaign, *, offer_code: str | None = None
) -> ProofRequest:
    """The renderer's request for one recipient, with its offer code (the recipient's stored
    code unless one is given) and the QR link the design makes of it; ``InvalidProofRequest``
    says what is missing."""
    design = PostcardDesign.from_mapping(campaign.design or {})
    code = offer_code or recipient.offer_code
    lines = tuple(line for line in (recipient.address1, recipient.address2) if line)
    return ProofRequest(
        recipient_id=recipient.id,
        campaign_id=campaign.id,
        design=design,
        address_lines=lines,
        city=recipient.city or "",
        postal_code=recipient.postal_code or "",
        country=recipient.country or "",
        region=recipient.region,
        first_name=recipient.first_name,
        last_name=recipient.last_name,
        properties={k: str(v) for k, v in (recipient.properties or {}).items()},
        offer_code=code,
        qr_url=design.qr_url(code),
    )


def _apply(
    sessions: SessionFactory,
    outcomes: list[ProofOutcome],
    result: ProofingResult,
    recipients: list[Recipient],
    max_attempts: int,
    clock: Callable[[], datetime],
    holder: str,
) -> None:
    """Write finished outcomes, each guarded by the run's fencing token."""
    if not outcomes:
        return
    attempts = {r.id: r.attempts for r in recipients}
    now = clock()
    proofed: dict[int, dict[str, Any]] = {}
    released: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    for outcome in outcomes:
        rid = outcome.recipient_id
        if outcome.lost:
            result.lost += 1
        elif outcome.values is not None:
            proofed[rid] = outcome.values
        elif outcome.retryable and (outcome.not_called or attempts.get(rid, 0) < max_attempts):
            tried = attempts.get(rid, 0)
            released[rid] = {
                "status_reason": f"will retry: {outcome.reason or 'proofing failed'}",
                # the claim counted an attempt; a vendor that was not called was not tried
                "attempts": max(0, tried - 1) if outcome.not_called else tried,
            }
        elif outcome.retryable:
            reason = outcome.reason or "proofing failed"
            errors[rid] = f"gave up after {attempts.get(rid, 0)} attempts: {reason}"
        else:
            errors[rid] = outcome.reason or "proofing failed"
    with sessions() as session:
        gateway = RecipientGateway(session)
        moved = set(gateway.transition_each(proofed, S.PROOFING, S.PROOFED, now=now, holder=holder))
        back = set(gateway.transition_each(released, S.PROOFING, S.PENDING, now=now, holder=holder))
        failed = set(gateway.mark_errors(errors, S.PROOFING, now=now, holder=holder))
    for rid, values in proofed.items():
        if rid not in moved:
            result.lost += 1
            continue
        result.proofed += 1
        result.renderers[values["proof_renderer"]] += 1
        if len(result.samples) < 5:
            result.samples.append((rid, values["proof_front_url"], values["proof_back_url"]))
    for rid, values in released.items():
        if rid in back:
            result.released += 1
            log.warning("recipient %s released for retry: %s", rid, values["status_reason"])
        else:
            result.lost += 1
    for rid, reason in errors.items():
        if rid in failed:
            result.errors[rid] = reason
        else:
            result.lost += 1
