"""The report assets, their schedules and the email events sensor, the Dagster way: a weekly
partition materialized on seeded data with the outbox sender, its re-run, and the schedules'
ticks at their cron instants (DST, and the end of the BFCM season)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from mail_pipeline.assets import reports as assets
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import (
    DailyOrderMetrics,
    DailyRecipientMetrics,
    Organization,
    Report,
)
from mail_pipeline.domain.campaigns import CsmCadence
from mail_pipeline.partitions import bfcm_report_partitions, weekly_report_partitions
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.queues import LocalQueues
from mail_pipeline.resources.reports import OutboxReportEmail
from mail_pipeline.sensors import reports as sensors
from tests.integration.test_reports_service import seed_metrics

#: The week Saturday 2026-11-21 .. Friday 2026-11-27: not a biweekly Friday.
WEEK = "2026-11-21"


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield


@pytest.fixture
def resources(db_url: str, tmp_path: Path) -> dict[str, object]:
    return {
        "database": Database(url=db_url, environment="test"),
        "queues": LocalQueues(path=str(tmp_path / "queues.sqlite")),
        "report_email": OutboxReportEmail(
            folder=str(tmp_path / "outbox"), archive_folder=str(tmp_path / "reports")
        ),
    }


@pytest.fixture
def organizations(db_url: str, make_campaign) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Two weekly organizations and one biweekly, with metrics."""
    ids = {}
    for name in ("weekly_a", "weekly_b", "biweekly"):
        organization_id, campaign_id = make_campaign()
        seed_metrics(db_url, organization_id, campaign_id)
        ids[name] = organization_id
    with unit_of_work(db_url) as session:
        session.get_one(Organization, ids["biweekly"]).csm_cadence = CsmCadence.BIWEEKLY
    return ids


def test_a_weekly_partition_sends_one_email_per_due_organization(
    resources: dict[str, object], organizations: dict[str, int], tmp_path: Path, db_url: str
) -> None:
    result = dg.materialize([assets.weekly_reports], partition_key=WEEK, resources=resources)
    assert result.success
    [materialization] = result.asset_materializations_for_node("weekly_reports")
    metadata = materialization.metadata
    counts = {k: metadata[k].value for k in ("generated", "sent", "skipped", "failed")}
    assert counts == {"generated": 2, "sent": 2, "skipped": 1, "failed": 0}
    assert "data:image/png;base64," in str(metadata["first_chart"].value)
    assert "| organization |" in str(metadata["reports"].value)

    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2
    week = tmp_path / "reports" / "weekly" / WEEK
    assert len(list(week.glob("*/*.png"))) == 6 and len(list(week.glob("*/report.html"))) == 2
    with unit_of_work(db_url) as session:
        rows = session.execute(sa.select(Report.organization_id, Report.status)).all()
    assert sorted(rows) == sorted(
        (organizations[name], "sent") for name in ("weekly_a", "weekly_b")
    )
    # the outbox put one delivery event per email on the events queue
    assert resources["queues"].report_email_events_queue().approximate_depth() == 2  # type: ignore[attr-defined]

    again = dg.materialize([assets.weekly_reports], partition_key=WEEK, resources=resources)
    [rerun] = again.asset_materializations_for_node("weekly_reports")
    assert (rerun.metadata["sent"].value, rerun.metadata["already_sent"].value) == (0, 2)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def test_the_events_sensor_launches_the_drain_and_the_job_applies_them(
    resources: dict[str, object], organizations: dict[str, int], db_url: str
) -> None:
    dg.materialize([assets.weekly_reports], partition_key=WEEK, resources=resources)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        tick = sensors.report_email_events_sensor(context)
        assert isinstance(tick, dg.SensorResult) and len(tick.run_requests or []) == 1
        job = sensors.report_email_events_job
        run = job.execute_in_process(
            run_config=tick.run_requests[0].run_config,  # type: ignore[index]
            resources=resources,
            instance=instance,
            tags={"dagster/sensor_name": "report_email_events_sensor"},
        )
        assert run.success
    with unit_of_work(db_url) as session:
        statuses = session.scalars(sa.select(Report.status)).all()
    assert sorted(statuses) == ["delivered", "delivered"]


def _definitions(resources: dict[str, object]) -> dg.Definitions:
    return dg.Definitions(
        assets=assets.ASSETS,
        jobs=[*assets.JOBS, *sensors.JOBS],
        schedules=assets.SCHEDULES,
        sensors=sensors.SENSORS,
        resources=resources,
    )


def _tick(schedule: dg.ScheduleDefinition, moment: datetime) -> dg.RunRequest | str:
    """The schedule's answer at ``moment`` (its functions read nothing but the time)."""
    outcome = schedule(dg.build_schedule_context(scheduled_execution_time=moment))
    if isinstance(outcome, dg.SkipReason):
        return outcome.skip_message or ""
    assert isinstance(outcome, dg.RunRequest)
    return outcome


@pytest.mark.parametrize(
    ("moment", "key"),
    [
        # Friday 2026-11-27 03:00 EST: the week ending that day is not over yet
        (datetime(2026, 11, 27, 8, tzinfo=UTC), "2026-11-14"),
        # Friday 2026-03-13 03:00 EDT, the first Friday after clocks went forward
        (datetime(2026, 3, 13, 7, tzinfo=UTC), "2026-02-28"),
        # Friday 2026-11-06 03:00 EST, the first Friday after clocks went back
        (datetime(2026, 11, 6, 8, tzinfo=UTC), "2026-10-24"),
    ],
)
def test_the_weekly_schedule_takes_the_last_week_that_is_over(moment: datetime, key: str) -> None:
    assert assets.weekly_reports_schedule.cron_schedule == "0 3 * * 5"
    request = _tick(assets.weekly_reports_schedule, moment)
    assert isinstance(request, dg.RunRequest) and request.partition_key == key
    assert key in weekly_report_partitions.get_partition_keys(current_time=moment)
    assert assets.week_friday(key).weekday() == 4


@pytest.mark.parametrize(
    ("moment", "key"),
    [
        # 2026-11-01 01:30 happens twice (clocks go back at 02:00 EDT): both ticks skip Oct 31
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), None),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), None),
        (datetime(2026, 11, 2, 6, 30, tzinfo=UTC), "2026-11-01"),
        (datetime(2026, 11, 28, 6, 30, tzinfo=UTC), "2026-11-27"),  # Black Friday
        (datetime(2026, 12, 10, 6, 30, tzinfo=UTC), "2026-12-09"),
        (datetime(2026, 12, 11, 6, 30, tzinfo=UTC), "2026-12-10"),  # the last day
        (datetime(2026, 12, 12, 6, 30, tzinfo=UTC), None),  # Dec 11: season over
        (datetime(2026, 7, 4, 5, 30, tzinfo=UTC), None),
    ],
)
def test_the_bfcm_schedule_reports_the_day_before_during_the_season(
    moment: datetime, key: str | None
) -> None:
    outcome = _tick(assets.bfcm_reports_schedule, moment)
    if key is None:
        assert isinstance(outcome, str) and "outside the BFCM season" in outcome
        return
    assert isinstance(outcome, dg.RunRequest) and outcome.partition_key == key
    assert key in bfcm_report_partitions.get_partition_keys(current_time=moment)


def test_the_report_definitions_load_together(resources: dict[str, object]) -> None:
    defs = _definitions(resources)
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("weekly_reports_job").partitions_def == weekly_report_partitions


def test_a_failed_organization_fails_the_run_after_the_others(
    resources: dict[str, object], organizations: dict[str, int], tmp_path: Path
) -> None:
    broken = {
        **resources,
        "report_email": OutboxReportEmail(
            folder=str(tmp_path / "outbox"),
            archive_folder=str(tmp_path / "reports"),
            recipient_template="not an address {slug}",
        ),
    }
    result = dg.materialize(
        [assets.weekly_reports], partition_key=WEEK, resources=broken, raise_on_error=False
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data.user_failure_data is not None
    assert data.user_failure_data.metadata["failed"].value == 2
    assert "reports failed for" in (data.user_failure_data.description or "")


def _this_week() -> str:
    today = datetime.now(assets.NEW_YORK).date()
    return (today - timedelta(days=(today.weekday() - 5) % 7)).isoformat()


def test_the_week_in_progress_is_refused_unless_asked_for_as_it_stands(
    resources: dict[str, object], organizations: dict[str, int], tmp_path: Path
) -> None:
    key = _this_week()
    refused = dg.materialize(
        [assets.weekly_reports], partition_key=key, resources=resources, raise_on_error=False
    )
    assert not refused.success
    assert not list((tmp_path / "outbox").glob("*.eml"))
    config = {"ops": {"weekly_reports": {"config": {"week_to_date": True}}}}
    asked = dg.materialize(
        [assets.weekly_reports], partition_key=key, resources=resources, run_config=config
    )
    assert asked.success


def test_the_demo_sends_the_week_to_date_report_once_postcards_of_the_week_are_counted(
    resources: dict[str, object],
    make_campaign,
    db_url: str,  # type: ignore[no-untyped-def]
) -> None:
    def tick() -> dg.RunRequest | dg.SkipReason:
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(
                instance=instance, resources={"database": resources["database"]}
            )
            return assets.sandbox_weekly_reports(context)

    assert isinstance(tick(), dg.SkipReason)  # nothing mailed this week
    organization_id, campaign_id = make_campaign()
    today = datetime.now(assets.NEW_YORK).date()
    with unit_of_work(db_url) as session:
        session.execute(
            sa.insert(DailyRecipientMetrics),
            [
                {
                    "day": today,
                    "organization_id": organization_id,
                    "campaign_id": campaign_id,
                    "mailed": 3,
                    "computed_at": datetime.now(UTC),
                    **dict.fromkeys(
                        [
                            c.name
                            for c in DailyRecipientMetrics.__table__.c
                            if c.name
                            not in (
                                "id",
                                "day",
                                "organization_id",
                                "campaign_id",
                                "mailed",
                                "computed_at",
                            )
                        ],
                        0,
                    ),
                }
            ],
        )
    assert isinstance(tick(), dg.SkipReason)  # mailed, but no order attributed yet
    with unit_of_work(db_url) as session:
        session.execute(
            sa.insert(DailyOrderMetrics),
            [
                {
                    "day": today,
                    "organization_id": organization_id,
                    "campaign_id": campaign_id,
                    "currency": "USD",
                    "email_orders": 1,
                    "email_revenue_minor": 5_000,
                    "computed_at": datetime.now(UTC),
                    **dict.fromkeys(
                        [
                            c.name
                            for c in DailyOrderMetrics.__table__.c
                            if c.name
                            not in (
                                "id",
                                "day",
                                "organization_id",
                                "campaign_id",
                                "currency",
                                "email_orders",
                                "email_revenue_minor",
                                "computed_at",
                            )
                        ],
                        0,
                    ),
                }
            ],
        )
    request = tick()
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == _this_week()
    assert request.run_config["ops"]["weekly_reports"]["config"] == {"week_to_date": True}
    result = dg.materialize(
        [assets.weekly_reports],
        partition_key=request.partition_key,
        resources=resources,
        run_config=request.run_config,
        tags=request.tags,
    )
    assert result.success
    assert isinstance(tick(), dg.SkipReason)  # its report exists now
