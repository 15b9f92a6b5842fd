"""Address enrichment's schedules, sensor and jobs: the four New York times (on the day
clocks go forward too), the sensor launching one poll while a batch is open, and a run whose
failed organization is named while the others are done."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._utils.schedules import cron_string_iterator

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Recipient
from mail_pipeline.domain.addresses import email_key
from mail_pipeline.domain.recipients import RecipientStatus as S
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.address_enrichment import (
    address_enrichment_job,
    address_enrichment_schedule,
    enrichment_batches_sensor,
    enrichment_cache_cleanup_schedule,
    enrichment_results_job,
)
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.enrichment import SandboxAddressEnrichment

NY = ZoneInfo("America/New_York")
ASKED = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "test"}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _ticks(schedule: dg.ScheduleDefinition, after: datetime, n: int) -> list[datetime]:
    ticks = cron_string_iterator(
        after.timestamp(), str(schedule.cron_schedule), schedule.execution_timezone or ""
    )
    return [next(ticks) for _ in range(n)]


def test_batches_start_at_1_7_13_and_19_new_york_time_across_a_dst_change() -> None:
    # 2026-03-08: New York clocks go from 02:00 to 03:00 (EST -> EDT).
    ticks = _ticks(address_enrichment_schedule, datetime(2026, 3, 7, 20, 0, tzinfo=NY), 5)
    assert [(t.day, t.hour, t.minute) for t in ticks] == [
        (8, 1, 0),
        (8, 7, 0),
        (8, 13, 0),
        (8, 19, 0),
        (9, 1, 0),
    ]
    assert [t.utcoffset().total_seconds() / 3600 for t in ticks] == [-5, -4, -4, -4, -4]  # type: ignore[union-attr]
    [daily] = _ticks(enrichment_cache_cleanup_schedule, datetime(2026, 11, 30, 5, tzinfo=NY), 1)
    assert (daily.hour, daily.minute) == (4, 10)


def _resources(db_url: str, tmp_path: Path) -> dict[str, object]:
    return {
        "database": Database(url=db_url, environment="test"),
        "address_enrichment": SandboxAddressEnrichment(
            sandbox_path=str(tmp_path / "sandbox.sqlite"), ready_after_seconds=0
        ),
    }


def test_the_schedule_run_submits_the_sensor_polls_and_matched_recipients_become_pending(
    db_url: str,
    make_campaign: Callable[..., tuple[int, int]],
    add_recipients,  # type: ignore[no-untyped-def]
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    _org, campaign = make_campaign()
    ids = add_recipients(campaign, 30, S.ADDRESS_ENRICHABLE, last_name="Doe")
    with unit_of_work(db_url) as session:
        for recipient in session.scalars(sa.select(Recipient).where(Recipient.id.in_(ids))):
            recipient.email_key = email_key(recipient.email)
    resources = _resources(db_url, tmp_path)
    database = resources["database"]

    sensor_context = dg.build_sensor_context(instance=instance, resources={"database": database})
    assert isinstance(enrichment_batches_sensor(sensor_context), dg.SkipReason)

    tick = datetime(2026, 11, 30, 13, 0, tzinfo=NY)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
    [request] = list(address_enrichment_schedule.evaluate_tick(context).run_requests or [])
    started = address_enrichment_job.execute_in_process(
        resources=resources,
        instance=instance,
        tags={**request.tags, "dagster/schedule_name": "address_enrichment_schedule"},
    )
    events = [e for e in started.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert events and events[0].event_specific_data.metadata["claimed"].value == 30  # type: ignore[union-attr]

    sensor_context = dg.build_sensor_context(instance=instance, resources={"database": database})
    polled = enrichment_batches_sensor(sensor_context)
    assert isinstance(polled, dg.RunRequest)
    result = enrichment_results_job.execute_in_process(
        resources=resources, instance=instance, tags=polled.tags
    )
    assert result.success
    with unit_of_work(db_url) as session:
        statuses = set(session.scalars(sa.select(Recipient.status).where(Recipient.id.in_(ids))))
    assert statuses == {S.PENDING, S.SKIPPED}
    sensor_context = dg.build_sensor_context(instance=instance, resources={"database": database})
    assert isinstance(enrichment_batches_sensor(sensor_context), dg.SkipReason)


def test_an_on_demand_run_must_say_who_asked_and_why(
    db_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    refused = address_enrichment_job.execute_in_process(
        resources=_resources(db_url, tmp_path), instance=instance, raise_on_error=False
    )
    assert not refused.success
    asked = address_enrichment_job.execute_in_process(
        resources=_resources(db_url, tmp_path), instance=instance, tags=ASKED
    )
    assert asked.success
