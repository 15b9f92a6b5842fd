"""The attributions asset, its checks, job and schedule, run by Dagster against a real
database (SQLite, or PostgreSQL with MAIL_PIPELINE_TEST_DATABASE_URL)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from mail_pipeline.assets import sources
from mail_pipeline.assets.attribution import (
    ASSET_CHECKS,
    ASSETS,
    JOBS,
    SCHEDULES,
    attribution_job,
    attribution_schedule,
)
from mail_pipeline.db.models import Attribution, HoldoutMatch
from mail_pipeline.resources.database import Database
from tests.attribution_world import MAILED, World

DAY = timedelta(days=1)


def _definitions(db_url: str) -> dg.Definitions:
    return dg.Definitions(
        assets=[*sources.ASSETS, *ASSETS],
        asset_checks=ASSET_CHECKS,
        jobs=JOBS,
        schedules=SCHEDULES,
        resources={"database": Database(url=db_url)},
    )


def _run(db_url: str) -> dg.ExecuteInProcessResult:
    job = _definitions(db_url).resolve_job_def(attribution_job.name)
    return job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        tags={"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "check"},
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _seed(db_url: str) -> tuple[World, dict[str, int]]:
    world = World(db_url)
    org, other_org = world.organization(), world.organization()
    campaign, other_campaign = world.campaign(org), world.campaign(other_org)
    world.recipient(campaign, email_key="e", offer_code="CODE1")
    world.recipient(campaign, address_key="1 main|10001|US")
    world.holdout(campaign, created_at=MAILED - DAY, email_key="h")
    world.recipient(other_campaign, email_key="e")
    ids = {
        "org": org,
        "other_org": other_org,
        "campaign": campaign,
        "code": world.order(org, MAILED + DAY, codes=["code1"], total=7000, refunded=1000),
        "email": world.order(org, MAILED + DAY, email_key="e", total=3000),
        "address": world.order(org, MAILED + DAY, address_key="1 main|10001|US", total=0),
        "holdout": world.order(org, MAILED + DAY, email_key="h"),
        "stranger": world.order(org, MAILED + DAY, email_key="nobody"),
        "early": world.order(org, MAILED - 2 * DAY, email_key="e"),
        "foreign": world.order(other_org, MAILED - DAY, email_key="e"),
    }
    return world, ids


def test_materialize_credits_orders_and_reports_by_method(db_url: str) -> None:
    world, ids = _seed(db_url)

    result = dg.materialize(
        [*sources.ASSETS, *ASSETS, *ASSET_CHECKS],
        resources={"database": Database(url=db_url)},
        instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.assets(*ASSETS),
    )

    assert result.success
    (materialization,) = result.asset_materializations_for_node("attributions")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["orders_examined"] == 7
    assert metadata["attributed_by_offer_code"] == 1
    assert metadata["attributed_by_email"] == 1
    assert metadata["attributed_by_address"] == 1
    assert metadata["responder_matches"] == 2
    assert metadata["holdout_matches"] == 1
    assert metadata["attributed_revenue_minor_USD"] == 6000 + 3000 + 0
    assert set(world.credits()) == {ids["code"], ids["email"], ids["address"]}
    assert _checks(result) == {
        "credited_once_in_own_organization": True,
        "attributed_revenue_not_negative": True,
        "attributions_inside_window": True,
    }


def test_the_job_runs_the_checks_and_they_fail_on_bad_rows(db_url: str) -> None:
    world, ids = _seed(db_url)
    assert _run(db_url).success
    credited = world.credits()[ids["email"]]
    with world.sessions() as session:
        # rows no attribution run wrote: negative revenue on an examined order, an order of
        # one organization matched to another's recipient, an attribution outside its window
        session.execute(
            sa.update(Attribution)
            .where(Attribution.order_id == ids["email"])
            .values(revenue_minor=-1)
        )
    world.insert(
        HoldoutMatch,
        order_id=ids["foreign"],
        recipient_id=credited.recipient_id,
        campaign_id=ids["campaign"],
        organization_id=ids["org"],
        match_type="email",
        revenue_minor=10,
    )
    world.insert(
        Attribution,
        order_id=ids["early"],
        recipient_id=credited.recipient_id,
        campaign_id=ids["campaign"],
        organization_id=ids["org"],
        match_type="email",
        revenue_minor=10,
    )

    result = _run(db_url)

    assert _checks(result) == {
        "credited_once_in_own_organization": False,
        "attributed_revenue_not_negative": False,
        # the run examined the early order again and removed its credit (before the mailing)
        "attributions_inside_window": True,
    }
    assert ids["early"] not in world.credits()
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "attributed_revenue_not_negative"
    ]
    assert evaluation.metadata["example_order_ids"].value == [ids["email"]]


def test_schedule_every_five_minutes_in_new_york_skips_while_a_run_is_in_flight(
    db_url: str,
) -> None:
    assert attribution_schedule.cron_schedule == "*/5 * * * *"
    assert attribution_schedule.execution_timezone == "America/New_York"
    assert attribution_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert attribution_schedule.job_name == "attribution_job"
    with dg.instance_for_test() as instance:
        request = attribution_schedule(dg.build_schedule_context(instance=instance))
        assert isinstance(request, dg.RunRequest)
        instance.create_run_for_job(
            _definitions(db_url).resolve_job_def(attribution_job.name),
            status=dg.DagsterRunStatus.STARTED,
        )
        skipped = attribution_schedule(dg.build_schedule_context(instance=instance))
        assert isinstance(skipped, dg.SkipReason)


def test_sources_and_the_asset_form_the_graph(db_url: str) -> None:
    graph = _definitions(db_url).resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "klaviyo_placed_orders",
        "ometria_orders",
        "shopify_orders",
        "recipients",
        "attributions",
    } <= keys
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("attributions")).parent_keys}
    assert parents == {"orders", "recipients"}
    assert graph.get(dg.AssetKey("attributions")).group_name == "orders_and_attribution"
