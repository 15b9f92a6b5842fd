"""The reports gateway: the rows a report is computed from, the ``reports`` rows and their
delivery, and the email events applied to them.

A report row is unique per (organization, kind, period start): :meth:`ReportGateway.claim`
inserts it or finds it (``ON CONFLICT DO NOTHING``, then a read locked ``FOR UPDATE`` on
PostgreSQL), so two runs of one partition agree on one row, and its ``status`` decides
whether anything is sent. Email events are recorded once per ``event_id`` the same way.
The caller owns the transaction (``Database.session`` / ``unit_of_work``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import (
    Campaign,
    CampaignResult,
    DailyOrderMetrics,
    DailyRecipientMetrics,
    DailySpend,
    Organization,
    Report,
    ReportEmailEvent,
)
from mail_pipeline.domain.campaigns import CsmCadence, OrganizationStatus
from mail_pipeline.domain.email_events import EmailEvent
from mail_pipeline.domain.metrics import DayRange
from mail_pipeline.domain.reports import ReportKind


@dataclass(frozen=True)
class ReportOrganization:
    """An organization that gets reports."""

    id: int
    name: str
    slug: str
    cadence: CsmCadence


@dataclass(frozen=True)
class MetricsFrames:
    """One organization's rows of the metrics tables for some days, and its campaigns'
    latest results: what ``domain.reports.report_figures`` reads."""

    orders: pd.DataFrame
    recipients: pd.DataFrame
    spend: pd.DataFrame
    campaign_results: pd.DataFrame


def _as_dates(values: pd.Series) -> pd.Series:
    if values.empty or isinstance(values.iloc[0], date):
        return values.astype(object)
    return pd.Series(pd.to_datetime(values).dt.date, index=values.index, dtype=object)


class ReportGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    # --- inputs ----------------------------------------------------------------------------

    def organizations(self) -> list[ReportOrganization]:
        """Active organizations, by id."""
        rows = self.session.execute(
            select(Organization.id, Organization.name, Organization.slug, Organization.csm_cadence)
            .where(Organization.status == OrganizationStatus.ACTIVE)
            .order_by(Organization.id)
        )
        return [ReportOrganization(r.id, r.name, r.slug, CsmCadence(r.csm_cadence)) for r in rows]

    def _frame(self, statement: Select[Any], *, days: bool = True) -> pd.DataFrame:
        """The rows as a frame (one organization's weeks: a few hundred rows, so no COPY)."""
        result = self.session.execute(statement)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        if days:
            frame["day"] = _as_dates(frame["day"])
        return frame

    def metrics_frames(self, organization_id: int, days: DayRange) -> MetricsFrames:
        """The organization's metrics rows of ``days`` and its campaign results."""

        def rows(model: Any) -> pd.DataFrame:
            table = model.__table__
            return self._frame(
                select(table).where(
                    table.c.organization_id == organization_id,
                    table.c.day >= days.first,
                    table.c.day <= days.last,
                )
            )

        results = CampaignResult.__table__
        return MetricsFrames(
            orders=rows(DailyOrderMetrics),
            recipients=rows(DailyRecipientMetrics),
            spend=rows(DailySpend),
            campaign_results=self._frame(
                select(results).where(results.c.organization_id == organization_id), days=False
            ),
        )

    def campaign_names(self, organization_id: int) -> dict[int, str]:
        rows = self.session.execute(
            select(Campaign.id, Campaign.name).where(Campaign.organization_id == organization_id)
        )
        return {r.id: r.name for r in rows}

    # --- reports ---------------------------------------------------------------------------

    def claim(
        self, organization_id: int, kind: str, period_start: date, period_end: date
    ) -> Report:
        """The organization's report of ``kind`` starting ``period_start``, inserted as
        ``generated`` (empty content) when there is none; locked on PostgreSQL."""
        values = {
            "organization_id": organization_id,
            "kind": kind,
            "period_start": period_start,
            "period_end": period_end,
            "status": "generated",
            "content": {},
        }
        self.session.execute(
            dialect_insert(self.session)(Report)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["organization_id", "kind", "period_start"])
        )
        statement = select(Report).where(
            Report.organization_id == organization_id,
            Report.kind == kind,
            Report.period_start == period_start,
        )
        if self.is_postgres:
            statement = statement.with_for_update()
        return self.session.execute(statement).scalar_one()

    def get(self, report_id: int, *, lock: bool = False) -> Report | None:
        statement = select(Report).where(Report.id == report_id)
        if lock and self.is_postgres:
            statement = statement.with_for_update()
        return self.session.execute(statement).scalar_one_or_none()

    def by_message_id(self, message_id: str) -> Report | None:
        statement = select(Report).where(Report.message_id == message_id).limit(1)
        if self.is_postgres:
            statement = statement.with_for_update()
        return self.session.execute(statement).scalar_one_or_none()

    def in_status(self, status: str) -> list[Report]:
        return list(
            self.session.execute(select(Report).where(Report.status == status).order_by(Report.id))
            .scalars()
            .all()
        )

    # --- email events ----------------------------------------------------------------------

    def record_event(self, event: EmailEvent, report_id: int | None, applied_at: datetime) -> bool:
        """Insert the event once per ``event_id``; False when it was already recorded."""
        inserted = self.session.scalars(
            dialect_insert(self.session)(ReportEmailEvent)
            .values(
                event_id=event.event_id,
                report_id=report_id,
                kind=str(event.kind),
                message_id=event.message_id,
                occurred_at=event.occurred_at,
                detail=event.detail,
                applied_at=applied_at,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(ReportEmailEvent.event_id)
        )
        return inserted.first() is not None

    def week_to_date_due(self, first_day: date) -> bool:
        """Since ``first_day`` some postcard was mailed and some order attributed (the daily
        metrics say so), and no weekly report of the week starting that day exists."""
        mailed = exists().where(
            DailyRecipientMetrics.day >= first_day, DailyRecipientMetrics.mailed > 0
        )
        o = DailyOrderMetrics
        attributed = exists().where(
            o.day >= first_day, o.offer_code_orders + o.email_orders + o.address_orders > 0
        )
        reported = exists().where(
            Report.kind == ReportKind.WEEKLY.value, Report.period_start == first_day
        )
        return bool(self.session.scalar(select(mailed & attributed & ~reported)))

    def bounces_by_organization(self) -> dict[int, int]:
        """How many reports bounced, per organization (those with none are left out)."""
        rows = self.session.execute(
            select(Report.organization_id, func.count())
            .where(Report.status == "bounced")
            .group_by(Report.organization_id)
        )
        return {organization_id: count for organization_id, count in rows}
