"""Staging: which recipients a sensor tick claims into new batches.

Every batch belongs to one organization (tenant-scoped runs: the organization travels in the
run's tags). Organizations take turns: a tick serves them in id order starting after the one
served last, so a brand with a huge backlog cannot starve the others. A tick claims at most
``free_slots`` batches, the runs the stage may still start, so claims never outrun the
workers that will process them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.recipients import Claim, RecipientGateway
from mail_pipeline.domain.campaigns import CampaignStatus
from mail_pipeline.domain.metrics import day_of
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.failpoints import failpoint

S = RecipientStatus
R = TypeVar("R")


@dataclass(frozen=True)
class Stage:
    name: str
    from_status: RecipientStatus
    to_status: RecipientStatus
    #: The state a run moves a claimed batch into while it works on it.
    working_status: RecipientStatus
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
    S.PROOFING,
    frozenset({CampaignStatus.PENDING, CampaignStatus.ACTIVE}),
)
MAILING = Stage(
    "mailing",
    S.PROOFED,
    S.SENDING_STAGED,
    S.SENDING,
    frozenset({CampaignStatus.ACTIVE}),
    gated=True,
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
            failpoint("staging.claimed")
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


@dataclass(frozen=True)
class Continuation:
    """How long a stage run keeps claiming its organization's work after its first batch
    (:func:`keep_claiming`)."""

    #: Claim no new batch this long after the run started (0: the first batch only).
    budget_seconds: float = 240.0
    #: A run gives way to a starved organization only after this long (its time slice), so
    #: brands with backlogs take turns a minute at a time rather than a batch at a time.
    slice_seconds: float = 60.0
    #: With nothing waiting, look again every ``poll_seconds`` for this long before ending
    #: (0: end at once).
    idle_seconds: float = 0.0
    poll_seconds: float = 1.0
    batch_size: int = 200


def keep_claiming(
    sessions: SessionFactory,
    stage: Stage,
    organization_id: int,
    first_batch: str,
    process: Callable[[str], R],
    *,
    rules: Continuation,
    slot_free: Callable[[], bool],
    served: Callable[[], set[int]] = set,
    longest_running: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[R]:
    """Process ``first_batch``, then keep claiming batches of ``organization_id``'s waiting
    recipients (by :func:`claim_for_campaign`'s rules, one organization per run) and process
    each, so a run's start-up is paid once per minutes of work rather than once per batch.

    Each batch is claimed with its own lease, exactly as a sensor's claim, and processed
    whole before the next is claimed: a run that dies loses only its current batch to
    recovery. The run stops claiming when its time budget ends, when nothing has waited for
    ``idle_seconds``, or - so that one brand's backlog never starves another's - once it has
    run ``slice_seconds``, when another organization has recipients waiting that no run is
    working on or serving (``served``: the organizations of the stage's runs in flight) and
    no run slot of the stage is free (``slot_free``: the sensor would serve
    it if one were): brands with backlogs take turns a time slice at a time. Only the
    stage's longest-running run gives way (``longest_running``), so the runs hand their
    slots over one at a time instead of all ending at the same check and leaving the
    printers idle while new runs start. A run that has caught up and waits for newcomers
    gives way at once: it holds a slot for nothing.

    With nothing to claim, the run looks again every ``poll_seconds`` for up to
    ``idle_seconds`` (reset by every batch) before it ends, so a trickle of new recipients is
    served by a warm run within about a second rather than by a new run each time."""
    started = clock()
    results = [process(first_batch)]
    idle_since: float | None = None
    while clock() - started < rules.budget_seconds:
        # A caught-up run (waiting for newcomers) gives way at once; a busy one after its
        # slice, and only the stage's longest-running.
        caught_up = idle_since is not None
        if (
            (caught_up or (clock() - started >= rules.slice_seconds and longest_running()))
            and _others_starve(sessions, stage, organization_id, served())
            and not slot_free()
        ):
            break
        with sessions() as session:
            claim = RecipientGateway(session).claim_batch(
                stage.from_status,
                stage.to_status,
                rules.batch_size,
                organization_id=organization_id,
                campaign_statuses=stage.campaign_statuses,
                gate_day=stage.gate_day(),
            )
        if claim.ids:
            idle_since = None
            results.append(process(claim.batch_id))
            continue
        idle_since = clock() if idle_since is None else idle_since
        if clock() - idle_since >= rules.idle_seconds:
            break
        sleep(rules.poll_seconds)
    return results


def _others_starve(
    sessions: SessionFactory, stage: Stage, organization_id: int, served: set[int]
) -> bool:
    """Whether another organization has recipients waiting for ``stage``, none in it, and no
    run serving it (``served``: a caught-up run waiting for newcomers has none in it)."""
    with sessions() as session:
        gateway = RecipientGateway(session)
        waiting = set(
            gateway.organizations_waiting(
                stage.from_status, stage.campaign_statuses, stage.gate_day()
            )
        )
        if not waiting - {organization_id}:
            return False
        in_stage = gateway.organizations_in({stage.to_status, stage.working_status})
    return bool(waiting - in_stage - served - {organization_id})
