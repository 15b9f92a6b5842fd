"""The metrics assets and their schedule, the Dagster way: a range of partitions materialized
as one run, the checks that run with it, and the 15-minute schedule's ticks around midnight,
the 06:00 cutoff and both DST changes in America/New_York."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from mail_pipeline.assets import metrics as assets
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import (
    Attribution,
    DailyOrderMetrics,
    DailyRecipientMetrics,
    Order,
    Recipient,
)
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.partitions import HISTORY_START
from mail_pipeline.resources.database import Database
from mail_pipeline.services import metrics as services

NY = ZoneInfo("America/New_York")


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        yield


@pytest.fixture
def resources(db_url: str) -> dict[str, object]:
    return {"database": Database(url=db_url, environment="test")}


@pytest.fixture
def orders_in_march(db_url: str, make_campaign) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """An organization with recipients and orders on March 7-9 2026 (DST on the 8th)."""
    organization_id, campaign_id = make_campaign()
    with unit_of_work(db_url) as session:
        created = datetime(2026, 3, 1, 15, tzinfo=UTC)
        recipient = Recipient(
            organization_id=organization_id,
            campaign_id=campaign_id,
            status=RecipientStatus.SENT,
            created_at=created,
            status_changed_at=datetime(2026, 3, 8, 15, tzinfo=UTC),
            sent_at=datetime(2026, 3, 8, 15, tzinfo=UTC),
        )
        session.add(recipient)
        session.flush()
        for i, moment in enumerate(
            [
                datetime(2026, 3, 7, 12, tzinfo=UTC),
                datetime(2026, 3, 8, 4, 59, tzinfo=UTC),  # 23:59 EST on the 7th
                datetime(2026, 3, 9, 3, 59, tzinfo=UTC),  # 23:59 EDT on the 8th
                datetime(2026, 3, 9, 16, tzinfo=UTC),
            ]
        ):
            order = Order(
                organization_id=organization_id,
                source="shopify",
                external_order_id=f"m-{i}",
                total_minor=1000 * (i + 1),
                currency="USD",
                ordered_at=moment,
            )
            session.add(order)
            session.flush()
            if i == 2:
                session.add(
                    Attribution(
                        order_id=order.id,
                        recipient_id=recipient.id,
                        campaign_id=campaign_id,
                        organization_id=organization_id,
                        match_type="offer_code",
                        revenue_minor=3000,
                        currency="USD",
                    )
                )
    return organization_id, campaign_id


RANGE = {assets.RANGE_START_TAG: "2026-03-07", assets.RANGE_END_TAG: "2026-03-09"}


def test_a_range_of_days_is_one_run_computing_every_day(
    db_url: str, resources: dict[str, object], orders_in_march: tuple[int, int]
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [assets.daily_order_metrics, assets.daily_recipient_metrics],
        resources=resources,
        instance=instance,
        tags=RANGE,
    )
    assert result.success
    assert instance.get_runs_count() == 1
    for key in ("daily_order_metrics", "daily_recipient_metrics"):
        partitions = sorted(
            event.partition for event in result.asset_materializations_for_node(key)
        )
        assert partitions == ["2026-03-07", "2026-03-08", "2026-03-09"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "reconciles_with_orders": True,
        "revenue_not_negative": True,
        "reconciles_with_recipients": True,
    }
    with unit_of_work(db_url) as session:
        per_day = dict(
            session.execute(
                sa.select(DailyOrderMetrics.day, sa.func.sum(DailyOrderMetrics.orders)).group_by(
                    DailyOrderMetrics.day
                )
            ).all()
        )
        recipient_days = session.scalar(
            sa.select(sa.func.count()).select_from(DailyRecipientMetrics)
        )
    assert {str(d)[:10]: int(n) for d, n in per_day.items()} == {
        "2026-03-07": 2,
        "2026-03-08": 1,
        "2026-03-09": 1,
    }
    assert recipient_days == 3


def test_a_check_fails_when_the_stored_metrics_do_not_add_up(
    resources: dict[str, object],
    orders_in_march: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A computation that loses a row: the run still stores what it computed (the checks
    do not block), and the reconciliation says so."""
    compute = services.order_metrics_frame

    def loses_the_first_row(*frames: pd.DataFrame) -> pd.DataFrame:
        return compute(*frames).iloc[1:]

    monkeypatch.setattr(services, "order_metrics_frame", loses_the_first_row)
    result = dg.materialize([assets.daily_order_metrics], resources=resources, tags=RANGE)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["revenue_not_negative"].passed
    failed = checks["reconciles_with_orders"]
    assert not failed.passed
    assert "differ from the base tables" in (failed.description or "")
    problems = failed.metadata["first_problems"].value
    assert isinstance(problems, str)
    assert "USD: orders 2 in the metrics, 4 in the base tables" in problems


def test_campaign_results_show_their_headline_figures(
    resources: dict[str, object], orders_in_march: tuple[int, int]
) -> None:
    result = dg.materialize([assets.campaign_results], resources=resources)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("campaign_results")
    table = materialization.metadata["results"].value
    assert isinstance(table, str)
    assert table.startswith("| campaign | mailed | holdout |")
    assert "| no_holdout |" in table
    assert materialization.metadata["dagster/row_count"].value == 1
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "rates_are_proportions" and check.passed


# --- the schedule ----------------------------------------------------------------------------


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def repository(
    instance: dg.DagsterInstance, resources: dict[str, object]
) -> dg.RepositoryDefinition:
    """The metrics definitions, loaded against the test instance."""
    defs = dg.Definitions(
        assets=assets.ASSETS, jobs=assets.JOBS, schedules=assets.SCHEDULES, resources=resources
    )
    dg.Definitions.validate_loadable(defs)
    return defs.get_repository_def()


def tick(
    repository: dg.RepositoryDefinition, local: datetime, instance: dg.DagsterInstance
) -> list[dg.RunRequest]:
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=local, repository_def=repository
    )
    data = assets.daily_metrics_schedule.evaluate_tick(context)
    return list(data.run_requests or [])


def days_of(request: dg.RunRequest) -> list[str]:
    if request.partition_key is not None:
        return [request.partition_key]
    return [request.tags[assets.RANGE_START_TAG], request.tags[assets.RANGE_END_TAG]]


@pytest.mark.parametrize(
    ("local", "days"),
    [
        # around midnight: the midnight tick closes yesterday
        (datetime(2026, 6, 1, 23, 45, tzinfo=NY), ["2026-06-01"]),
        (datetime(2026, 6, 2, 0, 0, tzinfo=NY), ["2026-06-01", "2026-06-02"]),
        # around the 06:00 cutoff
        (datetime(2026, 6, 2, 5, 45, tzinfo=NY), ["2026-06-01", "2026-06-02"]),
        (datetime(2026, 6, 2, 6, 0, tzinfo=NY), ["2026-06-02"]),
        # spring forward (01:45 EST is followed by 03:00 EDT)
        (datetime(2026, 3, 8, 0, 0, tzinfo=NY), ["2026-03-07", "2026-03-08"]),
        (datetime(2026, 3, 8, 1, 45, tzinfo=NY), ["2026-03-07", "2026-03-08"]),
        (datetime(2026, 3, 8, 3, 0, tzinfo=NY), ["2026-03-07", "2026-03-08"]),
        (datetime(2026, 3, 8, 5, 45, tzinfo=NY), ["2026-03-07", "2026-03-08"]),
        (datetime(2026, 3, 8, 6, 0, tzinfo=NY), ["2026-03-08"]),
        (datetime(2026, 3, 8, 23, 45, tzinfo=NY), ["2026-03-08"]),
        (datetime(2026, 3, 9, 0, 0, tzinfo=NY), ["2026-03-08", "2026-03-09"]),
        # fall back (01:00-01:59 happens twice)
        (datetime(2026, 11, 1, 1, 30, tzinfo=NY), ["2026-10-31", "2026-11-01"]),
        (datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NY), ["2026-10-31", "2026-11-01"]),
        (datetime(2026, 11, 1, 5, 45, tzinfo=NY), ["2026-10-31", "2026-11-01"]),
        (datetime(2026, 11, 1, 6, 0, tzinfo=NY), ["2026-11-01"]),
        (datetime(2026, 11, 1, 23, 45, tzinfo=NY), ["2026-11-01"]),
        (datetime(2026, 11, 2, 0, 0, tzinfo=NY), ["2026-11-01", "2026-11-02"]),
    ],
)
def test_each_tick_is_one_run_for_today_and_yesterday_until_the_cutoff(
    repository: dg.RepositoryDefinition,
    instance: dg.DagsterInstance,
    local: datetime,
    days: list[str],
) -> None:
    (request,) = tick(repository, local, instance)
    assert days_of(request) == days
    assert request.run_key == f"daily-metrics-{local.isoformat()}"
    assert request.tags["mail_pipeline/stage"] == "analytics"


def test_the_schedule_runs_every_15_minutes_in_new_york_by_default() -> None:
    schedule = assets.daily_metrics_schedule
    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.execution_timezone == "America/New_York"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_tick_waits_for_the_previous_refresh(
    repository: dg.RepositoryDefinition, instance: dg.DagsterInstance
) -> None:
    local = datetime(2026, 6, 2, 12, 0, tzinfo=NY)
    instance.create_run_for_job(
        repository.get_job("daily_metrics_job"),
        status=dg.DagsterRunStatus.STARTED,
        tags={"mail_pipeline/requested_by": "daily_metrics_schedule"},
    )
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=local, repository_def=repository
    )
    data = assets.daily_metrics_schedule.evaluate_tick(context)
    assert not data.run_requests
    assert "has not finished" in (data.skip_message or "")


def test_a_ticks_run_refreshes_both_days_and_the_campaign_results(
    repository: dg.RepositoryDefinition,
    instance: dg.DagsterInstance,
    orders_in_march: tuple[int, int],
) -> None:
    local = datetime(2026, 3, 9, 0, 0, tzinfo=NY)
    (request,) = tick(repository, local, instance)
    job = repository.get_job("daily_metrics_job")
    result = job.execute_in_process(instance=instance, tags=request.tags)
    assert result.success
    order_partitions = sorted(
        e.partition for e in result.asset_materializations_for_node("daily_order_metrics")
    )
    assert order_partitions == ["2026-03-08", "2026-03-09"]
    assert len(result.asset_materializations_for_node("campaign_results")) == 1
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_a_tick_today_is_a_partition_that_exists() -> None:
    """Today's partition exists from its first minute (the daily partitions' end offset)."""
    now = datetime.now(UTC)
    today = now.astimezone(NY).date().isoformat()
    keys = assets.daily_order_metrics.partitions_def.get_partition_keys(current_time=now)  # type: ignore[union-attr]
    assert keys[-1] == today
    assert date.fromisoformat(keys[0]) == date.fromisoformat(HISTORY_START)
