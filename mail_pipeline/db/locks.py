"""The per-campaign sync lock, shared by scheduled and manual syncs.

A lease row per campaign (``campaign_sync_locks``): whoever holds an unexpired lease may sync
the campaign. Each acquisition bumps a **fencing token**; the sync checks, in the same
transaction that writes its recipients, that its token is still current
(:meth:`CampaignLocks.verify`, a row lock on PostgreSQL), so a sync that stalled past its lease
cannot write after another one took over. Unlike a Redis lock, it needs no extra service and
survives restarts; a crashed holder's lease simply expires.

A lease lasts long (a sync of a large segment takes minutes), so waiting out a crashed
holder's lease would stop the campaign's syncs for that long. A caller that can tell whether
a holder has ended (``holder_gone``: the sync jobs ask Dagster whether the holder's run is
still queued or in progress) takes over a gone holder's lease at once. The takeover bumps the
token as any acquisition does, so if the holder was alive after all, its write is refused
by :meth:`CampaignLocks.verify`: a wrong answer costs a sync, never a double write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mail_pipeline.db.models import CampaignSyncLock, utcnow


@dataclass(frozen=True)
class Lease:
    campaign_id: int
    holder: str
    token: int


class LockLost(RuntimeError):
    def __init__(self, lease: Lease) -> None:
        super().__init__(
            f"the sync lock of campaign {lease.campaign_id} expired and was taken over; "
            f"{lease.holder} wrote nothing"
        )


#: The upper half of the PostgreSQL advisory lock keys that serialize the recipient writes of
#: each organization's syncs (the lower half is the organization's id).
WRITE_LOCK_KEY = 0x4D50_5359  # "MPSY"


class CampaignLocks:
    def __init__(self, session: Session) -> None:
        self.session = session

    def one_writer_per_organization(self, organization_id: int) -> None:
        """Wait until no other sync transaction writes this organization's recipients, then
        hold the organization until this transaction ends. Call it first in the transaction.

        Cross-campaign exclusion reads the people the organization's other campaigns hold
        and writes this campaign's recipients in one transaction. Two syncs of one
        organization at once (forced past the one-sync-per-organization run limit: ``dagster
        job execute``, two daemons) each take a different campaign's lock; without this, on
        PostgreSQL each would read before the other's recipients were committed and put the
        same person in both campaigns. PostgreSQL: a transaction-scoped advisory lock, taken
        first in the transaction so that it never waits while holding a lock another sync
        needs; SQLite: every write transaction already begins with the database's write
        lock."""
        if self.session.get_bind().dialect.name != "postgresql":
            return
        key = (WRITE_LOCK_KEY << 32) | organization_id
        self.session.execute(select(func.pg_advisory_xact_lock(literal(key, BigInteger))))

    def holder(self, campaign_id: int) -> str | None:
        """Who holds (or last held) the campaign's lock, if it ever had one."""
        return self.session.scalar(
            select(CampaignSyncLock.holder).where(CampaignSyncLock.campaign_id == campaign_id)
        )

    def acquire(
        self,
        campaign_id: int,
        holder: str,
        ttl: timedelta,
        *,
        now: datetime | None = None,
        holder_gone: Callable[[str], bool] | None = None,
    ) -> Lease | None:
        """Take the lease if it is free, expired or held by a holder that ``holder_gone``
        says has ended; ``None`` if someone else holds it."""
        now = now or utcnow()
        held = self.session.execute(
            select(CampaignSyncLock.token, CampaignSyncLock.holder).where(
                CampaignSyncLock.campaign_id == campaign_id, CampaignSyncLock.expires_at > now
            )
        ).one_or_none()
        if held is not None and holder_gone is not None and holder_gone(held.holder):
            # Only this very lease (its token) is taken over: a newer one is left alone.
            taken = self.session.execute(
                update(CampaignSyncLock)
                .where(
                    CampaignSyncLock.campaign_id == campaign_id,
                    CampaignSyncLock.token == held.token,
                )
                .values(
                    holder=holder,
                    token=CampaignSyncLock.token + 1,
                    acquired_at=now,
                    expires_at=now + ttl,
                )
                .returning(CampaignSyncLock.token)
            ).scalar_one_or_none()
            return None if taken is None else Lease(campaign_id, holder, taken)
        taken = self.session.execute(
            update(CampaignSyncLock)
            .where(CampaignSyncLock.campaign_id == campaign_id, CampaignSyncLock.expires_at <= now)
            .values(
                holder=holder,
                token=CampaignSyncLock.token + 1,
                acquired_at=now,
                expires_at=now + ttl,
            )
            .returning(CampaignSyncLock.token)
        ).scalar_one_or_none()
        if taken is not None:
            return Lease(campaign_id, holder, taken)
        if self.session.get(CampaignSyncLock, campaign_id) is not None:
            return None
        try:
            with self.session.begin_nested():
                self.session.add(
                    CampaignSyncLock(
                        campaign_id=campaign_id,
                        holder=holder,
                        token=1,
                        acquired_at=now,
                        expires_at=now + ttl,
                    )
                )
        except IntegrityError:
            return None
        return Lease(campaign_id, holder, 1)

    def verify(self, lease: Lease, *, now: datetime | None = None) -> None:
        """Raise :class:`LockLost` unless ``lease`` is still the current, unexpired one.
        Call it in the transaction that writes; on PostgreSQL the row stays locked until
        that transaction ends, so the lease cannot be taken over mid-write."""
        now = now or utcnow()
        row = self.session.execute(
            select(CampaignSyncLock.token, CampaignSyncLock.holder, CampaignSyncLock.expires_at)
            .where(CampaignSyncLock.campaign_id == lease.campaign_id)
            .with_for_update()
        ).one_or_none()
        if (
            row is None
            or (row.token, row.holder) != (lease.token, lease.holder)
            or (row.expires_at <= now)
        ):
            raise LockLost(lease)

    def release(self, lease: Lease, *, now: datetime | None = None) -> bool:
        """End the lease now (the row stays, so tokens keep increasing)."""
        result = self.session.execute(
            update(CampaignSyncLock)
            .where(
                CampaignSyncLock.campaign_id == lease.campaign_id,
                CampaignSyncLock.holder == lease.holder,
                CampaignSyncLock.token == lease.token,
            )
            .values(expires_at=now or utcnow())
            .returning(CampaignSyncLock.campaign_id)
        )
        return result.first() is not None
