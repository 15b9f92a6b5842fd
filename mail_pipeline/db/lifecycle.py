"""The lifecycle's reads and guarded writes (``services.lifecycle`` decides, this applies).

Every write is guarded on the state the decision was made from (``WHERE status = ...``), so
a run that races a person (who paused the campaign a second ago) or a second run changes
nothing twice, and reports what it actually changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import Campaign, Mailpiece, NightlyStepRun, Organization, Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    CsmCadence,
    OrganizationStatus,
    Postage,
)
from mail_pipeline.domain.lifecycle import (
    UNCLAIMED_STATES,
    CampaignFacts,
    OrganizationFacts,
)
from mail_pipeline.domain.metrics import day_of
from mail_pipeline.domain.recipients import RecipientStatus


class LifecycleGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- campaigns -------------------------------------------------------------------------

    def campaigns(
        self,
        statuses: Collection[CampaignStatus],
        *,
        campaign_ids: Collection[int] | None = None,
        organization_ids: Collection[int] | None = None,
        organization_statuses: Collection[OrganizationStatus] = (OrganizationStatus.ACTIVE,),
    ) -> list[CampaignFacts]:
        """Campaigns in ``statuses`` of organizations in ``organization_statuses``,
        optionally only some."""
        stmt = (
            select(Campaign)
            .join(Organization, Organization.id == Campaign.organization_id)
            .where(
                Campaign.status.in_(list(statuses)),
                Organization.status.in_(list(organization_statuses)),
            )
            .order_by(Campaign.id)
        )
        if campaign_ids is not None:
            stmt = stmt.where(Campaign.id.in_(list(campaign_ids)))
        if organization_ids is not None:
            stmt = stmt.where(Campaign.organization_id.in_(list(organization_ids)))
        return [_facts(c) for c in self.session.scalars(stmt)]

    def tallies(self, campaign_ids: Iterable[int]) -> dict[int, Counter[RecipientStatus]]:
        """Recipients per status, per campaign (campaigns without any are absent)."""
        ids = sorted(set(campaign_ids))
        out: dict[int, Counter[RecipientStatus]] = {}
        if not ids:
            return out
        rows = self.session.execute(
            select(Recipient.campaign_id, Recipient.status, func.count())
            .where(Recipient.campaign_id.in_(ids))
            .group_by(Recipient.campaign_id, Recipient.status)
        )
        for campaign_id, status, count in rows:
            out.setdefault(campaign_id, Counter())[RecipientStatus(status)] = count
        return out

    def activate(self, campaign_id: int, now: datetime) -> bool:
        return self._move(
            campaign_id,
            CampaignStatus.PENDING,
            {"status": CampaignStatus.ACTIVE, "activated_at": now, "updated_at": now},
        )

    def complete(
        self,
        campaign_id: int,
        from_statuses: Collection[CampaignStatus],
        reason: str,
        now: datetime,
    ) -> bool:
        stmt = (
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status.in_(list(from_statuses)))
            .values(
                status=CampaignStatus.COMPLETED,
                completed_at=now,
                completed_reason=reason,
                updated_at=now,
            )
        )
        return self._applied(stmt)

    def downgrade_postage(self, campaign_id: int, now: datetime) -> bool:
        stmt = (
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.postage == Postage.FIRST_CLASS)
            .values(postage=Postage.STANDARD, postage_downgraded_at=now, updated_at=now)
        )
        return self._applied(stmt)

    def skip_unclaimed(self, campaign_id: int, reason: str, now: datetime) -> int:
        """Skip the campaign's recipients no run holds (``UNCLAIMED_STATES``), with
        ``reason``; returns how many."""
        recipients = RecipientGateway(self.session)
        return sum(
            recipients.transition_campaign(
                campaign_id,
                status,
                RecipientStatus.SKIPPED,
                now=now,
                values={"status_reason": reason},
            )
            for status in sorted(UNCLAIMED_STATES)
        )

    def completed_with_unclaimed(self) -> list[tuple[int, str, date | None]]:
        """Completed campaigns that still hold recipients no run holds (a run that was
        mailing at the switch-off returned some): (id, name, mail date)."""
        stmt = (
            select(Campaign.id, Campaign.name, Campaign.mail_date)
            .where(
                Campaign.status == CampaignStatus.COMPLETED,
                Campaign.id.in_(
                    select(Recipient.campaign_id).where(
                        Recipient.status.in_(sorted(UNCLAIMED_STATES))
                    )
                ),
            )
            .order_by(Campaign.id)
        )
        return [(r.id, r.name, r.mail_date) for r in self.session.execute(stmt)]

    def _move(self, campaign_id: int, from_status: CampaignStatus, values: dict[str, Any]) -> bool:
        stmt = (
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == from_status)
            .values(values)
        )
        return self._applied(stmt)

    def _applied(self, stmt: Any) -> bool:
        """Whether the guarded ``UPDATE`` changed its row (False: the guard no longer held)."""
        return bool(self.session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    # --- organizations ---------------------------------------------------------------------

    def organizations(
        self, statuses: Collection[OrganizationStatus], *, ids: Collection[int] | None = None
    ) -> list[OrganizationFacts]:
        """Organizations in ``statuses``, with the time a printer first accepted one of
        their postcards."""
        first_mailed = (
            select(Mailpiece.organization_id, func.min(Mailpiece.accepted_at).label("first"))
            .where(Mailpiece.accepted_at.is_not(None))
            .group_by(Mailpiece.organization_id)
            .subquery()
        )
        stmt = (
            select(Organization, first_mailed.c.first)
            .outerjoin(first_mailed, first_mailed.c.organization_id == Organization.id)
            .where(Organization.status.in_(list(statuses)))
            .order_by(Organization.id)
        )
        if ids is not None:
            stmt = stmt.where(Organization.id.in_(list(ids)))
        return [
            OrganizationFacts(
                id=o.id,
                name=o.name,
                status=o.status,
                churned_at=o.churned_at,
                csm_cadence=o.csm_cadence,
                csm_cadence_changed_at=o.csm_cadence_changed_at,
                first_mailed_at=first,
            )
            for o, first in self.session.execute(stmt)
        ]

    def disable(self, organization_id: int, now: datetime) -> bool:
        stmt = (
            update(Organization)
            .where(
                Organization.id == organization_id,
                Organization.status == OrganizationStatus.CHURNED,
            )
            .values(status=OrganizationStatus.DISABLED, disabled_at=now, updated_at=now)
        )
        return self._applied(stmt)

    def pause_automated(self, organization_id: int, now: datetime) -> list[int]:
        """Pause the organization's automated campaigns that are Pending or Active; their
        ids."""
        stmt = (
            update(Campaign)
            .where(
                Campaign.organization_id == organization_id,
                Campaign.campaign_mode == CampaignMode.AUTOMATED,
                Campaign.status.in_([CampaignStatus.PENDING, CampaignStatus.ACTIVE]),
            )
            .values(status=CampaignStatus.PAUSED, updated_at=now)
            .returning(Campaign.id)
        )
        return sorted(self.session.scalars(stmt))

    def set_biweekly(self, organization_id: int, now: datetime) -> bool:
        stmt = (
            update(Organization)
            .where(
                Organization.id == organization_id,
                Organization.csm_cadence == CsmCadence.WEEKLY,
            )
            .values(csm_cadence=CsmCadence.BIWEEKLY, csm_cadence_changed_at=now, updated_at=now)
        )
        return self._applied(stmt)

    # --- nightly steps ---------------------------------------------------------------------

    def begin_step(self, night: date, step: str, run_id: str | None, now: datetime) -> bool:
        """Record ``step`` as done for ``night`` in this transaction; False when it already
        is (another transaction's row: on PostgreSQL this waits for a transaction doing the
        same step to end, and sees its row if it committed)."""
        stmt = (
            dialect_insert(self.session)(NightlyStepRun)
            .values(night=night, step=step, run_id=run_id, summary={}, completed_at=now)
            .on_conflict_do_nothing(index_elements=["night", "step"])
            .returning(NightlyStepRun.id)
        )
        return self.session.scalar(stmt) is not None

    def finish_step(self, night: date, step: str, summary: dict[str, Any]) -> None:
        self.session.execute(
            update(NightlyStepRun)
            .where(NightlyStepRun.night == night, NightlyStepRun.step == step)
            .values(summary=summary)
        )

    def step_done(self, night: date, step: str) -> NightlyStepRun | None:
        return self.session.scalar(
            select(NightlyStepRun).where(NightlyStepRun.night == night, NightlyStepRun.step == step)
        )


def _facts(c: Campaign) -> CampaignFacts:
    return CampaignFacts(
        id=c.id,
        name=c.name,
        mode=c.campaign_mode,
        status=c.status,
        has_segment=bool(c.provider_segment_id),
        start_date=c.start_date,
        mail_date=c.mail_date,
        created_on=day_of(c.created_at),
        activated_on=day_of(c.activated_at) if c.activated_at else None,
        last_synced_at=c.last_synced_at,
        postage=c.postage,
        postage_downgrade_after_days=c.postage_downgrade_after_days,
        total_send_cap=c.total_send_cap,
    )
