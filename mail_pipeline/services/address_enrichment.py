"""Address enrichment as use cases: start batches (four times a day), poll open batches and
apply their answers, delete old cache rows. Rules: ``domain.address_enrichment``.

Every step is safe to repeat after a crash at any point:

- the claim and the batch's record are one transaction: a batch exists exactly when its
  recipients are in AddressEnriching with its id;
- a batch is submitted by name (its id), and the vendor client finds a batch of that name
  instead of creating a second (``integrations.enrichment``): a crash after the vendor
  accepted it and before ``submitted`` was recorded leaves it ``claimed``, and the next poll
  submits it again, which finds the same target;
- answers are applied in one transaction per batch, to recipients still in AddressEnriching
  (an answer applied twice finds nobody left to move); the batch is completed in the same
  transaction;
- a batch that fails or runs past its deadline returns its recipients: nothing is lost.

One organization's vendor failure is recorded for it (the run names it) and never stops the
others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.enrichment import (
    CLAIMED,
    COMPLETED,
    FAILED,
    TIMED_OUT,
    BatchRecord,
    EnrichingRecipient,
    EnrichmentGateway,
)
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.recipients import RecipientGateway, new_batch_id
from mail_pipeline.domain.address_enrichment import (
    BATCH_SIZE,
    BATCH_TIMEOUT,
    CACHE_TTL,
    ENRICHMENT_COUNTRIES,
    GAVE_UP,
    MAX_ATTEMPTS,
    NO_EMAIL,
    NO_MATCH,
    NOT_COVERED,
    OPEN_BATCHES_PER_ORGANIZATION,
    REFUSED,
    identity_key,
)
from mail_pipeline.domain.campaigns import CampaignStatus
from mail_pipeline.domain.profiles import Destination, ProfileData, judge_profile
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.enrichment.base import (
    AddressEnricher,
    AppendedAddress,
    BatchState,
    IdentityRow,
)
from mail_pipeline.integrations.errors import IntegrationError

S = RecipientStatus
#: Recipients of campaigns in these statuses are enriched (a scheduled campaign's too, so its
#: addresses are ready when it starts).
CAMPAIGN_STATUSES = frozenset({CampaignStatus.PENDING, CampaignStatus.ACTIVE})
#: The recipient columns an appended address fills.
ADDRESS_COLUMNS = ("address1", "address2", "city", "region", "postal_code", "country")


@dataclass
class EnrichmentOutcome:
    """What a start or a poll did, for the run's metadata."""

    batches_started: int = 0
    batches_completed: int = 0
    batches_returned: int = 0
    claimed: int = 0
    submitted: int = 0
    from_cache: int = 0
    matched: int = 0
    unmatched: int = 0
    refused: int = 0
    returned: int = 0
    gave_up: int = 0
    #: Recipients of organizations outside the vendor's countries, Skipped with why.
    not_covered: int = 0
    #: Organization id -> why its batches could not be started or polled.
    failed: dict[int, str] = field(default_factory=dict)

    def add(self, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)


def _address_of(address: AppendedAddress) -> dict[str, str | None]:
    return {
        "address1": address.line1,
        "address2": address.line2,
        "city": address.city,
        "region": address.state,
        "postal_code": address.postcode,
        "country": address.country,
    }


def _decide(
    recipients: RecipientGateway,
    person: EnrichingRecipient,
    address: dict[str, str | None] | None,
    now: datetime,
) -> str:
    """Move one recipient by its answer; returns the counter it adds to."""
    if address is None:
        recipients.transition(
            person.id, S.ADDRESS_ENRICHING, S.SKIPPED, now=now, values={"status_reason": NO_MATCH}
        )
        return "unmatched"
    judged = judge_profile(
        ProfileData(
            profile_id=str(person.id),
            email=person.email,
            first_name=person.first_name,
            last_name=person.last_name,
            address1=address.get("address1"),
            address2=address.get("address2"),
            city=address.get("city"),
            region=address.get("region"),
            postal_code=address.get("postal_code"),
            country=address.get("country"),
        ),
        Destination(home_country=person.home_country, printer_preference=person.printer_preference),
    )
    if judged.problem or not judged.has_address:
        reason = REFUSED.format(problem=judged.problem or "the address is incomplete")
        recipients.transition(
            person.id, S.ADDRESS_ENRICHING, S.SKIPPED, now=now, values={"status_reason": reason}
        )
        return "refused"
    values = {column: judged.values[column] for column in ADDRESS_COLUMNS}
    values["address_key"] = judged.address_key
    recipients.transition(person.id, S.ADDRESS_ENRICHING, S.PENDING, now=now, values=values)
    return "matched"


def _apply(
    session_gateways: tuple[RecipientGateway, EnrichmentGateway],
    batch_id: str,
    people: Sequence[EnrichingRecipient],
    answers: dict[str, dict[str, str | None] | None],
    now: datetime,
    *,
    cached: bool,
) -> dict[str, int]:
    """Decide each of ``people`` whose identity ``answers`` holds; count the outcomes."""
    recipients, enrichment = session_gateways
    counts = {"matched": 0, "unmatched": 0, "refused": 0}
    for person in people:
        key = identity_key(person.organization_id, person.email_key or "")
        if key in answers:
            counts[_decide(recipients, person, answers[key], now)] += 1
    decided = sum(counts.values())
    columns = {
        "matched_count": counts["matched"],
        "unmatched_count": counts["unmatched"],
        "refused_count": counts["refused"],
    }
    if cached:
        columns["cached_count"] = decided
    enrichment.add_counts(batch_id, columns, now)
    return {**counts, "from_cache": decided if cached else 0}


def submit_batch(
    sessions: SessionFactory, enricher: AddressEnricher, batch_id: str, *, now: datetime
) -> dict[str, int]:
    """Decide what the cache and the data already answer, submit the rest to the vendor and
    record it. Safe to call again for a batch still ``claimed`` (see the module)."""
    with sessions() as session:
        recipients, enrichment = RecipientGateway(session), EnrichmentGateway(session)
        people = enrichment.waiting(batch_id)
        no_email = [p.id for p in people if not p.email_key]
        recipients.transition_many(
            no_email, S.ADDRESS_ENRICHING, S.SKIPPED, now=now, values={"status_reason": NO_EMAIL}
        )
        people = [p for p in people if p.email_key]
        keys = {identity_key(p.organization_id, p.email_key or "") for p in people}
        remembered = enrichment.cached(keys, now - CACHE_TTL)
        answers = {
            k: (dict(a.address) if a.matched and a.address else None) for k, a in remembered.items()
        }
        counts = _apply((recipients, enrichment), batch_id, people, answers, now, cached=True)
        counts["unmatched"] += len(no_email)
        enrichment.add_counts(batch_id, {"unmatched_count": len(no_email)}, now)
        rows: dict[str, IdentityRow] = {}
        for person in people:
            key = identity_key(person.organization_id, person.email_key or "")
            if key not in answers:
                rows.setdefault(
                    key,
                    IdentityRow(
                        reference=key,
                        email=person.email,
                        first_name=person.first_name,
                        last_name=person.last_name,
                        postcode=person.postal_code,
                    ),
                )
        if not rows:
            enrichment.finish(batch_id, COMPLETED, now)
            return {**counts, "submitted": 0, "completed": 1}
    # Outside any transaction: the vendor call may take seconds.
    external_id = enricher.submit(batch_id, list(rows.values()))
    with sessions() as session:
        EnrichmentGateway(session).mark_submitted(
            batch_id, external_id, people=len(rows), now=now, deadline=now + BATCH_TIMEOUT
        )
    return {**counts, "submitted": len(rows), "completed": 0}


def _return_batch(
    sessions: SessionFactory, batch: BatchRecord, status: str, reason: str, now: datetime
) -> dict[str, int]:
    """The vendor failed or the batch ran out of time: its recipients wait for the next
    batch, except those it was the :data:`MAX_ATTEMPTS`-th try for (Skipped, with why)."""
    with sessions() as session:
        recipients, enrichment = RecipientGateway(session), EnrichmentGateway(session)
        people = enrichment.waiting(batch.batch_id)
        spent = [p.id for p in people if p.attempts >= MAX_ATTEMPTS]
        recipients.transition_many(
            spent,
            S.ADDRESS_ENRICHING,
            S.SKIPPED,
            now=now,
            values={"status_reason": GAVE_UP.format(attempts=MAX_ATTEMPTS, reason=reason)},
        )
        returned = recipients.return_batch(
            batch.batch_id, S.ADDRESS_ENRICHING, S.ADDRESS_ENRICHABLE, now=now
        )
        enrichment.finish(batch.batch_id, status, now, error=reason)
    return {"returned": len(returned), "gave_up": len(spent), "batches_returned": 1}


def _skip_not_covered(
    sessions: SessionFactory, organization_id: int, country: str, now: datetime
) -> int:
    with sessions() as session:
        ids = EnrichmentGateway(session).enrichable_ids(organization_id, CAMPAIGN_STATUSES)
        reason = NOT_COVERED.format(country=country or "an unknown country")
        moved = RecipientGateway(session).transition_many(
            ids, S.ADDRESS_ENRICHABLE, S.SKIPPED, now=now, values={"status_reason": reason}
        )
    return len(moved)


def start_batches(
    sessions: SessionFactory,
    enricher: AddressEnricher,
    *,
    provider: str,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    organization_ids: Sequence[int] = (),
) -> EnrichmentOutcome:
    """Claim the waiting recipients of every organization (or of ``organization_ids``) into
    batches, up to :data:`OPEN_BATCHES_PER_ORGANIZATION` open per organization, and submit
    them."""
    now = now or utcnow()
    outcome = EnrichmentOutcome()
    waiting = [
        organization
        for organization in organizations_waiting(sessions)
        if not organization_ids or organization in organization_ids
    ]
    with sessions() as session:
        countries = EnrichmentGateway(session).organization_countries(waiting)
    for organization_id in waiting:
        country = countries.get(organization_id, "")
        if country not in ENRICHMENT_COUNTRIES:
            outcome.not_covered += _skip_not_covered(sessions, organization_id, country, now)
            continue
        try:
            while True:
                with sessions() as session:
                    enrichment = EnrichmentGateway(session)
                    if (
                        len(enrichment.open_batches(organization_id))
                        >= OPEN_BATCHES_PER_ORGANIZATION
                    ):
                        break
                    claim = RecipientGateway(session).claim_batch(
                        S.ADDRESS_ENRICHABLE,
                        S.ADDRESS_ENRICHING,
                        batch_size,
                        organization_id=organization_id,
                        campaign_statuses=CAMPAIGN_STATUSES,
                        batch_id=new_batch_id("enrich"),
                        now=now,
                    )
                    if not claim.ids:
                        break
                    enrichment.create_batch(
                        claim.batch_id, organization_id, len(claim.ids), provider, now
                    )
                outcome.batches_started += 1
                outcome.claimed += len(claim.ids)
                counts = submit_batch(sessions, enricher, claim.batch_id, now=now)
                outcome.batches_completed += counts.pop("completed")
                outcome.add(counts)
                if len(claim.ids) < batch_size:
                    break
        except IntegrationError as exc:
            # The batch stays ``claimed``: the next poll submits it again.
            outcome.failed[organization_id] = str(exc)
    return outcome


def poll_batches(
    sessions: SessionFactory, enricher: AddressEnricher, *, now: datetime | None = None
) -> EnrichmentOutcome:
    """Look at every open batch: submit one still ``claimed``, give up one past its deadline,
    return one the vendor failed, apply one that is ready."""
    now = now or utcnow()
    outcome = EnrichmentOutcome()
    with sessions() as session:
        batches = EnrichmentGateway(session).open_batches()
    for batch in batches:
        try:
            if batch.status == CLAIMED:
                counts = submit_batch(sessions, enricher, batch.batch_id, now=now)
                outcome.batches_completed += counts.pop("completed")
                outcome.add(counts)
                continue
            if batch.deadline_at is not None and now >= batch.deadline_at:
                reason = f"the vendor did not finish the batch within {BATCH_TIMEOUT}"
                outcome.add(_return_batch(sessions, batch, TIMED_OUT, reason, now))
                continue
            poll = enricher.poll(batch.external_id or "")
        except IntegrationError as exc:
            outcome.failed[batch.organization_id] = f"batch {batch.batch_id}: {exc}"
            continue
        if poll.state == BatchState.RUNNING:
            continue
        if poll.state == BatchState.FAILED:
            reason = f"the vendor failed the batch: {poll.reason or 'no reason given'}"
            outcome.add(_return_batch(sessions, batch, FAILED, reason, now))
            continue
        with sessions() as session:
            recipients, enrichment = RecipientGateway(session), EnrichmentGateway(session)
            people = enrichment.waiting(batch.batch_id)
            found = {match.reference: _address_of(match) for match in poll.matches}
            answers: dict[str, dict[str, str | None] | None] = {}
            for person in people:
                key = identity_key(person.organization_id, person.email_key or "")
                answers[key] = found.get(key)
            counts = _apply(
                (recipients, enrichment), batch.batch_id, people, answers, now, cached=False
            )
            enrichment.remember(answers, now)
            enrichment.finish(batch.batch_id, COMPLETED, now)
        outcome.batches_completed += 1
        outcome.add(counts)
    return outcome


def open_batch_count(sessions: SessionFactory) -> int:
    """How many batches wait for the vendor (claimed or submitted)."""
    with sessions() as session:
        return EnrichmentGateway(session).count_open()


def organizations_waiting(sessions: SessionFactory) -> list[int]:
    """Organizations with AddressEnrichable recipients a batch could take."""
    with sessions() as session:
        return RecipientGateway(session).organizations_waiting(
            S.ADDRESS_ENRICHABLE, CAMPAIGN_STATUSES
        )


def delete_expired_cache(sessions: SessionFactory, *, now: datetime | None = None) -> int:
    """Delete the cached answers older than :data:`CACHE_TTL`; returns how many."""
    now = now or utcnow()
    with sessions() as session:
        return EnrichmentGateway(session).delete_cache_before(now - CACHE_TTL)
