"""Giving recipients their offer codes at proofing, and uploading an organization's pool.

:func:`assign_offer_codes` runs in a proofing run, after it took its batch and before any
proof is rendered. For each recipient without a code:

1. the campaign's own pool, then the organization-wide pool (oldest upload first);
2. when neither has a code left, a generated one (:func:`~mail_pipeline.domain.offer_codes.
   generate_code`, with the design's prefix). A campaign that had a pool and ran out is named
   in the result (the run's metadata shows it) and logged: its recipients still get codes and
   their postcards still go out, which is better than holding a campaign for a pool refill.

Each recipient's code is written in its own savepoint, by a write guarded by the run's fencing
token (:meth:`~mail_pipeline.db.offer_codes.OfferCodeGateway.give`): a recipient the run no
longer holds gets nothing (and its drawn pool code goes back to the pool). A code that turns
out to be taken (a generated code another recipient got meanwhile) rolls the savepoint back and
is drawn again, up to :data:`MAX_DRAWS` times. Once a run has found a campaign's pools empty,
the rest of its recipients in a transaction get generated codes together - checked against
the codes in use with one query and written by one statement in one savepoint, under the
same guard - and a collision there falls back to one recipient at a time: the same rules at
a few statements per 50 recipients instead of four per recipient. A recipient that already
carries a code (a re-proof after a failed piece, a retried batch) keeps it and draws nothing.

:func:`upload_pool` reads a file of codes (:func:`~mail_pipeline.domain.offer_codes.
read_pool_lines`) and adds the new ones; it reports every line it did not add, and repeating
an upload changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.offer_codes import OfferCodeGateway
from mail_pipeline.domain.offer_codes import generate_code, read_pool_lines
from mail_pipeline.domain.recipients import RecipientStatus

log = logging.getLogger(__name__)

#: Draws per recipient before giving up (a generated code repeats with probability 2^-57).
MAX_DRAWS = 5
#: Recipients given codes per transaction.
ASSIGN_CHUNK = 50


@dataclass(frozen=True)
class CodeNeed:
    """A recipient about to be proofed without a code, and its campaign's code prefix."""

    recipient_id: int
    organization_id: int
    campaign_id: int
    prefix: str | None = None


@dataclass
class CodeAssignment:
    #: The code each recipient got in this run.
    codes: dict[int, str] = field(default_factory=dict)
    from_pool: int = 0
    generated: int = 0
    #: Recipients the run no longer held (or that were given a code meanwhile): nothing was
    #: written for them.
    lost: set[int] = field(default_factory=set)
    #: Recipients for which no free code was found in :data:`MAX_DRAWS` draws.
    failed: set[int] = field(default_factory=set)
    #: Campaigns with an uploaded pool that ran out (their recipients got generated codes).
    pool_exhausted: set[int] = field(default_factory=set)


class _NotHeld(Exception):
    """Rolls a recipient's savepoint back: the run no longer holds it."""


def assign_offer_codes(
    sessions: SessionFactory,
    needs: Sequence[CodeNeed],
    holder: str,
    *,
    status: RecipientStatus = RecipientStatus.PROOFING,
    clock: Callable[[], datetime] = utcnow,
    generate: Callable[[str | None], str] = generate_code,
) -> CodeAssignment:
    """Give each recipient of ``needs`` a code, in transactions of :data:`ASSIGN_CHUNK`."""
    assigner = _Assigner(holder, status, generate)
    for start in range(0, len(needs), ASSIGN_CHUNK):
        with sessions() as session:
            assigner.assign_chunk(
                OfferCodeGateway(session), needs[start : start + ASSIGN_CHUNK], clock
            )
    for campaign_id in sorted(assigner.result.pool_exhausted):
        log.warning(
            "campaign %s: its offer-code pool is used up; its recipients get generated codes",
            campaign_id,
        )
    return assigner.result


class _Assigner:
    def __init__(
        self, holder: str, status: RecipientStatus, generate: Callable[[str | None], str]
    ) -> None:
        self.holder = holder
        self.status = status
        self.generate = generate
        self.result = CodeAssignment()
        #: Pools (organization, campaign or None) found empty in this run: not asked again.
        self.empty: set[tuple[int, int | None]] = set()
        #: Whether each campaign could draw from any pool at all.
        self.has_pool: dict[int, bool] = {}

    def assign_chunk(
        self, gateway: OfferCodeGateway, needs: Sequence[CodeNeed], clock: Callable[[], datetime]
    ) -> None:
        """Every need of one transaction: one at a time while its campaign's pools may still
        hold codes (the first needs of a campaign find out), then the rest - whose pools this
        run found empty - generated together (:meth:`assign_generated`)."""
        generated: list[CodeNeed] = []
        for need in needs:
            if self._pools_empty(need):
                generated.append(need)
            else:
                self.assign(gateway, need, clock())
        self.assign_generated(gateway, generated, clock())

    def _pools_empty(self, need: CodeNeed) -> bool:
        org = need.organization_id
        return (
            need.campaign_id in self.has_pool
            and (org, need.campaign_id) in self.empty
            and (org, None) in self.empty
        )

    def assign_generated(
        self, gateway: OfferCodeGateway, needs: Sequence[CodeNeed], now: datetime
    ) -> None:
        """Generated codes for ``needs`` together: a code per need, the ones already in use
        in the organization (or twice in the group) drawn again, then all written in one
        savepoint by one statement. A code taken meanwhile by another run's recipient
        (``IntegrityError``) rolls the group back, and its needs are given codes one at a
        time as :meth:`assign` does; so are needs left without a free code after
        :data:`MAX_DRAWS` rounds (where they fail as a single draw would)."""
        pending = list(needs)
        for _ in range(MAX_DRAWS):
            if not pending:
                return
            drawn = {need.recipient_id: self.generate(need.prefix) for need in pending}
            used: set[tuple[int, str]] = set()
            for org in {need.organization_id for need in pending}:
                codes = [drawn[n.recipient_id] for n in pending if n.organization_id == org]
                used.update((org, code) for code in gateway.in_use_many(org, codes))
            free: dict[int, str] = {}
            again: list[CodeNeed] = []
            for need in pending:
                key = (need.organization_id, drawn[need.recipient_id])
                if key in used:
                    again.append(need)
                    continue
                used.add(key)
                free[need.recipient_id] = key[1]
            try:
                with gateway.session.begin_nested():
                    written = set(
                        gateway.give_many(free, status=self.status, holder=self.holder, now=now)
                    )
            except IntegrityError:
                for need in pending:
                    if need.recipient_id in free:
                        self.assign(gateway, need, now)
                pending = again
                continue
            for recipient_id, code in free.items():
                if recipient_id in written:
                    self.result.codes[recipient_id] = code
                    self.result.generated += 1
                else:
                    self.result.lost.add(recipient_id)
            pending = again
        for need in pending:
            self.assign(gateway, need, now)

    def assign(self, gateway: OfferCodeGateway, need: CodeNeed, now: datetime) -> None:
        for _ in range(MAX_DRAWS):
            try:
                with gateway.session.begin_nested():
                    code, pooled = self._draw(gateway, need, now)
                    if code is None:
                        continue
                    if not gateway.give(
                        need.recipient_id, code, status=self.status, holder=self.holder, now=now
                    ):
                        raise _NotHeld
            except _NotHeld:
                self.result.lost.add(need.recipient_id)
                return
            except IntegrityError:
                # Taken meanwhile by another recipient: the savepoint is rolled back (a drawn
                # pool code with it); draw again.
                continue
            self.result.codes[need.recipient_id] = code
            if pooled:
                self.result.from_pool += 1
            else:
                self.result.generated += 1
            return
        self.result.failed.add(need.recipient_id)
        log.error("recipient %s: no free offer code after %s draws", need.recipient_id, MAX_DRAWS)

    def _draw(
        self, gateway: OfferCodeGateway, need: CodeNeed, now: datetime
    ) -> tuple[str | None, bool]:
        """A pool code (already reserved for the recipient), else a generated code not in
        use; ``(None, False)`` when the generated code is taken."""
        org, campaign = need.organization_id, need.campaign_id
        for pool in (campaign, None):
            if (org, pool) in self.empty:
                continue
            code = gateway.draw(org, pool, need.recipient_id, now=now)
            if code is not None:
                return code, True
            self.empty.add((org, pool))
        if campaign not in self.has_pool:
            self.has_pool[campaign] = gateway.has_pool(org, campaign)
            if self.has_pool[campaign]:
                self.result.pool_exhausted.add(campaign)
        code = self.generate(need.prefix)
        if gateway.in_use(org, code):
            return None, False
        return code, False


# -- pool uploads -------------------------------------------------------------------------------
@dataclass(frozen=True)
class UploadLine:
    line: int
    code: str | None
    outcome: str


@dataclass
class PoolUpload:
    organization_id: int
    campaign_id: int | None
    added: list[str] = field(default_factory=list)
    #: Lines whose code the pool already had for the same campaign (an upload repeated).
    already: list[UploadLine] = field(default_factory=list)
    #: Lines not added, and why (bad code, duplicate line, the code is used elsewhere).
    refused: list[UploadLine] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per line of the file that was not added, in file order."""
        shown = sorted(self.already + self.refused, key=lambda x: x.line)
        return [
            f"line {x.line}: " + (f"{x.code} " if x.code else "") + f"- {x.outcome}" for x in shown
        ]


class UploadRefused(ValueError):
    """The upload names an organization or campaign that cannot take codes."""


def _scope(campaign_id: int | None) -> str:
    return (
        f"campaign {campaign_id}'s pool" if campaign_id is not None else "the organization's pool"
    )


def upload_pool(
    sessions: SessionFactory,
    organization_id: int,
    lines: Iterable[str],
    *,
    campaign_id: int | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> PoolUpload:
    """Add the codes of an uploaded file to the organization's pool (for one campaign, when
    ``campaign_id`` is given), in one transaction.

    A code the organization already has is not added: in the same pool it is reported as
    already there (so an upload can be repeated); in another pool, or on a recipient, it is
    refused, naming where it is. Raises :class:`UploadRefused` for an unknown organization or
    a campaign of another organization."""
    parsed = read_pool_lines(lines)
    result = PoolUpload(organization_id, campaign_id)
    with sessions() as session:
        gateway = OfferCodeGateway(session)
        if not gateway.organization_exists(organization_id):
            raise UploadRefused(f"there is no organization {organization_id}")
        if (
            campaign_id is not None
            and gateway.campaign_organization(campaign_id) != organization_id
        ):
            raise UploadRefused(
                f"campaign {campaign_id} is not a campaign of organization {organization_id}"
            )
        valid = [p for p in parsed if p.code is not None]
        existing = gateway.existing(organization_id, [p.code for p in valid if p.code])
        fresh: list[tuple[int, str]] = []
        for p in parsed:
            if p.code is None:
                result.refused.append(UploadLine(p.line, None, p.problem or "refused"))
                continue
            known = existing.get(p.code)
            if known is None:
                fresh.append((p.line, p.code))
            elif not known.in_pool:
                result.refused.append(
                    UploadLine(p.line, p.code, "already given to a recipient of the organization")
                )
            elif known.campaign_id == campaign_id:
                result.already.append(
                    UploadLine(p.line, p.code, f"already in {_scope(campaign_id)}")
                )
            else:
                result.refused.append(
                    UploadLine(p.line, p.code, f"already in {_scope(known.campaign_id)}")
                )
        inserted = gateway.add(organization_id, campaign_id, [c for _, c in fresh], now=clock())
        for line, code in fresh:
            if code in inserted:
                result.added.append(code)
            else:
                result.refused.append(UploadLine(line, code, "added meanwhile by another upload"))
    return result
