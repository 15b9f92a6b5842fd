"""Staging: which recipients a sensor tick claims into new batches.

Every batch belongs to one organization (tenant-scoped runs: the organization travels in the
run's tags). Organizations take turns: a tick serves them in id order starting after the one
served last, so a brand with a huge backlog cannot starve the others. A tick claims at most
``free_slots`` batches, the runs the stage may still start, so claims never outrun the
workers that will process them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import date

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.recipients import Claim, RecipientGateway
from mail_pipeline.domain.campaigns import CampaignStatus
from mail_pipeline.domain.metrics import day_of
from mail_pipeline.domain.recipients import RecipientStatus

S = RecipientStatus


@dataclass(frozen=True)
class Stage:
    name: str
    from_status: RecipientStatus
    to_status: RecipientStatus
    #: Campaign statuses whose recipients this stage takes.
    campaign_statuses: frozenset[CampaignStatus]
    #: Only campaigns the gate before the printer lets through today (``domain.sending``):
    #: not paused, under their daily caps.
    gated: bool = False

    def gate_day(self) -> date | None:
        return day_of(utcnow()) if self.gated else None


#: Proofs are made ahead for scheduled (Pending) campaigns; mail goes out only for Active
#: ones. A Paused campaign's recipients wait in place.
PROOFING = Stage(
    "proofing",
    S.PENDING,
    S.PROOFING_STAGED,
    frozenset({CampaignStatus.PENDING, CampaignStatus.ACTIVE}),
)
MAILING = Stage(
    "mailing", S.PROOFED, S.SENDING_STAGED, frozenset({CampaignStatus.ACTIVE}), gated=True
)


def stage_batches(
    sessions: SessionFactory,
    stage: Stage,
    *,
    free_slots: int,
    batch_size: int,
    after_organization: int | None = None,
) -> list[Claim]:
    """Claim up to ``free_slots`` batches of ``batch_size`` for ``stage``, one organization
    each: the waiting organizations take turns (starting after ``after_organization``, the
    previous tick's last), and an organization whose batch came back full gets another turn
    while slots remain - so one organization's backlog fills every free slot, and several
    share them fairly."""
    if free_slots <= 0:
        return []
    with sessions() as session:
        waiting = RecipientGateway(session).organizations_waiting(
            stage.from_status, stage.campaign_statuses, stage.gate_day()
        )
    if after_organization is not None:
        waiting = [o for o in waiting if o > after_organization] + [
            o for o in waiting if o <= after_organization
        ]
    claims: list[Claim] = []
    # Round-robin: one batch per organization in turn, and again while free slots remain, so
    # a single organization's backlog fills every free slot and several share them fairly.
    turns = deque(waiting)
    while turns and len(claims) < free_slots:
        organization_id = turns.popleft()
        with sessions() as session:
            claim = RecipientGateway(session).claim_batch(
                stage.from_status,
                stage.to_status,
                batch_size,
                organization_id=organization_id,
                campaign_statuses=stage.campaign_statuses,
                gate_day=stage.gate_day(),
            )
        if claim.ids:
            claims.append(claim)
        if len(claim.ids) == batch_size:  # a full batch: it may have more waiting
            turns.append(organization_id)
    return claims


def claim_for_campaign(
    sessions: SessionFactory, stage: Stage, campaign_id: int, batch_size: int
) -> Claim:
    """One batch of ``campaign_id``'s waiting recipients for ``stage`` (an on-demand run
    for one campaign), under the same rules as the sensors' claims: the campaign must be in
    a status the stage takes, its organization active, and for mailing not paused and under
    its caps. An empty claim when none waits."""
    with sessions() as session:
        return RecipientGateway(session).claim_batch(
            stage.from_status,
            stage.to_status,
            batch_size,
            campaign_id=campaign_id,
            campaign_statuses=stage.campaign_statuses,
            gate_day=stage.gate_day(),
        )
