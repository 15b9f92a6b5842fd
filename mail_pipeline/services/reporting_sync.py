"""Refresh an organization's reporting store (the tables the brand's dashboard reads) from
the daily metrics and the campaign results.

A sync of one organization is one transaction: lock the organization (two syncs of it never
interleave), read its daily orders, spend and postcards of the window
(``domain.reporting.reporting_window``: the last 35 New York days, today included) and its
campaigns' results in a few ``GROUP BY`` queries, replace its campaign-day rows of the
window and its campaign rows, and record the sync as ``ok``. So it is idempotent (the same
metrics give the same rows, whatever was stored) and all-or-nothing (a failure leaves the
previous rows; :func:`record_failure` then says why, in a transaction of its own).

The rules of the rows (currencies, where the postcard counts go, CPA and ROAS) are
``domain.reporting``'s; :func:`campaign_day_rows` and :func:`campaign_rows` apply them to
plain tuples, without a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.reporting import CampaignTotals, ReportingGateway
from mail_pipeline.domain.metrics import DayRange, cost_per_acquisition, return_on_ad_spend
from mail_pipeline.domain.reporting import (
    NO_CURRENCY,
    REPORTING_DAYS,
    DayFigures,
    SyncStatus,
    check_count,
    check_currency,
    check_lift,
    check_ratio,
    check_verdict,
    error_text,
    reporting_window,
)


class UnknownOrganization(LookupError):
    pass


@dataclass(frozen=True)
class SyncCounts:
    """What one organization's sync wrote."""

    organization_id: int
    days: DayRange
    day_rows: int
    campaign_rows: int

    @property
    def rows(self) -> int:
        return self.day_rows + self.campaign_rows


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def campaign_day_figures(
    orders: Iterable[tuple[int, Any, str, int, int]],
    spend: Iterable[tuple[int, Any, str, int]],
    postcards: Iterable[tuple[int, Any, int, int, int]],
) -> list[DayFigures]:
    """The campaign-day rows of the grouped metrics (``domain.reporting``: a row per
    currency with money; the postcard counts on the day's first currency, or on ``XXX``)."""
    money: dict[tuple[int, date, str], dict[str, int]] = {}
    for campaign_id, day, currency, n, revenue in orders:
        key = (int(campaign_id), _as_date(day), str(currency))
        figures = money.setdefault(key, {})
        figures["orders"] = figures.get("orders", 0) + int(n or 0)
        figures["revenue_minor"] = figures.get("revenue_minor", 0) + int(revenue or 0)
    for campaign_id, day, currency, amount in spend:
        key = (int(campaign_id), _as_date(day), str(currency))
        figures = money.setdefault(key, {})
        figures["spend_minor"] = figures.get("spend_minor", 0) + int(amount or 0)
    first_currency: dict[tuple[int, date], str] = {}
    for campaign_id, day, currency in sorted(money):
        first_currency.setdefault((campaign_id, day), currency)
    counts: dict[tuple[int, date, str], dict[str, int]] = {}
    for campaign_id, day, mailed, delivered, returned in postcards:
        campaign_day = (int(campaign_id), _as_date(day))
        values = {
            "mailed": int(mailed or 0),
            "delivered": int(delivered or 0),
            "returned": int(returned or 0),
        }
        if campaign_day not in first_currency and not any(values.values()):
            continue  # no money and no postcards that day: nothing to show
        currency = first_currency.get(campaign_day, NO_CURRENCY)
        counts[(*campaign_day, currency)] = values
    return [
        DayFigures(campaign_id, day, currency, **counts.get(key, {}), **money.get(key, {}))
        for key in sorted(set(money) | set(counts))
        for campaign_id, day, currency in (key,)
    ]


def campaign_day_rows(
    organization_id: int, figures: Iterable[DayFigures], synced_at: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "organization_id": organization_id,
            "campaign_id": f.campaign_id,
            "day": f.day,
            "currency": f.currency,
            "mailed": f.mailed,
            "delivered": f.delivered,
            "returned": f.returned,
            "orders": f.orders,
            "revenue_minor": f.revenue_minor,
            "spend_minor": f.spend_minor,
            "cpa_minor": cost_per_acquisition(f.spend_minor, f.orders),
            "roas": return_on_ad_spend(f.revenue_minor, f.spend_minor),
            "synced_at": synced_at,
        }
        for f in figures
    ]


def campaign_rows(
    organization_id: int, totals: Iterable[CampaignTotals], synced_at: datetime
) -> list[dict[str, Any]]:
    """One row per campaign: its postcards over all days and its results' money, CPA, ROAS,
    lift and verdict (none before its results are first computed), checked before writing."""
    rows = []
    for campaign in totals:
        result = campaign.result or {}
        currency = result.get("currency")
        lift = (result.get("lift_low"), result.get("lift"), result.get("lift_high"))
        check_lift(*lift)
        row = {
            "organization_id": organization_id,
            "campaign_id": campaign.campaign_id,
            "currency": check_currency(currency) if currency else None,
            "mailed": check_count("mailed", campaign.mailed),
            "delivered": check_count("delivered", campaign.delivered),
            "returned": check_count("returned", campaign.returned),
            "orders": check_count("orders", int(result.get("attributed_orders") or 0)),
            "revenue_minor": result.get("attributed_revenue_minor") if currency else None,
            "spend_minor": result.get("spend_minor") if currency else None,
            "cpa_minor": check_ratio("cpa_minor", result.get("cpa_minor")) if currency else None,
            "roas": check_ratio("roas", result.get("roas")) if currency else None,
            "lift_low": lift[0],
            "lift": lift[1],
            "lift_high": lift[2],
            "verdict": check_verdict(result.get("verdict")),
            "synced_at": synced_at,
        }
        rows.append(row)
    return rows


def sync_organization(
    session: SessionFactory, organization_id: int, now: datetime, *, days: int = REPORTING_DAYS
) -> SyncCounts:
    """Rewrite the organization's campaign-day rows of the last ``days`` New York days and
    its campaign rows, and record the sync as ``ok``, in one transaction."""
    window = reporting_window(now, days)
    with session() as s:
        gateway = ReportingGateway(s)
        if not gateway.lock_organization(organization_id):
            raise UnknownOrganization(f"there is no organization {organization_id}")
        figures = campaign_day_figures(
            gateway.day_orders(organization_id, window),
            gateway.day_spend(organization_id, window),
            gateway.day_postcards(organization_id, window),
        )
        day_rows = gateway.replace_days(
            organization_id, window, campaign_day_rows(organization_id, figures, now)
        )
        totals = campaign_rows(organization_id, gateway.campaign_totals(organization_id), now)
        campaign_count = gateway.replace_campaigns(organization_id, totals)
        gateway.record_sync(organization_id, now, SyncStatus.OK, rows=day_rows + campaign_count)
    return SyncCounts(organization_id, window, day_rows, campaign_count)


def record_failure(
    session: SessionFactory, organization_id: int, now: datetime, reason: str
) -> None:
    """Record that the organization's sync failed and why (its rows are as they were)."""
    with session() as s:
        ReportingGateway(s).record_sync(
            organization_id, now, SyncStatus.FAILED, error=error_text(reason)
        )


def organizations_to_sync(session: SessionFactory) -> list[int]:
    """Active organizations with at least one campaign, by id."""
    with session() as s:
        return ReportingGateway(s).organizations_to_sync()
