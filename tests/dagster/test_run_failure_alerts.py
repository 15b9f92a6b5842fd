"""The run-failure sensor against a test instance with real failed runs: each failure is
recorded with its organization and stage and announced once through the outbox, many at
once become one digest, and a channel that fails loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import RunFailure
from mail_pipeline.domain.alerts import Notification
from mail_pipeline.integrations.errors import RateLimited
from mail_pipeline.integrations.notifications import Notifier, read_outbox
from mail_pipeline.jobs import tags
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.notifications import NotificationResource, OutboxNotifications
from mail_pipeline.sensors.alerts import run_failure_alerts


@dg.op
def print_postcards() -> None:
    raise RuntimeError("lob refused the batch for ana@example.com: 422 address_undeliverable")


@dg.job
def failing_mailing_job() -> None:
    print_postcards()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _fail(instance: dg.DagsterInstance, organization: int, stage: str = "mailing") -> str:
    result = failing_mailing_job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={tags.STAGE: stage, tags.ORGANIZATION: str(organization)},
    )
    assert not result.success
    return result.run_id


def _tick(
    instance: dg.DagsterInstance,
    db_url: str,
    notifications: NotificationResource,
    cursor: str | None = None,
) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "database": Database(url=db_url, environment="test"),
            "notifications": notifications,
        },
    ) as context:
        result = run_failure_alerts(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _recorded(db_url: str) -> list[RunFailure]:
    with unit_of_work(db_url) as session:
        return list(session.scalars(sa.select(RunFailure).order_by(RunFailure.id)))


def test_a_failed_run_is_recorded_and_announced_once(
    db_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    outbox = OutboxNotifications(folder=str(tmp_path / "outbox"), ui_base_url="http://ui")
    run_id = _fail(instance, organization=7)

    first = _tick(instance, db_url, outbox)
    second = _tick(instance, db_url, outbox, cursor=first.cursor)

    (message,) = read_outbox(tmp_path / "outbox")
    assert message.run_ids == (run_id,)
    assert "mailing" in message.subject and "org 7" in message.body
    assert f"http://ui/runs/{run_id}" in message.body
    assert "ana@example.com" not in message.body and "address_undeliverable" in message.body
    (row,) = _recorded(db_url)
    assert (row.run_id, row.job, row.stage, row.organization_id) == (
        run_id,
        "failing_mailing_job",
        "mailing",
        7,
    )
    assert row.error.startswith("print_postcards:") and row.notified_at is not None
    assert "1 failed runs read, 1 new; 1 messages" in str(first.skip_reason)
    assert "0 new; 0 messages" in str(second.skip_reason)


def test_many_failures_at_once_become_one_digest(
    db_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    outbox = OutboxNotifications(folder=str(tmp_path / "outbox"))
    run_ids = {_fail(instance, organization=n % 2 + 1, stage="sync") for n in range(5)}

    _tick(instance, db_url, outbox)

    (digest,) = read_outbox(tmp_path / "outbox")
    assert digest.digest and set(digest.run_ids) == run_ids
    assert all(r.notified_at is not None for r in _recorded(db_url))


class _Down(Notifier):
    def __init__(self) -> None:
        self.attempts = 0

    def send(self, notification: Notification) -> None:
        self.attempts += 1
        raise RateLimited("slack", "rate_limited", retry_after=30)


class _FailingChannel(NotificationResource):
    def build(self) -> Notifier:
        return _Down()


def test_a_channel_that_fails_leaves_the_failures_to_the_next_tick(
    db_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    run_id = _fail(instance, organization=3)

    with pytest.raises(dg.Failure, match=r"could not send a run-failure alert \(1 runs wait\)"):
        _tick(instance, db_url, _FailingChannel())
    (row,) = _recorded(db_url)
    assert row.run_id == run_id and row.notified_at is None

    outbox = OutboxNotifications(folder=str(tmp_path / "outbox"))
    _tick(instance, db_url, outbox)
    assert [m.run_ids for m in read_outbox(tmp_path / "outbox")] == [(run_id,)]
    assert _recorded(db_url)[0].notified_at is not None


@dg.op
def refuse() -> None:
    raise dg.Failure(description="an on-demand run must say who asked for it and why")


@dg.job
def refusing_job() -> None:
    refuse()


def test_the_error_is_the_root_cause_without_its_module_path(
    db_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    refusing_job.execute_in_process(instance=instance, raise_on_error=False)

    _tick(instance, db_url, OutboxNotifications(folder=str(tmp_path / "outbox")))

    (row,) = _recorded(db_url)
    assert row.error == "refuse: Failure: an on-demand run must say who asked for it and why"
