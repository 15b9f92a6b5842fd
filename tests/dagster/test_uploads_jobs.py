"""The uploads sensor and jobs: each new or replaced file becomes one ingest run, a file in
no recognised place is reported and never launched, and only a person with a reason
approves a batch."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, Organization, Recipient, UploadBatch
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.uploads import upload_decision_job, upload_ingest_job, uploads_sensor
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.uploads import LocalUploads

LIST = (
    b"email,first name,last name,address,city,state,zip\n"
    b"ann@example.com,Ann,Lee,12 Main Street,New York,NY,10017\n"
)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _campaign(db_url: str) -> int:
    with unit_of_work(db_url) as session:
        org = Organization(name="Bramble", slug="bramble", country="US")
        session.add(org)
        session.flush()
        campaign = Campaign(
            organization_id=org.id,
            name="Summer list",
            campaign_mode=CampaignMode.ONE_OFF,
            status=CampaignStatus.PENDING,
        )
        session.add(campaign)
        session.flush()
        return campaign.id


def _write(root: Path, name: str, data: bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - 60  # settled: not being written any more
    os.utime(path, (old, old))


def _tick(root: Path, cursor: str | None, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"uploads": LocalUploads(folder=str(root))}
    )
    result = uploads_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_each_version_of_each_file_is_one_run(
    tmp_path: Path, instance: dg.DagsterInstance, db_url: str
) -> None:
    campaign = _campaign(db_url)
    _write(tmp_path, f"bramble/{campaign}/summer.csv", LIST)
    _write(tmp_path, "stray.csv", LIST)

    first = _tick(tmp_path, None, instance)
    second = _tick(tmp_path, first.cursor, instance)
    _write(tmp_path, f"bramble/{campaign}/summer.csv", LIST + b"\n")
    third = _tick(tmp_path, second.cursor, instance)

    assert [
        r.run_config["ops"]["ingest_upload_file"]["config"]["name"]
        for r in first.run_requests or []
    ] == [f"bramble/{campaign}/summer.csv"]
    assert not second.run_requests
    assert str(second.skip_reason) == str(dg.SkipReason("no new upload (2 files seen)"))
    empty = _tick(tmp_path / "elsewhere", None, instance)
    assert str(empty.skip_reason) == str(dg.SkipReason("no new upload (0 files seen)"))
    _write(tmp_path / "elsewhere", "stray.csv", LIST)
    reported = _tick(tmp_path / "elsewhere", None, instance)
    assert not reported.run_requests
    assert "1 in no recognised place: 'stray.csv' is not at" in str(reported.skip_reason)
    assert len(third.run_requests or []) == 1
    assert (third.run_requests or [])[0].run_key != (first.run_requests or [])[0].run_key

    request = (first.run_requests or [])[0]
    result = upload_ingest_job.execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources={
            "database": Database(url=db_url, environment="test"),
            "uploads": LocalUploads(folder=str(tmp_path)),
        },
    )
    assert result.success
    (output,) = [e for e in result.all_events if e.is_successful_output]
    metadata = output.step_output_data.metadata
    assert metadata["status"].value == "awaiting_approval"
    assert metadata["rows_accepted"].value == 1


def test_only_a_person_with_a_reason_approves_a_batch(
    tmp_path: Path, instance: dg.DagsterInstance, db_url: str
) -> None:
    campaign = _campaign(db_url)
    _write(tmp_path, f"bramble/{campaign}/summer.csv", LIST)
    resources = {
        "database": Database(url=db_url, environment="test"),
        "uploads": LocalUploads(folder=str(tmp_path)),
    }
    upload_ingest_job.execute_in_process(
        run_config={
            "ops": {"ingest_upload_file": {"config": {"name": f"bramble/{campaign}/summer.csv"}}}
        },
        instance=instance,
        resources=resources,
    )
    with unit_of_work(db_url) as session:
        batch_id = session.scalar(sa.select(UploadBatch.id))
    config = {"ops": {"decide_upload_batch": {"config": {"batch_id": batch_id}}}}

    anonymous = upload_decision_job.execute_in_process(
        run_config=config, instance=instance, resources=resources, raise_on_error=False
    )
    approved = upload_decision_job.execute_in_process(
        run_config=config,
        instance=instance,
        resources=resources,
        tags={tags.REQUESTED_BY: "ana@ops", tags.REASON: "checked with the brand"},
    )

    assert not anonymous.success
    error = anonymous.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and "mail_pipeline/requested_by" in error.message
    assert approved.success
    with unit_of_work(db_url) as session:
        batch = session.get_one(UploadBatch, batch_id)
        assert (batch.status, batch.decided_by) == ("committed", "ana@ops")
        assert session.scalar(sa.select(sa.func.count()).select_from(Recipient)) == 1
