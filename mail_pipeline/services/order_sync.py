"""Order sync (seed 000: ``sync_orders.process_orders`` every 5 minutes for Klaviyo and
Ometria, ``sync_orders.process_orders_app_store`` every 10 seconds for Shopify).

One call syncs many organizations - at 1,000 organizations a tick is still one run - each
from its *source of record* (``domain.orders.source_of_record``: Shopify, else Ometria, else
Klaviyo, so no order is counted twice), with bounded concurrency:

1. the read window starts at the organization's watermark for that source minus
   ``SAFETY_OVERLAP`` (late events), or ``FIRST_SYNC_LOOKBACK`` ago for a first sync, and
   ends now; an operator's window (one organization's range of days) replaces it;
2. each page is upserted as it arrives (``OrderGateway.upsert``: idempotent on the source's
   id, so overlapping reads change nothing);
3. a regular sync that read to the end moves the watermark to the window's end (never
   backwards; an operator's window never moves it); one that failed records the failure and
   leaves the watermark, so the next sync reads the same window again.

One organization's failure (a revoked key, a 5xx storm outlasting the client's retries, any
unexpected error) is recorded for that organization and source only; the others sync. The
caller turns the failures into a red run after everything else finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.orders import OrderGateway
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.orders import (
    FIRST_SYNC_LOOKBACK,
    SAFETY_OVERLAP,
    SOURCE_PREFERENCE,
    is_stale,
    source_of_record,
)
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.orders.base import OrderClient

log = logging.getLogger(__name__)

#: At most this many rejected orders are named per source in a result (the count is exact).
MAX_REJECTS_NAMED = 20


class OrderSources(Protocol):
    """Builds an organization's order client (a resource provides it)."""

    def client_for(self, integration: IntegrationRef) -> OrderClient: ...


@dataclass(frozen=True)
class Window:
    """An operator's read window (``until`` None: up to now)."""

    since: datetime
    until: datetime | None = None


@dataclass
class SourceOutcome:
    organization_id: int
    source: IntegrationKind
    read_since: datetime
    read_until: datetime
    inserted: int = 0
    changed: int = 0
    rejected: int = 0
    #: The first rejected orders, named by source and id (never a customer's data).
    rejected_named: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class OrderSyncResult:
    outcomes: list[SourceOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[SourceOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def inserted(self) -> int:
        return sum(o.inserted for o in self.outcomes)

    @property
    def changed(self) -> int:
        return sum(o.changed for o in self.outcomes)

    @property
    def rejected(self) -> int:
        return sum(o.rejected for o in self.outcomes)


def sync_orders(
    sessions: SessionFactory,
    sources: OrderSources,
    *,
    kinds: Iterable[IntegrationKind] = SOURCE_PREFERENCE,
    organization_ids: Iterable[int] | None = None,
    window: Window | None = None,
    concurrency: int = 8,
    clock: Callable[[], datetime] = utcnow,
) -> OrderSyncResult:
    """Sync the organizations whose source of record is one of ``kinds`` (all active
    organizations, or the given ones)."""
    wanted = set(kinds)
    with sessions() as session:
        connected = OrderGateway(session).order_integrations(
            SOURCE_PREFERENCE,
            organization_ids=None if organization_ids is None else list(organization_ids),
        )
    chosen = [i for i in records_of(connected) if i.kind in wanted]
    now = clock()
    result = OrderSyncResult()
    if not chosen:
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(chosen)))) as pool:
        result.outcomes = list(
            pool.map(lambda i: _sync_one(sessions, sources, i, window, now), chosen)
        )
    return result


def organizations_reading(sessions: SessionFactory, kinds: Iterable[IntegrationKind]) -> list[int]:
    """Active organizations whose source of record is one of ``kinds``."""
    wanted = set(kinds)
    with sessions() as session:
        connected = OrderGateway(session).order_integrations(SOURCE_PREFERENCE)
    return [i.organization_id for i in records_of(connected) if i.kind in wanted]


def records_of(integrations: Iterable[IntegrationRef]) -> list[IntegrationRef]:
    """Each organization's integration of record (see ``domain.orders.source_of_record``)."""
    by_org: dict[int, dict[IntegrationKind, IntegrationRef]] = {}
    for integration in integrations:
        by_org.setdefault(integration.organization_id, {})[integration.kind] = integration
    chosen = []
    for organization_id in sorted(by_org):
        kind = source_of_record(set(by_org[organization_id]))
        if kind is not None:
            chosen.append(by_org[organization_id][kind])
    return chosen


def read_window(
    watermark: datetime | None, window: Window | None, now: datetime
) -> tuple[datetime, datetime]:
    """Where a sync reads: the operator's window, else from the watermark less the safety
    overlap (a first sync: ``FIRST_SYNC_LOOKBACK``) up to now."""
    if window is not None:
        return window.since, window.until or now
    if watermark is None:
        return now - FIRST_SYNC_LOOKBACK, now
    return min(watermark, now) - SAFETY_OVERLAP, now


def _sync_one(
    sessions: SessionFactory,
    sources: OrderSources,
    integration: IntegrationRef,
    window: Window | None,
    now: datetime,
) -> SourceOutcome:
    org, kind = integration.organization_id, integration.kind
    with sessions() as session:
        watermark = OrderGateway(session).watermark(org, kind)
    since, until = read_window(watermark, window, now)
    outcome = SourceOutcome(org, kind, since, until)
    client: OrderClient | None = None
    try:
        client = sources.client_for(integration)
        for page in client.order_pages(since, until):
            if page.orders:
                with sessions() as session:
                    counts = OrderGateway(session).upsert(org, page.orders)
                outcome.inserted += counts.inserted
                outcome.changed += counts.changed
            for rejected in page.rejected:
                outcome.rejected += 1
                if len(outcome.rejected_named) < MAX_REJECTS_NAMED:
                    outcome.rejected_named.append(str(rejected))
    except IntegrationError as exc:
        outcome.error = str(exc)
    except Exception as exc:  # one organization's surprise never stops the others
        log.exception("organization %s: the %s order sync failed unexpectedly", org, kind)
        outcome.error = f"unexpected failure: {type(exc).__name__}: {str(exc)[:300]}"
    finally:
        if client is not None:
            client.close()
    with sessions() as session:
        gateway = OrderGateway(session)
        if outcome.error is None:
            # An operator's window repairs a range; only the regular sync moves the watermark
            # (a window after a stale watermark would otherwise skip the days between).
            gateway.record_success(
                org,
                kind,
                read_until=until if window is None else None,
                orders=outcome.inserted + outcome.changed,
                now=now,
            )
        else:
            log.warning("organization %s: the %s order sync failed: %s", org, kind, outcome.error)
            gateway.record_failure(org, kind, outcome.error, now=now)
    return outcome


@dataclass(frozen=True)
class StaleSource:
    organization_id: int
    source: IntegrationKind
    last_success_at: datetime | None
    last_error: str | None


def stale_sources(
    sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow
) -> list[StaleSource]:
    """Organizations whose source of record has not synced for longer than
    ``domain.orders.MAX_SYNC_AGE`` allows (or never did), with the last error."""
    now = clock()
    with sessions() as session:
        gateway = OrderGateway(session)
        chosen = records_of(gateway.order_integrations(SOURCE_PREFERENCE))
        states = {(s.organization_id, s.source): s for s in gateway.states()}
    stale = []
    for integration in chosen:
        state = states.get((integration.organization_id, integration.kind))
        last = state.last_success_at if state else None
        if is_stale(integration.kind, last, now):
            stale.append(
                StaleSource(
                    integration.organization_id,
                    integration.kind,
                    last,
                    state.last_error if state else None,
                )
            )
    return stale
