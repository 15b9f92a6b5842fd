"""Address enrichment's tables: the batches (``enrichment_batches``) and the cache of answers
(``enrichment_cache``), and the batch's recipients as the enrichment needs them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import (
    Campaign,
    EnrichmentBatch,
    EnrichmentCacheEntry,
    Organization,
    Recipient,
)
from mail_pipeline.domain.recipients import RecipientStatus

#: A batch's states: its recipients were claimed (not yet accepted by the vendor), the vendor
#: has it, or it ended.
CLAIMED, SUBMITTED = "claimed", "submitted"
COMPLETED, FAILED, TIMED_OUT = "completed", "failed", "timed_out"
OPEN = (CLAIMED, SUBMITTED)


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    organization_id: int
    status: str
    external_id: str | None
    recipient_count: int
    submitted_at: datetime | None
    deadline_at: datetime | None


@dataclass(frozen=True)
class EnrichingRecipient:
    """A recipient of a batch still waiting for its address, with what judging it needs."""

    id: int
    organization_id: int
    email: str | None
    email_key: str | None
    first_name: str | None
    last_name: str | None
    postal_code: str | None
    attempts: int
    home_country: str | None
    printer_preference: str | None


@dataclass(frozen=True)
class CachedAnswer:
    matched: bool
    address: Mapping[str, Any] | None


class EnrichmentGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create_batch(
        self, batch_id: str, organization_id: int, recipients: int, provider: str, now: datetime
    ) -> None:
        self.session.add(
            EnrichmentBatch(
                batch_id=batch_id,
                organization_id=organization_id,
                provider=provider,
                status=CLAIMED,
                recipient_count=recipients,
                matched_count=0,
                created_at=now,
                updated_at=now,
            )
        )
        self.session.flush()

    def open_batches(self, organization_id: int | None = None) -> list[BatchRecord]:
        stmt = select(
            EnrichmentBatch.batch_id,
            EnrichmentBatch.organization_id,
            EnrichmentBatch.status,
            EnrichmentBatch.external_id,
            EnrichmentBatch.recipient_count,
            EnrichmentBatch.submitted_at,
            EnrichmentBatch.deadline_at,
        ).where(EnrichmentBatch.status.in_(OPEN))
        if organization_id is not None:
            stmt = stmt.where(EnrichmentBatch.organization_id == organization_id)
        return [
            BatchRecord(*row) for row in self.session.execute(stmt.order_by(EnrichmentBatch.id))
        ]

    def count_open(self) -> int:
        stmt = select(func.count()).where(EnrichmentBatch.status.in_(OPEN))
        return int(self.session.scalar(stmt) or 0)

    def waiting(self, batch_id: str) -> list[EnrichingRecipient]:
        """The batch's recipients still in AddressEnriching, by id."""
        stmt = (
            select(
                Recipient.id,
                Recipient.organization_id,
                Recipient.email,
                Recipient.email_key,
                Recipient.first_name,
                Recipient.last_name,
                Recipient.postal_code,
                Recipient.attempts,
                Organization.country.label("home_country"),
                Organization.printer_preference,
            )
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(
                Recipient.batch_id == batch_id,
                Recipient.status == RecipientStatus.ADDRESS_ENRICHING,
            )
            .order_by(Recipient.id)
        )
        return [EnrichingRecipient(**row._asdict()) for row in self.session.execute(stmt)]

    def organization_countries(self, organization_ids: Iterable[int]) -> dict[int, str]:
        ids = sorted(set(organization_ids))
        stmt = select(Organization.id, Organization.country).where(Organization.id.in_(ids))
        return {int(org): str(country) for org, country in self.session.execute(stmt)}

    def enrichable_ids(self, organization_id: int, campaign_statuses: Iterable[Any]) -> list[int]:
        """The organization's AddressEnrichable recipients in campaigns of those statuses."""
        stmt = (
            select(Recipient.id)
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                Recipient.organization_id == organization_id,
                Recipient.status == RecipientStatus.ADDRESS_ENRICHABLE,
                Campaign.status.in_(list(campaign_statuses)),
            )
        )
        return list(self.session.scalars(stmt))

    def mark_submitted(
        self, batch_id: str, external_id: str, *, people: int, now: datetime, deadline: datetime
    ) -> None:
        self.session.execute(
            update(EnrichmentBatch)
            .where(EnrichmentBatch.batch_id == batch_id, EnrichmentBatch.status == CLAIMED)
            .values(
                status=SUBMITTED,
                external_id=external_id,
                submitted_at=now,
                deadline_at=deadline,
                updated_at=now,
            )
        )

    def add_counts(self, batch_id: str, counts: Mapping[str, int], now: datetime) -> None:
        """Add to the batch's ``cached_count``, ``matched_count``, ``unmatched_count``,
        ``refused_count``."""
        columns = {name: getattr(EnrichmentBatch, name) + value for name, value in counts.items()}
        self.session.execute(
            update(EnrichmentBatch)
            .where(EnrichmentBatch.batch_id == batch_id)
            .values(**columns, updated_at=now)
        )

    def finish(self, batch_id: str, status: str, now: datetime, error: str | None = None) -> None:
        self.session.execute(
            update(EnrichmentBatch)
            .where(EnrichmentBatch.batch_id == batch_id, EnrichmentBatch.status.in_(OPEN))
            .values(status=status, error=error, completed_at=now, updated_at=now)
        )

    # --- the cache ------------------------------------------------------------------------

    def cached(self, keys: Iterable[str], since: datetime) -> dict[str, CachedAnswer]:
        """The answers remembered for ``keys`` at or after ``since``."""
        wanted = sorted(set(keys))
        found: dict[str, CachedAnswer] = {}
        for start in range(0, len(wanted), 500):
            stmt = select(
                EnrichmentCacheEntry.lookup_key,
                EnrichmentCacheEntry.matched,
                EnrichmentCacheEntry.result,
            ).where(
                EnrichmentCacheEntry.lookup_key.in_(wanted[start : start + 500]),
                EnrichmentCacheEntry.created_at >= since,
            )
            for key, matched, result in self.session.execute(stmt):
                found[key] = CachedAnswer(bool(matched), result)
        return found

    def remember(self, answers: Mapping[str, Mapping[str, Any] | None], now: datetime) -> None:
        """Store each key's answer (an address, or None for no match), replacing older ones."""
        if not answers:
            return
        rows = [
            {
                "lookup_key": key,
                "matched": address is not None,
                "result": address,
                "created_at": now,
            }
            for key, address in answers.items()
        ]
        stmt = dialect_insert(self.session)(EnrichmentCacheEntry).values(rows)
        self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[EnrichmentCacheEntry.lookup_key],
                set_={
                    "matched": stmt.excluded.matched,
                    "result": stmt.excluded.result,
                    "created_at": stmt.excluded.created_at,
                },
            )
        )

    def delete_cache_before(self, cutoff: datetime) -> int:
        result = self.session.execute(
            delete(EnrichmentCacheEntry).where(EnrichmentCacheEntry.created_at < cutoff)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
