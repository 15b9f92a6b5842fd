"""Offer codes in SQL: an organization's uploaded pool (``offer_codes``) and the code each
recipient carries (``recipients.offer_code``). The rules are in
:mod:`mail_pipeline.domain.offer_codes`.

- :meth:`OfferCodeGateway.draw` gives one unassigned pool code to a recipient in one guarded
  statement (``UPDATE offer_codes SET recipient_id = :r WHERE id = (pick) AND recipient_id IS
  NULL RETURNING code``). On PostgreSQL the pick is ``FOR UPDATE SKIP LOCKED`` in a CTE, so two
  proofing runs drawing at once neither wait for nor share a code; SQLite runs one writer at a
  time, so the plain subquery is already exclusive there. Codes a recipient of the
  organization already carries are never picked.
- :meth:`OfferCodeGateway.give` writes a code on a recipient only while the run still holds
  it (status and fencing token) and the recipient has no code yet: a run that lost its batch
  writes nothing, and a recipient keeps the first code it was given.
- :meth:`OfferCodeGateway.add` inserts uploaded codes, skipping any already in the
  organization (``ON CONFLICT DO NOTHING``), so an upload can be repeated.

The gateway works inside the caller's session and transaction; it never commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import Campaign, OfferCode, Organization, Recipient
from mail_pipeline.domain.recipients import RecipientStatus

#: Codes per statement when looking up or inserting many (keeps IN lists and inserts bounded).
CHUNK = 500


@dataclass(frozen=True)
class ExistingCode:
    """Where an organization already has a code: in its pool (for ``campaign_id``, or for
    every campaign when None), or on a recipient that was given it without a pool."""

    code: str
    in_pool: bool
    campaign_id: int | None = None


class OfferCodeGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    # -- proofing ------------------------------------------------------------------------------
    def draw(
        self, organization_id: int, campaign_id: int | None, recipient_id: int, *, now: datetime
    ) -> str | None:
        """Give the oldest unassigned code of one pool (the campaign's, or the organization's
        own when ``campaign_id`` is None) to ``recipient_id``; ``None`` when it has none left."""
        taken_by_recipient = exists().where(
            Recipient.organization_id == OfferCode.organization_id,
            Recipient.offer_code == OfferCode.code,
        )
        scope = (
            OfferCode.campaign_id.is_(None)
            if campaign_id is None
            else OfferCode.campaign_id == campaign_id
        )
        pick = (
            select(OfferCode.id)
            .where(
                OfferCode.organization_id == organization_id,
                scope,
                OfferCode.recipient_id.is_(None),
                ~taken_by_recipient,
            )
            .order_by(OfferCode.id)
            .limit(1)
        )
        values = {"recipient_id": recipient_id, "assigned_at": now}
        if self._postgres:
            picked = pick.with_for_update(skip_locked=True, of=OfferCode).cte("picked")
            stmt = (
                update(OfferCode)
                .where(OfferCode.id == picked.c.id, OfferCode.recipient_id.is_(None))
                .values(values)
                .returning(OfferCode.code)
            )
        else:
            stmt = (
                update(OfferCode)
                .where(OfferCode.id.in_(pick.scalar_subquery()), OfferCode.recipient_id.is_(None))
                .values(values)
                .returning(OfferCode.code)
            )
        row = self.session.execute(stmt, execution_options={"synchronize_session": False}).first()
        return None if row is None else str(row[0])

    def has_pool(self, organization_id: int, campaign_id: int) -> bool:
        """Whether the organization uploaded codes this campaign could draw (its own pool or
        the organization-wide one), assigned or not."""
        return (
            self.session.execute(
                select(OfferCode.id)
                .where(
                    OfferCode.organization_id == organization_id,
                    (OfferCode.campaign_id == campaign_id) | OfferCode.campaign_id.is_(None),
                )
                .limit(1)
            ).first()
            is not None
        )

    def in_use(self, organization_id: int, code: str) -> bool:
        """Whether ``code`` is on a recipient or in the pool of the organization."""
        on_recipient = select(Recipient.id).where(
            Recipient.organization_id == organization_id, Recipient.offer_code == code
        )
        in_pool = select(OfferCode.id).where(
            OfferCode.organization_id == organization_id, OfferCode.code == code
        )
        return bool(self.session.scalar(select(exists(on_recipient) | exists(in_pool))))

    def give(
        self,
        recipient_id: int,
        code: str,
        *,
        status: RecipientStatus,
        holder: str,
        now: datetime,
    ) -> bool:
        """Write ``code`` on the recipient if it is still in ``status``, held by ``holder`` and
        without a code; False (nothing written) otherwise. A code another recipient of the
        organization holds raises ``IntegrityError`` (the caller draws again)."""
        stmt = (
            update(Recipient)
            .where(
                Recipient.id == recipient_id,
                Recipient.status == status,
                Recipient.claimed_by_run == holder,
                Recipient.offer_code.is_(None),
            )
            .values(offer_code=code, updated_at=now)
            .returning(Recipient.id)
        )
        return (
            self.session.execute(stmt, execution_options={"synchronize_session": False}).first()
            is not None
        )

    def in_use_many(self, organization_id: int, codes: Iterable[str]) -> set[str]:
        """Those of ``codes`` on a recipient or in the pool of the organization (:meth:`in_use`
        for many: two queries per :data:`CHUNK` codes instead of one per code)."""
        wanted = sorted(set(codes))
        used: set[str] = set()
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start : start + CHUNK]
            used.update(
                self.session.scalars(
                    select(Recipient.offer_code).where(
                        Recipient.organization_id == organization_id,
                        Recipient.offer_code.in_(part),
                    )
                )
            )
            used.update(
                self.session.scalars(
                    select(OfferCode.code).where(
                        OfferCode.organization_id == organization_id, OfferCode.code.in_(part)
                    )
                )
            )
        return used

    def give_many(
        self,
        codes: Mapping[int, str],
        *,
        status: RecipientStatus,
        holder: str,
        now: datetime,
    ) -> list[int]:
        """:meth:`give` for many recipients (``recipient id -> code``): the recipients still
        in ``status``, held by ``holder`` and without a code are read (on PostgreSQL locked),
        then one executemany writes their codes; returns those written. A code another
        recipient of the organization holds raises ``IntegrityError`` and the caller's
        savepoint rolls every write of the call back."""
        ids = sorted(codes)
        if not ids:
            return []
        held = list(
            self.session.scalars(
                select(Recipient.id)
                .where(
                    Recipient.id.in_(ids),
                    Recipient.status == status,
                    Recipient.claimed_by_run == holder,
                    Recipient.offer_code.is_(None),
                )
                .order_by(Recipient.id)
                .with_for_update()
            )
        )
        if not held:
            return []
        table = Recipient.__table__
        stmt = (
            update(table)  # type: ignore[arg-type]
            .where(
                table.c.id == bindparam("_recipient_id"),
                table.c.status == status,
                table.c.claimed_by_run == holder,
                table.c.offer_code.is_(None),
            )
            .values(offer_code=bindparam("_code"), updated_at=now)
        )
        self.session.connection().execute(
            stmt, [{"_recipient_id": rid, "_code": codes[rid]} for rid in held]
        )
        return held

    def codes_of(self, recipient_ids: Iterable[int]) -> dict[int, str]:
        """The codes the given recipients carry (those without one are absent)."""
        ids = list(recipient_ids)
        found: dict[int, str] = {}
        for start in range(0, len(ids), CHUNK):
            rows = self.session.execute(
                select(Recipient.id, Recipient.offer_code).where(
                    Recipient.id.in_(ids[start : start + CHUNK]), Recipient.offer_code.is_not(None)
                )
            )
            found.update({int(rid): str(code) for rid, code in rows})
        return found

    # -- uploads -------------------------------------------------------------------------------
    def organization_exists(self, organization_id: int) -> bool:
        return self.session.get(Organization, organization_id) is not None

    def campaign_organization(self, campaign_id: int) -> int | None:
        """The organization of a campaign, or None when there is no such campaign."""
        campaign = self.session.get(Campaign, campaign_id)
        return None if campaign is None else campaign.organization_id

    def existing(self, organization_id: int, codes: Sequence[str]) -> dict[str, ExistingCode]:
        """Which of ``codes`` the organization already has, and where."""
        found: dict[str, ExistingCode] = {}
        for start in range(0, len(codes), CHUNK):
            chunk = list(codes[start : start + CHUNK])
            for code, campaign_id in self.session.execute(
                select(OfferCode.code, OfferCode.campaign_id).where(
                    OfferCode.organization_id == organization_id, OfferCode.code.in_(chunk)
                )
            ):
                found[code] = ExistingCode(code, True, campaign_id)
            for held in self.session.scalars(
                select(Recipient.offer_code).where(
                    Recipient.organization_id == organization_id, Recipient.offer_code.in_(chunk)
                )
            ):
                if held is not None and held not in found:
                    found[held] = ExistingCode(held, False)
        return found

    def add(
        self,
        organization_id: int,
        campaign_id: int | None,
        codes: Sequence[str],
        *,
        now: datetime,
    ) -> set[str]:
        """Insert ``codes`` into the pool; returns those inserted (a code the organization's
        pool already has - an upload running at the same time - is skipped)."""
        inserted: set[str] = set()
        insert = dialect_insert(self.session)
        for start in range(0, len(codes), CHUNK):
            rows = [
                {
                    "organization_id": organization_id,
                    "campaign_id": campaign_id,
                    "code": code,
                    "created_at": now,
                }
                for code in codes[start : start + CHUNK]
            ]
            stmt = (
                insert(OfferCode)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["organization_id", "code"])
                .returning(OfferCode.code)
            )
            inserted.update(self.session.scalars(stmt))
        return inserted
