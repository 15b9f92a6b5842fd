"""What an organization audit reads, and where its report is kept (``audits``).

Reads: the organization, its enabled integrations, its live campaigns (not Completed), and
facts about its recipients - counts per state, Errors without a reason, claims older than a
cutoff. Each is one query on existing indexes ((status, organization_id, id) for the
recipients).

Writes: :meth:`AuditGateway.record` stores one report. A report answering a queue message
carries the message's id in ``source_message_id`` (unique), and the insert does nothing when
that id is already there: a message delivered twice is audited once, whichever delivery is
stored first.

The gateway works inside the caller's session and transaction; it never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import (
    Audit,
    Campaign,
    Organization,
    OrganizationIntegration,
    Recipient,
)
from mail_pipeline.domain.audits import (
    MAX_EXAMPLES,
    AuditStatus,
    Finding,
    OrganizationFacts,
    RecipientFacts,
    StuckClaim,
)
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus
from mail_pipeline.domain.recipients import RecipientStatus


@dataclass(frozen=True)
class CampaignRow:
    """A live campaign as the audit reads it (the design as stored)."""

    id: int
    name: str
    mode: CampaignMode
    status: CampaignStatus
    segment_id: str | None
    design: dict[str, Any]
    start_date: date | None
    mail_date: date | None
    daily_send_cap: int | None
    total_send_cap: int | None


@dataclass(frozen=True)
class StoredAudit:
    id: int
    organization_id: int
    source_message_id: str | None
    requested_by: str | None
    status: AuditStatus
    findings: tuple[Finding, ...]
    created_at: datetime
    completed_at: datetime | None


class AuditGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- the organization -------------------------------------------------------------------
    def organization(self, organization_id: int) -> OrganizationFacts | None:
        org = self.session.get(Organization, organization_id)
        if org is None:
            return None
        return OrganizationFacts(
            id=org.id,
            name=org.name,
            slug=org.slug,
            status=org.status,
            country=org.country,
            printer_preference=org.printer_preference,
            stripe_customer_id=org.stripe_customer_id,
        )

    def find_organization(self, key: str) -> OrganizationFacts | None:
        """An organization by its id (digits) or its slug."""
        text = key.strip()
        if text.isdigit():
            return self.organization(int(text))
        found = self.session.scalar(select(Organization.id).where(Organization.slug == text))
        return None if found is None else self.organization(found)

    def integrations(self, organization_id: int) -> list[IntegrationRef]:
        """The organization's enabled integrations, in kind order."""
        rows = self.session.scalars(
            select(OrganizationIntegration)
            .where(
                OrganizationIntegration.organization_id == organization_id,
                OrganizationIntegration.enabled.is_(True),
            )
            .order_by(OrganizationIntegration.kind)
        )
        return [
            IntegrationRef(i.organization_id, i.kind, i.secret_ref, dict(i.settings or {}))
            for i in rows
        ]

    def live_campaigns(self, organization_id: int) -> list[CampaignRow]:
        """The organization's campaigns that are not Completed, in id order."""
        rows = self.session.scalars(
            select(Campaign)
            .where(
                Campaign.organization_id == organization_id,
                Campaign.status != CampaignStatus.COMPLETED,
            )
            .order_by(Campaign.id)
        )
        return [
            CampaignRow(
                id=c.id,
                name=c.name,
                mode=c.campaign_mode,
                status=c.status,
                segment_id=c.provider_segment_id,
                design=c.design if isinstance(c.design, dict) else {},
                start_date=c.start_date,
                mail_date=c.mail_date,
                daily_send_cap=c.daily_send_cap,
                total_send_cap=c.total_send_cap,
            )
            for c in rows
        ]

    # -- its recipients ---------------------------------------------------------------------
    def recipient_facts(
        self,
        organization_id: int,
        *,
        stuck_states: Sequence[RecipientStatus],
        claimed_before: datetime,
    ) -> RecipientFacts:
        """Counts per state; Errors without a reason (NULL or blank); and, per state of
        ``stuck_states``, the recipients claimed before ``claimed_before`` or without a
        claim time, with a few ids each."""
        counts = {
            RecipientStatus(status).value: int(n)
            for status, n in self.session.execute(
                select(Recipient.status, func.count())
                .where(Recipient.organization_id == organization_id)
                .group_by(Recipient.status)
            )
        }
        no_reason = (
            Recipient.organization_id == organization_id,
            Recipient.status == RecipientStatus.ERROR,
            or_(Recipient.status_reason.is_(None), func.trim(Recipient.status_reason) == ""),
        )
        unexplained = 0
        examples: list[int] = []
        if counts.get(RecipientStatus.ERROR.value):
            unexplained = self.session.scalar(select(func.count()).where(*no_reason)) or 0
            if unexplained:
                examples = list(
                    self.session.scalars(
                        select(Recipient.id)
                        .where(*no_reason)
                        .order_by(Recipient.id)
                        .limit(MAX_EXAMPLES)
                    )
                )
        stuck: list[StuckClaim] = []
        for status in stuck_states:
            if not counts.get(status.value):
                continue
            old = (
                Recipient.organization_id == organization_id,
                Recipient.status == status,
                or_(Recipient.claimed_at < claimed_before, Recipient.claimed_at.is_(None)),
            )
            n, oldest = self.session.execute(
                select(func.count(), func.min(Recipient.claimed_at)).where(*old)
            ).one()
            if not n:
                continue
            ids = self.session.scalars(
                select(Recipient.id).where(*old).order_by(Recipient.id).limit(MAX_EXAMPLES)
            )
            stuck.append(StuckClaim(status, int(n), oldest, tuple(ids)))
        return RecipientFacts(
            counts=counts,
            errors_without_reason=int(unexplained),
            error_examples=tuple(examples),
            stuck=tuple(stuck),
        )

    # -- reports ----------------------------------------------------------------------------
    def by_source_message(self, source_message_id: str) -> StoredAudit | None:
        row = self.session.scalar(select(Audit).where(Audit.source_message_id == source_message_id))
        return None if row is None else _stored(row)

    def get(self, audit_id: int) -> StoredAudit | None:
        row = self.session.get(Audit, audit_id)
        return None if row is None else _stored(row)

    def recent(self, organization_id: int, limit: int = 20) -> list[StoredAudit]:
        """The organization's latest audits, newest first."""
        rows = self.session.scalars(
            select(Audit)
            .where(Audit.organization_id == organization_id)
            .order_by(Audit.created_at.desc(), Audit.id.desc())
            .limit(limit)
        )
        return [_stored(row) for row in rows]

    def record(
        self,
        *,
        organization_id: int,
        status: AuditStatus,
        findings: Sequence[Finding],
        requested_by: str | None,
        source_message_id: str | None,
        created_at: datetime,
        completed_at: datetime,
    ) -> int | None:
        """Store one report; its id, or ``None`` when a report of ``source_message_id`` is
        already stored (nothing is written then)."""
        statement = (
            dialect_insert(self.session)(Audit)
            .values(
                organization_id=organization_id,
                source_message_id=source_message_id,
                requested_by=requested_by,
                status=status.value,
                findings=[f.to_json() for f in findings],
                created_at=created_at,
                completed_at=completed_at,
            )
            .on_conflict_do_nothing(index_elements=[Audit.source_message_id])
            .returning(Audit.id)
        )
        return self.session.scalar(statement)


def _stored(row: Audit) -> StoredAudit:
    return StoredAudit(
        id=row.id,
        organization_id=row.organization_id,
        source_message_id=row.source_message_id,
        requested_by=row.requested_by,
        status=AuditStatus(row.status),
        findings=tuple(Finding.from_json(doc) for doc in row.findings or []),
        created_at=row.created_at,
        completed_at=row.completed_at,
    )
