"""The reporting sync job: one mapped sync per organization, a failure isolated to its
organization (recorded, named in the summary, the run red after the others synced), and the
7.5-minute schedule's ticks, which skip while a run is still going."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import islice, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._utils.schedules import cron_string_iterator

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import DailySpend, ReportingCampaignDay, ReportingSync
from mail_pipeline.jobs import reporting_sync as job_module
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.reporting_sync import reporting_sync_job, reporting_sync_schedule
from mail_pipeline.resources.database import Database
from mail_pipeline.services import reporting_sync

NY = ZoneInfo("America/New_York")
ASKED = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "test"}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def organizations(db_url: str, make_campaign: Any) -> list[int]:
    """Three organizations, each with a campaign and a day of spend this week."""
    ids = []
    today = datetime.now(NY).date()
    for _ in range(3):
        organization_id, campaign_id = make_campaign()
        with unit_of_work(db_url) as s:
            s.add(
                DailySpend(
                    day=today - timedelta(days=1),
                    campaign_id=campaign_id,
                    currency="USD",
                    organization_id=organization_id,
                    postcards=2,
                    spend_minor=140,
                    computed_at=datetime.now(UTC),
                )
            )
        ids.append(organization_id)
    return ids


def _run(db_url: str, instance: dg.DagsterInstance, **kwargs: Any) -> dg.ExecuteInProcessResult:
    return reporting_sync_job.execute_in_process(
        resources={"database": Database(url=db_url, environment="test")},
        instance=instance,
        tags=ASKED,
        raise_on_error=False,
        **kwargs,
    )


def _summary_failure(result: dg.ExecuteInProcessResult) -> dg.DagsterEvent:
    [failure] = [
        event
        for event in result.all_node_events
        if event.is_step_failure and event.step_key == "summarize_reporting_sync"
    ]
    return failure


def test_every_organization_is_synced(
    db_url: str, instance: dg.DagsterInstance, organizations: list[int]
) -> None:
    result = _run(db_url, instance)

    assert result.success
    outcomes = result.output_for_node("sync_reporting")
    assert set(outcomes) == {f"org_{o}" for o in organizations}
    assert all(not o.failed and o.day_rows == 1 for o in outcomes.values())
    with unit_of_work(db_url) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ReportingCampaignDay)) == 3
        assert {r.status for r in s.scalars(sa.select(ReportingSync))} == {"ok"}
    [materialization] = [
        e
        for e in result.all_node_events
        if e.step_key == "summarize_reporting_sync" and e.is_successful_output
    ]
    metadata = materialization.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["failed_organizations"].value == "none"
    assert metadata["synced"].value == 3


def test_one_failing_organization_fails_the_run_after_the_others(
    db_url: str,
    instance: dg.DagsterInstance,
    organizations: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = organizations[1]
    real = reporting_sync.sync_organization

    def sync(session: Any, organization_id: int, now: datetime, *, days: int) -> Any:
        if organization_id == broken:
            raise RuntimeError("the metrics of this organization are unreadable")
        return real(session, organization_id, now, days=days)

    monkeypatch.setattr(job_module.reporting_sync, "sync_organization", sync)

    result = _run(db_url, instance)

    assert not result.success
    outcomes = result.output_for_node("sync_reporting")
    assert {key for key, o in outcomes.items() if not o.failed} == {
        f"org_{o}" for o in organizations if o != broken
    }
    failure = _summary_failure(result)
    error = failure.step_failure_data.user_failure_data
    assert error is not None
    assert str(broken) in (error.description or "")
    assert error.metadata["failed_organizations"].value == str(broken)
    assert error.metadata["synced"].value == 2
    with unit_of_work(db_url) as s:
        states = {r.organization_id: r for r in s.scalars(sa.select(ReportingSync))}
        assert states[broken].status == "failed"
        assert "unreadable" in (states[broken].error or "")
        assert states[broken].last_synced_at is None
        assert {states[o].status for o in organizations if o != broken} == {"ok"}
        synced = s.scalars(sa.select(ReportingCampaignDay.organization_id)).all()
        assert sorted(synced) == sorted(o for o in organizations if o != broken)


def test_some_organizations_and_more_days_on_demand(
    db_url: str, instance: dg.DagsterInstance, organizations: list[int]
) -> None:
    config = dg.RunConfig(
        ops={
            "list_organizations": job_module.ReportingSyncConfig(
                organization_ids=[organizations[0]], days=90
            )
        }
    )
    result = _run(db_url, instance, run_config=config)
    assert result.success
    assert list(result.output_for_node("sync_reporting")) == [f"org_{organizations[0]}"]


def test_an_on_demand_run_must_say_who_and_why(db_url: str, instance: dg.DagsterInstance) -> None:
    result = reporting_sync_job.execute_in_process(
        resources={"database": Database(url=db_url, environment="test")},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success


def _ticks(after: datetime, n: int) -> list[datetime]:
    streams = [
        cron_string_iterator(after.timestamp(), cron, "America/New_York")
        for cron in reporting_sync_schedule.cron_schedule
    ]
    return list(islice(heapq.merge(*streams), n))


def test_ticks_alternate_8_and_7_minutes_in_new_york() -> None:
    assert reporting_sync_schedule.execution_timezone == "America/New_York"
    ticks = _ticks(datetime(2026, 11, 30, 9, 0, 30, tzinfo=NY), 9)
    assert [t.strftime("%H:%M") for t in ticks] == [
        "09:08", "09:15", "09:23", "09:30", "09:38", "09:45", "09:53", "10:00", "10:08",
    ]  # fmt: skip
    gaps = [(b - a).total_seconds() / 60 for a, b in pairwise(ticks)]
    assert set(gaps) == {7, 8}
    assert sum(gaps[:8]) / 8 == 7.5
    assert ticks[0].tzinfo is not None and ticks[0].utcoffset() == timedelta(hours=-5)


def test_a_tick_launches_a_run_unless_one_is_going(instance: dg.DagsterInstance) -> None:
    at = datetime(2026, 11, 30, 9, 8, tzinfo=NY)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
    [request] = reporting_sync_schedule.evaluate_tick(context).run_requests or []
    assert request.run_key == f"reporting-sync-{at.isoformat()}"
    assert request.tags[tags.REQUESTED_BY] == "reporting_sync_schedule"
    assert reporting_sync_job.tags[tags.STAGE] == "analytics"

    instance.create_run_for_job(
        reporting_sync_job, run_config={}, status=dg.DagsterRunStatus.STARTED
    )
    later = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
    skipped = reporting_sync_schedule.evaluate_tick(later)
    assert not skipped.run_requests
    assert "still queued or running" in (skipped.skip_message or "")


def test_today_is_new_yorks() -> None:
    # The job passes an aware UTC time; the window's last day is New York's day of it.
    from mail_pipeline.domain.reporting import reporting_window

    assert reporting_window(datetime(2026, 12, 1, 4, 59, tzinfo=UTC)).last == date(2026, 11, 30)


def test_no_organizations_is_a_quiet_success(db_url: str, instance: dg.DagsterInstance) -> None:
    result = _run(db_url, instance)
    assert result.success
    ran = {e.step_key for e in result.all_node_events if e.is_step_success}
    assert ran == {"list_organizations", "summarize_reporting_sync"}
