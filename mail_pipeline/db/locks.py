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

from sqlalchemy import select, update
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


class CampaignLocks:
    def __init__(self, session: Session) -> None:
        self.session = session

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
