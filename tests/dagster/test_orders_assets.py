"""The ``orders`` asset, its freshness check, its schedule and the Shopify sensor, against a
test instance and the app database (SQLite, or PostgreSQL when configured), with the real
sandbox order sources."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from mail_pipeline.assets.orders import (
    ORDERS_PATH,
    orders,
    orders_are_fresh,
    orders_job,
    orders_schedule,
    shopify_orders_sensor,
)
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Order, Organization, OrganizationIntegration
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.integrations.orders.sandbox import sandbox_account
from mail_pipeline.integrations.orders.sandbox.data import OrderSandboxData, SandboxOrder
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.orders import SandboxOrderSources
from mail_pipeline.resources.sandbox import shared_store

K = IntegrationKind
SHOP = "juniper-test"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def sandbox(tmp_path: Path) -> str:
    return str(tmp_path / "sandbox.sqlite")


def _organization(db_url: str, kind: IntegrationKind, settings: dict[str, Any]) -> int:
    with unit_of_work(db_url) as session:
        n = session.query(Organization).count() + 1
        org = Organization(name=f"Brand {n}", slug=f"brand-{n}", country="US")
        session.add(org)
        session.flush()
        session.add(
            OrganizationIntegration(
                organization_id=org.id, kind=kind, secret_ref="ORDERS_KEY", settings=settings
            )
        )
        return org.id


def _place(sandbox: str, kind: IntegrationKind, account: str, number: str) -> None:
    OrderSandboxData(shared_store(sandbox)).place(
        kind,
        account,
        SandboxOrder(
            number=number,
            ordered_at=datetime.now(UTC) - timedelta(hours=1),
            total=Decimal("50.00"),
            currency="USD",
            email=f"buyer{number}@example.com",
        ),
    )


def _resources(db_url: str, sandbox: str) -> dict[str, Any]:
    return {
        "database": Database(url=db_url),
        "order_sources": SandboxOrderSources(sandbox_path=sandbox),
    }


def _stored(db_url: str) -> dict[str, int]:
    with unit_of_work(db_url) as session:
        return dict(session.execute(select(Order.external_order_id, Order.organization_id)).all())


def test_one_run_syncs_every_organization_and_the_check_passes(
    db_url: str, sandbox: str, instance: dg.DagsterInstance
) -> None:
    shopify = _organization(db_url, K.SHOPIFY, {"shop": SHOP})
    ometria = _organization(db_url, K.OMETRIA, {})
    _place(sandbox, K.SHOPIFY, sandbox_account(K.SHOPIFY, shopify, {"shop": SHOP}), "1001")
    _place(sandbox, K.OMETRIA, sandbox_account(K.OMETRIA, ometria, {}), "2001")

    result = dg.materialize(
        [orders, orders_are_fresh], resources=_resources(db_url, sandbox), instance=instance
    )

    assert result.success
    assert _stored(db_url) == {"gid://shopify/Order/1001": shopify, "2001": ometria}
    (materialization,) = result.asset_materializations_for_node("orders")
    assert materialization.metadata["organizations"].value == 2
    assert materialization.metadata["orders_new"].value == 2
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.severity is dg.AssetCheckSeverity.WARN


def test_a_failing_organization_fails_the_run_after_the_others_are_stored(
    db_url: str, sandbox: str, instance: dg.DagsterInstance
) -> None:
    good = _organization(db_url, K.OMETRIA, {})
    broken = _organization(db_url, K.SHOPIFY, {"shop": "not a shop name!"})
    _place(sandbox, K.OMETRIA, sandbox_account(K.OMETRIA, good, {}), "2001")

    result = dg.materialize(
        [orders],
        resources=_resources(db_url, sandbox),
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    assert _stored(db_url) == {"2001": good}, "the other organization's orders are stored"
    failure = result.failure_data_for_node("orders")
    assert failure is not None and failure.user_failure_data is not None
    assert f"organization {broken} (shopify)" in (failure.user_failure_data.description or "")
    assert failure.user_failure_data.metadata["failed_organizations"].value == 1


def test_an_operator_resyncs_one_organizations_days(
    db_url: str, sandbox: str, instance: dg.DagsterInstance
) -> None:
    wanted = _organization(db_url, K.OMETRIA, {})
    other = _organization(db_url, K.OMETRIA, {})
    for org, order_id in ((wanted, "3001"), (other, "4001")):
        _place(sandbox, K.OMETRIA, sandbox_account(K.OMETRIA, org, {}), order_id)
    today = datetime.now(UTC).astimezone().date()

    definitions = dg.Definitions(
        assets=[orders], jobs=[orders_job], resources=_resources(db_url, sandbox)
    )
    result = definitions.resolve_job_def("orders_job").execute_in_process(
        run_config=dg.RunConfig(
            ops={
                "orders": {
                    "config": {
                        "organization_ids": [wanted],
                        "since": (today - timedelta(days=2)).isoformat(),
                        "until": (today + timedelta(days=1)).isoformat(),
                    }
                }
            }
        ),
        instance=instance,
        tags={"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "late orders"},
    )

    assert result.success
    assert _stored(db_url) == {"3001": wanted}


def test_the_schedule_requests_the_periodic_sources_once_at_a_time(
    db_url: str, instance: dg.DagsterInstance
) -> None:
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 2, 6, 5, tzinfo=UTC)
    )

    request = orders_schedule.evaluate_tick(context).run_requests[0]

    assert request.run_config["ops"]["orders"]["config"]["sources"] == ["klaviyo", "ometria"]
    assert request.tags[ORDERS_PATH] == "periodic"
    instance.create_run_for_job(
        job_def=dg.Definitions(
            assets=[orders], jobs=[orders_job], resources=_resources(db_url, "unused")
        ).resolve_job_def("orders_job"),
        run_config=request.run_config,
        status=dg.DagsterRunStatus.STARTED,
        tags=request.tags,
    )
    skipped = orders_schedule.evaluate_tick(context)
    assert skipped.run_requests == []
    assert skipped.skip_message == "the previous order sync is still running"


def test_the_shopify_sensor_runs_only_for_shopify_organizations(
    db_url: str, instance: dg.DagsterInstance
) -> None:
    resources = {"database": Database(url=db_url)}
    context = dg.build_sensor_context(instance=instance, resources=resources)
    _organization(db_url, K.OMETRIA, {})

    assert shopify_orders_sensor(context).skip_reason.skip_message == (
        "no organization reads Shopify"
    )
    _organization(db_url, K.SHOPIFY, {"shop": SHOP})
    (request,) = shopify_orders_sensor(
        dg.build_sensor_context(instance=instance, resources=resources)
    ).run_requests
    assert request.run_config["ops"]["orders"]["config"]["sources"] == ["shopify"]
    assert request.tags[ORDERS_PATH] == "shopify"


def test_the_freshness_check_warns_naming_a_stale_organization(
    db_url: str, sandbox: str, instance: dg.DagsterInstance
) -> None:
    stale = _organization(db_url, K.OMETRIA, {})

    result = orders_are_fresh(Database(url=db_url))

    assert not result.passed and result.severity is dg.AssetCheckSeverity.WARN
    assert result.description == f"stale: organization {stale} (ometria)"
