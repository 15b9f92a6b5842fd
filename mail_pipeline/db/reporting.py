"""The reporting gateway: what the reporting store is built from (the daily metrics and the
campaign results of one organization, aggregated in SQL) and the store's rows, replaced an
organization and a window of days at a time.

Every read is one ``GROUP BY`` over the organization's rows: a sync makes the same handful
of queries whatever the number of campaigns or days. The writes are one ``DELETE`` and one
multi-row ``INSERT`` per table, in the caller's transaction, so a sync is all-or-nothing.

Two syncs of one organization never interleave: :meth:`ReportingGateway.lock_organization`
takes the organization's row ``FOR NO KEY UPDATE`` on PostgreSQL (foreign-key checks of other
writers are not blocked); a SQLite write transaction holds the whole database anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session

from mail_pipeline.db.models import (
    Campaign,
    CampaignResult,
    DailyOrderMetrics,
    DailyRecipientMetrics,
    DailySpend,
    Organization,
    ReportingCampaign,
    ReportingCampaignDay,
    ReportingSync,
)
from mail_pipeline.domain.campaigns import OrganizationStatus
from mail_pipeline.domain.metrics import DayRange
from mail_pipeline.domain.reporting import SyncStatus


@dataclass(frozen=True)
class CampaignTotals:
    """What a campaign's row is built from: its results (if computed) and its postcards."""

    campaign_id: int
    mailed: int
    delivered: int
    returned: int
    result: dict[str, Any] | None


class ReportingGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- which organizations ---------------------------------------------------------------

    def organizations_to_sync(self) -> list[int]:
        """Active organizations with at least one campaign, by id."""
        has_campaign = exists().where(Campaign.organization_id == Organization.id)
        statement = (
            select(Organization.id)
            .where(Organization.status == OrganizationStatus.ACTIVE, has_campaign)
            .order_by(Organization.id)
        )
        return list(self.session.scalars(statement))

    def lock_organization(self, organization_id: int) -> bool:
        """Hold the organization until the transaction ends; False if there is none."""
        statement = (
            select(Organization.id)
            .where(Organization.id == organization_id)
            .with_for_update(key_share=True)
        )
        return self.session.scalar(statement) is not None

    # --- the sources -----------------------------------------------------------------------

    def campaign_ids(self, organization_id: int) -> list[int]:
        statement = select(Campaign.id).where(Campaign.organization_id == organization_id)
        return list(self.session.scalars(statement.order_by(Campaign.id)))

    def day_orders(
        self, organization_id: int, days: DayRange
    ) -> list[tuple[int, Any, str, int, int]]:
        """(campaign, day, currency, orders, revenue) credited to the organization's
        campaigns over ``days``."""
        m = DailyOrderMetrics
        statement = (
            select(m.campaign_id, m.day, m.currency, func.sum(m.orders), func.sum(m.revenue_minor))
            .where(
                m.organization_id == organization_id,
                m.campaign_id.is_not(None),
                m.day >= days.first,
                m.day <= days.last,
            )
            .group_by(m.campaign_id, m.day, m.currency)
        )
        return [tuple(row) for row in self.session.execute(statement)]  # type: ignore[misc]

    def day_spend(self, organization_id: int, days: DayRange) -> list[tuple[int, Any, str, int]]:
        """(campaign, day, currency, spend) of the organization over ``days``."""
        s = DailySpend
        statement = (
            select(s.campaign_id, s.day, s.currency, func.sum(s.spend_minor))
            .where(s.organization_id == organization_id, s.day >= days.first, s.day <= days.last)
            .group_by(s.campaign_id, s.day, s.currency)
        )
        return [tuple(row) for row in self.session.execute(statement)]  # type: ignore[misc]

    def day_postcards(
        self, organization_id: int, days: DayRange
    ) -> list[tuple[int, Any, int, int, int]]:
        """(campaign, day, mailed, delivered, returned) of the organization over ``days``."""
        r = DailyRecipientMetrics
        statement = (
            select(
                r.campaign_id,
                r.day,
                func.sum(r.mailed),
                func.sum(r.delivered),
                func.sum(r.returned),
            )
            .where(r.organization_id == organization_id, r.day >= days.first, r.day <= days.last)
            .group_by(r.campaign_id, r.day)
        )
        return [tuple(row) for row in self.session.execute(statement)]  # type: ignore[misc]

    def campaign_totals(self, organization_id: int) -> list[CampaignTotals]:
        """Every campaign of the organization: its postcards over all days, its results."""
        r = DailyRecipientMetrics
        postcards = {
            int(campaign_id): (int(mailed or 0), int(delivered or 0), int(returned or 0))
            for campaign_id, mailed, delivered, returned in self.session.execute(
                select(
                    r.campaign_id, func.sum(r.mailed), func.sum(r.delivered), func.sum(r.returned)
                )
                .where(r.organization_id == organization_id)
                .group_by(r.campaign_id)
            )
        }
        results = {
            result.campaign_id: {
                column: getattr(result, column)
                for column in (
                    "currency",
                    "attributed_orders",
                    "attributed_revenue_minor",
                    "spend_minor",
                    "cpa_minor",
                    "roas",
                    "lift",
                    "lift_low",
                    "lift_high",
                    "verdict",
                )
            }
            for result in self.session.scalars(
                select(CampaignResult).where(CampaignResult.organization_id == organization_id)
            )
        }
        return [
            CampaignTotals(
                campaign_id, *postcards.get(campaign_id, (0, 0, 0)), results.get(campaign_id)
            )
            for campaign_id in self.campaign_ids(organization_id)
        ]

    # --- the store -------------------------------------------------------------------------

    def replace_days(
        self, organization_id: int, days: DayRange, rows: Sequence[dict[str, Any]]
    ) -> int:
        """Replace the organization's campaign-day rows of ``days`` with ``rows``."""
        t = ReportingCampaignDay
        self.session.execute(
            delete(t).where(
                t.organization_id == organization_id, t.day >= days.first, t.day <= days.last
            )
        )
        return self._insert(t, rows)

    def replace_campaigns(self, organization_id: int, rows: Sequence[dict[str, Any]]) -> int:
        t = ReportingCampaign
        self.session.execute(delete(t).where(t.organization_id == organization_id))
        return self._insert(t, rows)

    def _insert(self, model: Any, rows: Sequence[dict[str, Any]]) -> int:
        if rows:
            self.session.execute(insert(model), list(rows))
        return len(rows)

    def record_sync(
        self,
        organization_id: int,
        now: datetime,
        status: SyncStatus,
        *,
        rows: int = 0,
        error: str | None = None,
    ) -> None:
        """Write how the organization's sync went (one row per organization). A failure
        keeps the time and rows of the last sync that succeeded."""
        state = self.session.get(ReportingSync, organization_id)
        if state is None:
            state = ReportingSync(organization_id=organization_id, rows=0)
            self.session.add(state)
        state.attempted_at = now
        state.status = status.value
        state.error = error
        if status is SyncStatus.OK:
            state.last_synced_at = now
            state.rows = rows
        self.session.flush()

    def sync_state(self, organization_ids: Iterable[int]) -> dict[int, ReportingSync]:
        statement = select(ReportingSync).where(
            ReportingSync.organization_id.in_(list(organization_ids))
        )
        return {state.organization_id: state for state in self.session.scalars(statement)}
