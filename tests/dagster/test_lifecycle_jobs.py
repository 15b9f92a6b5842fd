"""The lifecycle's jobs and schedules: each schedule at its cron instant in New York (one on
the day clocks go forward), the nightly steps in their order and once per night, a missed
night caught up once, and on-demand runs that must say who asked and why."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._utils.schedules import cron_string_iterator

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, NightlyStepRun
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, Postage
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.lifecycle import (
    NIGHTLY_SCHEDULES,
    campaign_lifecycle_job,
    campaign_lifecycle_schedule,
    nightly_job,
    organization_status_job,
    organization_status_schedule,
)
from mail_pipeline.resources.database import Database

NY = ZoneInfo("America/New_York")
ASKED = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "test"}
SCHEDULES = {s.name: s for s in NIGHTLY_SCHEDULES}
MakeCampaign = Callable[..., tuple[int, int]]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _request(schedule: dg.ScheduleDefinition, at: datetime, instance: Any) -> dg.RunRequest:
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert len(requests) == 1
    return requests[0]


def _run(
    job: dg.JobDefinition, request: dg.RunRequest, db_url: str, instance: Any, **tags_: str
) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        run_config=request.run_config,
        tags={**request.tags, **tags_},
        resources={"database": Database(url=db_url, environment="test")},
        instance=instance,
    )


@pytest.mark.parametrize(
    ("name", "cron_after", "tick"),
    [
        (
            "postage_downgrades_schedule",
            datetime(2026, 11, 29, 12, tzinfo=NY),
            datetime(2026, 11, 30, 2, 0, tzinfo=NY),
        ),
        (
            "csm_cadence_updates_schedule",
            datetime(2026, 11, 29, 12, tzinfo=NY),
            datetime(2026, 11, 30, 3, 0, tzinfo=NY),
        ),
        (
            "scheduled_campaign_switchoffs_schedule",
            datetime(2026, 11, 29, 12, tzinfo=NY),
            datetime(2026, 11, 30, 3, 30, tzinfo=NY),
        ),
        # 2027-03-14: New York skips from 2:00 to 3:00; the 2:00 step runs at 3:00 EDT,
        # for the night of the 14th
        (
            "postage_downgrades_schedule",
            datetime(2027, 3, 13, 12, tzinfo=NY),
            datetime(2027, 3, 14, 3, 0, tzinfo=NY),
        ),
    ],
)
def test_each_nightly_schedule_ticks_at_its_new_york_time_for_its_night(
    name: str, cron_after: datetime, tick: datetime, instance: dg.DagsterInstance
) -> None:
    schedule = SCHEDULES[name]
    ticks = cron_string_iterator(
        cron_after.timestamp(), schedule.cron_schedule, schedule.execution_timezone or ""
    )
    assert next(ticks) == tick

    request = _request(schedule, tick, instance)

    night = tick.date().isoformat()
    step = name.removesuffix("_schedule")
    assert request.run_key == f"nightly-{night}-{step}"
    config = request.run_config["ops"]["plan_night"]["config"]
    assert (config["night"], config["through"]) == (night, step)


def test_the_nightly_job_runs_its_steps_in_order_and_once_per_night(
    db_url: str, make_campaign: MakeCampaign, instance: dg.DagsterInstance
) -> None:
    night = date(2026, 11, 30)
    _, downgraded = make_campaign(
        start_date=night - timedelta(days=2), postage_downgrade_after_days=2
    )
    _, switched = make_campaign(mode=CampaignMode.ONE_OFF, mail_date=night - timedelta(days=1))
    at = datetime(2026, 11, 30, 3, 30, tzinfo=NY)
    request = _request(SCHEDULES["scheduled_campaign_switchoffs_schedule"], at, instance)

    first = _run(nightly_job, request, db_url, instance)
    second = _run(nightly_job, request, db_url, instance)

    assert first.success and second.success
    order = [
        e.step_key for e in first.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS
    ]
    assert order == [
        "plan_night",
        "postage_downgrades",
        "csm_cadence_updates",
        "scheduled_campaign_switchoffs",
    ]
    with unit_of_work(db_url) as session:
        assert session.get_one(Campaign, downgraded).postage == Postage.STANDARD
        assert session.get_one(Campaign, switched).status == CampaignStatus.COMPLETED
        done = session.execute(sa.select(NightlyStepRun.step, NightlyStepRun.run_id)).all()
    assert sorted(done) == sorted(
        (step, first.run_id)
        for step in ("postage_downgrades", "csm_cadence_updates", "scheduled_campaign_switchoffs")
    )
    for step in ("postage_downgrades", "scheduled_campaign_switchoffs"):
        metadata = second.get_step_success_events()
        (event,) = [e for e in second.all_events if e.step_key == step and e.is_successful_output]
        assert event.step_output_data.metadata["already_done"].value is True
    assert metadata


def test_a_missed_night_is_caught_up_once_whatever_order_the_runs_start_in(
    db_url: str, make_campaign: MakeCampaign, instance: dg.DagsterInstance
) -> None:
    """The daemon was down all night: back at 9:00, each schedule launches its latest missed
    tick (Dagster does not go further back for a schedule without partitions). The 3:30 run
    happens to start first."""
    night = date(2026, 11, 30)
    _, campaign_id = make_campaign(
        start_date=night - timedelta(days=1), postage_downgrade_after_days=1
    )
    ticks = {
        "scheduled_campaign_switchoffs_schedule": datetime(2026, 11, 30, 3, 30, tzinfo=NY),
        "postage_downgrades_schedule": datetime(2026, 11, 30, 2, 0, tzinfo=NY),
        "csm_cadence_updates_schedule": datetime(2026, 11, 30, 3, 0, tzinfo=NY),
    }
    runs = [
        _run(nightly_job, _request(SCHEDULES[name], tick, instance), db_url, instance)
        for name, tick in ticks.items()
    ]

    assert all(r.success for r in runs)
    with unit_of_work(db_url) as session:
        done = session.execute(sa.select(NightlyStepRun.step, NightlyStepRun.run_id)).all()
        assert session.get_one(Campaign, campaign_id).postage == Postage.STANDARD
    # every step once, all by the run that started first
    assert sorted(done) == sorted(
        (s, runs[0].run_id)
        for s in ("postage_downgrades", "csm_cadence_updates", "scheduled_campaign_switchoffs")
    )


def test_the_hourly_lifecycle_starts_then_completes(
    db_url: str,
    make_campaign: MakeCampaign,
    add_recipients: Callable[..., list[int]],
    instance: dg.DagsterInstance,
) -> None:
    tick = datetime(2026, 12, 1, 0, 0, tzinfo=NY)
    _, starting = make_campaign(
        mode=CampaignMode.ONE_OFF, status=CampaignStatus.PENDING, start_date=date(2026, 12, 1)
    )
    # an uploaded list whose people were all judged at upload: nothing left to mail
    add_recipients(starting, 2, RecipientStatus.SKIPPED, status_reason="duplicate")
    request = _request(campaign_lifecycle_schedule, tick, instance)
    assert request.run_key == f"lifecycle-{tick.isoformat()}"

    result = _run(campaign_lifecycle_job, request, db_url, instance)

    assert result.success
    with unit_of_work(db_url) as session:
        # started at midnight; with nothing to mail it is complete in the same run
        campaign = session.get_one(Campaign, starting)
        assert campaign.activated_at is not None
        assert campaign.status == CampaignStatus.COMPLETED


def test_an_on_demand_run_must_say_who_asked_and_why(
    db_url: str, instance: dg.DagsterInstance
) -> None:
    resources = {"database": Database(url=db_url, environment="test")}

    refused = organization_status_job.execute_in_process(
        resources=resources, instance=instance, raise_on_error=False
    )
    asked = organization_status_job.execute_in_process(
        resources=resources, instance=instance, tags=ASKED
    )

    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "mail_pipeline/requested_by" in failure.message
    assert asked.success


def test_the_organization_status_schedule_ticks_every_ten_minutes(
    instance: dg.DagsterInstance,
) -> None:
    ticks = cron_string_iterator(
        datetime(2026, 11, 30, 9, 1, tzinfo=NY).timestamp(),
        organization_status_schedule.cron_schedule,
        "America/New_York",
    )
    assert [next(ticks).minute for _ in range(3)] == [10, 20, 30]
    request = _request(
        organization_status_schedule, datetime(2026, 11, 30, 9, 10, tzinfo=NY), instance
    )
    assert request.run_key.startswith("organization-status-2026-11-30T09:10")
