"""Uploaded lists in the database (``upload_batches``; rules: ``domain.uploads``; use
cases: ``services.uploads``): whose a file is, what a campaign already holds, a batch's row,
and a committed batch's recipients or do-not-mail entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import BlocklistEntry, Campaign, Organization, Recipient, UploadBatch
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus
from mail_pipeline.domain.recipients import RecipientStatus

AWAITING = "awaiting_approval"
COMMITTED = "committed"
REJECTED = "rejected"
#: Campaigns an uploaded list may still join.
OPEN_STATUSES = (CampaignStatus.PENDING, CampaignStatus.ACTIVE, CampaignStatus.PAUSED)


@dataclass(frozen=True)
class UploadOwner:
    organization_id: int
    organization_name: str
    home_country: str | None
    printer_preference: str | None
    trusted: bool
    campaign_id: int | None = None
    campaign_name: str | None = None


class UploadGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def owner(self, slug: str, campaign_id: int | None) -> UploadOwner | str:
        """Who owns an upload (the organization by slug, its campaign), or why nobody may:
        unknown organization or campaign, not a one-off, already completed."""
        organization = self.session.scalar(select(Organization).where(Organization.slug == slug))
        if organization is None:
            return f"there is no organization {slug!r}"
        owner = UploadOwner(
            organization.id,
            organization.name,
            organization.country,
            organization.printer_preference,
            organization.auto_commit_uploads,
        )
        if campaign_id is None:
            return owner
        campaign = self.session.get(Campaign, campaign_id)
        if campaign is None or campaign.organization_id != organization.id:
            return f"organization {slug!r} has no campaign {campaign_id}"
        if campaign.campaign_mode != CampaignMode.ONE_OFF:
            return (
                f"campaign {campaign.name!r} is automated: lists are uploaded to one-off campaigns"
            )
        if campaign.status not in OPEN_STATUSES:
            return f"campaign {campaign.name!r} is {campaign.status}: it takes no more recipients"
        return UploadOwner(
            **{**owner.__dict__, "campaign_id": campaign.id, "campaign_name": campaign.name}
        )

    def campaign_keys(self, campaign_id: int) -> tuple[frozenset[str], frozenset[str]]:
        rows = self.session.execute(
            select(Recipient.email_key, Recipient.address_key).where(
                Recipient.campaign_id == campaign_id
            )
        ).all()
        return (
            frozenset(e for e, _ in rows if e),
            frozenset(a for _, a in rows if a),
        )

    def batch_for(self, source: str, sha256: str) -> UploadBatch | None:
        return self.session.scalar(
            select(UploadBatch).where(UploadBatch.source == source, UploadBatch.sha256 == sha256)
        )

    def add_batch(self, **values: Any) -> UploadBatch:
        batch = UploadBatch(**values)
        self.session.add(batch)
        self.session.flush()
        return batch

    def get(self, batch_id: int) -> UploadBatch | None:
        return self.session.get(UploadBatch, batch_id)

    def decide(self, batch_id: int, status: str, values: dict[str, Any]) -> bool:
        """Move a batch awaiting approval to ``status``; False when it no longer awaits."""
        result = self.session.execute(
            update(UploadBatch)
            .where(UploadBatch.id == batch_id, UploadBatch.status == AWAITING)
            .values(status=status, **values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def add_recipients(
        self, owner: UploadOwner, rows: Sequence[dict[str, Any]], now: datetime
    ) -> int:
        """Insert the list's recipients (Pending); a profile the campaign already has (a
        sync or another upload got there first) is left alone. Returns how many were new."""
        if not rows:
            return 0
        values = [
            {
                **row,
                "organization_id": owner.organization_id,
                "campaign_id": owner.campaign_id,
                "status": RecipientStatus.PENDING,
                "status_changed_at": now,
                "source": "upload",
                "created_at": now,
                "updated_at": now,
            }
            for row in rows
        ]
        inserted = 0
        for start in range(0, len(values), 1000):
            stmt = (
                dialect_insert(self.session)(Recipient)
                .values(values[start : start + 1000])
                .on_conflict_do_nothing(index_elements=["campaign_id", "external_profile_id"])
                .returning(Recipient.id)
            )
            inserted += len(self.session.scalars(stmt).all())
        return inserted

    def add_do_not_mail(
        self, organization_id: int, entries: Sequence[tuple[str, str]], reason: str, now: datetime
    ) -> int:
        if not entries:
            return 0
        inserted = 0
        for start in range(0, len(entries), 1000):
            stmt = (
                dialect_insert(self.session)(BlocklistEntry)
                .values(
                    [
                        {
                            "organization_id": organization_id,
                            "kind": kind,
                            "value": value,
                            "reason": reason,
                            "created_at": now,
                        }
                        for kind, value in entries[start : start + 1000]
                    ]
                )
                .on_conflict_do_nothing(index_elements=["organization_id", "kind", "value"])
                .returning(BlocklistEntry.id)
            )
            inserted += len(self.session.scalars(stmt).all())
        return inserted
