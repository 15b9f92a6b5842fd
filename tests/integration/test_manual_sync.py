"""Manual "sync now" requests in the database: filing, listing the pending ones, their
lifecycle, and the demo's first-sync requests (SQLite, or PostgreSQL when
MAIL_PIPELINE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import pytest
from sqlalchemy import func, select

from mail_pipeline.db.demo import DemoGateway
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.manual_sync import ManualSyncTriggers, PendingTrigger
from mail_pipeline.db.models import ManualSyncTrigger
from mail_pipeline.domain.manual_sync import ManualSyncStatus
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.services.demo import DEMO_BRANDS, request_demo_syncs, seed_demo
from mail_pipeline.services.manual_sync import (
    finish_trigger,
    pending_triggers,
    request_sync,
    start_trigger,
)

NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
MakeCampaign = Callable[..., tuple[int, int]]


def _row(db_url: str, trigger_id: int) -> ManualSyncTrigger:
    with unit_of_work(db_url) as session:
        return session.get_one(ManualSyncTrigger, trigger_id)


def test_a_request_is_filed_pending_for_the_campaigns_organization(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    org_id, campaign_id = make_campaign()

    trigger = request_sync(partial(unit_of_work, db_url), campaign_id, "ana@ops", "segment fixed")

    row = _row(db_url, trigger)
    assert (row.organization_id, row.campaign_id) == (org_id, campaign_id)
    assert (row.requested_by, row.reason) == ("ana@ops", "segment fixed")
    assert row.status == ManualSyncStatus.PENDING
    assert row.run_id is None and row.launched_at is None and row.completed_at is None


def test_a_request_for_an_unknown_campaign_is_refused_and_writes_nothing(db_url: str) -> None:
    with pytest.raises(ValueError, match="there is no campaign 999"):
        request_sync(partial(unit_of_work, db_url), 999, "ana@ops")

    with unit_of_work(db_url) as session:
        assert session.scalar(select(func.count()).select_from(ManualSyncTrigger)) == 0


def test_a_request_the_app_writes_without_a_status_is_pending(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    org_id, campaign_id = make_campaign()
    with unit_of_work(db_url) as session:
        row = ManualSyncTrigger(organization_id=org_id, campaign_id=campaign_id, requested_by="app")
        session.add(row)
        session.flush()
        trigger = row.id

    assert pending_triggers(partial(unit_of_work, db_url)) == [
        PendingTrigger(trigger, org_id, campaign_id, "app", None)
    ]


def test_pending_requests_are_listed_oldest_first_after_an_id_up_to_a_limit(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    sessions = partial(unit_of_work, db_url)
    _, campaign_id = make_campaign()
    first, second, third, fourth = (request_sync(sessions, campaign_id, f"op{n}") for n in range(4))
    start_trigger(sessions, second, "run-2")

    assert [t.id for t in pending_triggers(sessions)] == [first, third, fourth]
    assert [t.id for t in pending_triggers(sessions, after_id=first)] == [third, fourth]
    assert [t.id for t in pending_triggers(sessions, limit=2)] == [first, third]


def test_a_request_runs_then_completes_with_the_number_synced(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    sessions = partial(unit_of_work, db_url)
    _, campaign_id = make_campaign()
    trigger = request_sync(sessions, campaign_id, "ana@ops")

    start_trigger(sessions, trigger, "run-1")
    running = _row(db_url, trigger)
    assert (running.status, running.run_id) == ("running", "run-1")
    assert running.launched_at is not None and running.completed_at is None

    finish_trigger(sessions, trigger, synced=7, error=None)
    done = _row(db_url, trigger)
    assert (done.status, done.synced_count, done.error) == ("completed", 7, None)
    assert done.completed_at is not None
    assert pending_triggers(sessions) == []


def test_a_request_whose_sync_reported_a_problem_fails_with_it(
    db_url: str, make_campaign: MakeCampaign
) -> None:
    _, campaign_id = make_campaign()
    with unit_of_work(db_url) as session:
        gateway = ManualSyncTriggers(session)
        trigger = gateway.request(campaign_id, "ana@ops", None)
        assert trigger is not None
        gateway.start(trigger, "run-1", now=NOW)
        gateway.finish(trigger, synced=0, error="Win-back (1) has no segment", now=NOW)

    row = _row(db_url, trigger)
    assert (row.status, row.synced_count) == ("failed", 0)
    assert row.error == "Win-back (1) has no segment"
    assert row.launched_at == NOW and row.completed_at == NOW


def test_every_status_fits_its_column() -> None:
    length = ManualSyncTrigger.__table__.c.status.type.length
    assert all(len(status.value) <= length for status in ManualSyncStatus)


def test_demo_syncs_are_requested_once_for_each_campaign_not_yet_synced(db_url: str) -> None:
    sessions = partial(unit_of_work, db_url)
    with unit_of_work(db_url) as session:
        seed_demo(session, SandboxStore())
    segmented = sum(1 for b in DEMO_BRANDS for c in b.campaigns if c.segment is not None)

    with unit_of_work(db_url) as session:
        assert request_demo_syncs(session) == segmented == 4
    with unit_of_work(db_url) as session:
        assert request_demo_syncs(session) == 0, "pending requests are not asked for twice"

    triggers = pending_triggers(sessions)
    assert {t.requested_by for t in triggers} == {"demo"}
    assert {t.reason for t in triggers} == {"first sync of the demo data"}
    running, *ended = triggers
    start_trigger(sessions, running.id, "run-1")
    for trigger in ended:
        finish_trigger(sessions, trigger.id, synced=0, error=None)
    with unit_of_work(db_url) as session:
        assert request_demo_syncs(session) == 3, "a running request is still open"


def test_demo_syncs_skip_a_campaign_that_has_recipients(
    db_url: str, add_recipients: Callable[..., list[int]]
) -> None:
    with unit_of_work(db_url) as session:
        seed_demo(session, SandboxStore())
        synced, *_ = DemoGateway(session).campaigns_with_segment(DEMO_BRANDS[0].slug)
    add_recipients(synced, 1)

    with unit_of_work(db_url) as session:
        assert request_demo_syncs(session) == 3
    assert synced not in {t.campaign_id for t in pending_triggers(partial(unit_of_work, db_url))}
