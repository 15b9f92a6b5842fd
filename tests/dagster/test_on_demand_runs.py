"""On-demand runs (seed 004): proofing and mailing asked for one campaign claim its waiting
recipients themselves; any run a person launches must say who asked and why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mail_pipeline.definitions import sandbox_resources
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.pipeline import mailing_job
from mail_pipeline.jobs.queues import mail_status_job
from mail_pipeline.settings import Environment, Settings
from tests.integration.test_pipeline_services import Shop

S = RecipientStatus
ASKED = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "the brand asked for today"}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> tuple[Shop, dict[str, Any]]:
    settings = Settings(Environment.TEST, db_url, tmp_path / "data")
    resources = sandbox_resources(settings)
    resources = {
        key: r.model_copy(update={"latency_seconds": 0.0})
        if "latency_seconds" in type(r).model_fields
        else r
        for key, r in resources.items()
    }
    return Shop(db_url, tmp_path / "data"), resources


def _mail(campaign_id: int | None, resources: dict[str, Any], instance: Any, **tags_: str) -> Any:
    config: dict[str, Any] = {"campaign_id": campaign_id} if campaign_id is not None else {}
    return mailing_job.execute_in_process(
        run_config={"ops": {"mail_recipients": {"config": config}}},
        resources=resources,
        instance=instance,
        tags=tags_,
        raise_on_error=False,
    )


def test_mailing_one_campaign_claims_only_its_recipients(
    world: tuple[Shop, dict[str, Any]], instance: dg.DagsterInstance
) -> None:
    shop, resources = world
    org = shop.organization()
    wanted, other = shop.campaign(org), shop.campaign(org)
    ids = shop.recipients(wanted, 3, S.PROOFED)
    others = shop.recipients(other, 2, S.PROOFED)

    result = _mail(wanted, resources, instance, **ASKED)

    assert result.success
    assert set(shop.status(ids).values()) == {S.SENT}
    assert set(shop.status(others).values()) == {S.PROOFED}
    (output,) = [e for e in result.all_events if e.is_successful_output]
    assert output.step_output_data.metadata["sent"].value == 3
    # asked again, nothing of it waits: a quiet success
    again = _mail(wanted, resources, instance, **ASKED)
    assert again.success
    (output,) = [e for e in again.all_events if e.is_successful_output]
    assert output.step_output_data.metadata["recipients"].value == 0


@pytest.mark.parametrize("given", [{}, {tags.REQUESTED_BY: "ana@ops"}, {tags.REASON: "because"}])
def test_a_run_launched_by_a_person_must_say_who_and_why(
    world: tuple[Shop, dict[str, Any]], instance: dg.DagsterInstance, given: dict[str, str]
) -> None:
    shop, resources = world
    campaign = shop.campaign(shop.organization())
    ids = shop.recipients(campaign, 1, S.PROOFED)

    refused = _mail(campaign, resources, instance, **given)
    drained = mail_status_job.execute_in_process(
        resources=resources, instance=instance, tags=given, raise_on_error=False
    )

    for result in (refused, drained):
        assert not result.success
        error = result.get_step_failure_events()[0].step_failure_data.error
        assert error is not None and "must say who asked for it and why" in error.message
    assert shop.status(ids) == {ids[0]: S.PROOFED}, "nothing claimed by a refused run"


def test_a_run_for_neither_a_batch_nor_a_campaign_is_refused(
    world: tuple[Shop, dict[str, Any]], instance: dg.DagsterInstance
) -> None:
    _, resources = world
    result = _mail(None, resources, instance, **ASKED)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and "give batch_id (a claimed batch) or campaign_id" in error.message


def test_a_named_asset_job_asks_who_and_why_but_the_asset_graph_does_not(
    db_url: str, instance: dg.DagsterInstance
) -> None:
    from mail_pipeline.assets.attribution import attribution_job, attributions
    from mail_pipeline.resources.database import Database

    resources = {"database": Database(url=db_url, environment="test")}
    job = dg.Definitions(
        assets=[attributions], jobs=[attribution_job], resources=resources
    ).resolve_job_def(attribution_job.name)

    refused = job.execute_in_process(instance=instance, raise_on_error=False)
    asked = job.execute_in_process(instance=instance, tags=ASKED)
    from_the_graph = dg.materialize([attributions], resources=resources, instance=instance)

    assert not refused.success
    assert asked.success and from_the_graph.success
