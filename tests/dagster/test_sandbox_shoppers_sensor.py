"""The local-only ``sandbox_shoppers`` sensor: every 30 s, running by default, it lets the
sandbox shoppers buy and says what it did (counts only, never a customer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, Organization, OrganizationIntegration, Recipient
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.orders.sandbox import OrderSandboxData
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.sandbox import SandboxState
from mail_pipeline.sensors.sandbox import sandbox_shoppers


def _shop_with_mailed_recipients(db_url: str, count: int) -> None:
    mailed = datetime.now(UTC) - timedelta(days=30)
    with unit_of_work(db_url) as session:
        org = Organization(name="Juniper", slug="juniper", country="US")
        session.add(org)
        session.flush()
        session.add(
            OrganizationIntegration(
                organization_id=org.id,
                kind=IntegrationKind.SHOPIFY,
                secret_ref="SHOPIFY_ACCESS_TOKEN",
                settings={"shop": "juniper-shop"},
            )
        )
        campaign = Campaign(
            organization_id=org.id,
            name="Win-back",
            campaign_mode=CampaignMode.AUTOMATED,
            status=CampaignStatus.ACTIVE,
        )
        session.add(campaign)
        session.flush()
        session.execute(
            sa.insert(Recipient),
            [
                {
                    "organization_id": org.id,
                    "campaign_id": campaign.id,
                    "status": RecipientStatus.SENT,
                    "email": f"r{n}@example.com",
                    "sent_at": mailed,
                    "status_changed_at": mailed,
                }
                for n in range(count)
            ],
        )


def _tick(db_url: str, sandbox: Path) -> str | None:
    context = dg.build_sensor_context(
        resources={
            "database": Database(url=db_url, environment="test"),
            "sandbox": SandboxState(path=str(sandbox)),
        }
    )
    return sandbox_shoppers.evaluate_tick(context).skip_message


def test_the_sensor_lets_the_shoppers_buy_once(db_url: str, tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox.sqlite"
    assert _tick(db_url, sandbox) == "no organization has a sandbox order source"
    _shop_with_mailed_recipients(db_url, 40)

    first = _tick(db_url, sandbox)
    assert first is not None and first.startswith(
        "looked at 40 mailed or held-out recipients of 1 organizations; "
    )
    placed = OrderSandboxData(SandboxStore(sandbox)).order_numbers(
        IntegrationKind.SHOPIFY, "juniper-shop"
    )
    assert placed and "@" not in first
    assert _tick(db_url, sandbox) == (
        "looked at 0 mailed or held-out recipients of 1 organizations; 0 new orders in their "
        "sandbox sources"
    )


def test_the_sensor_runs_by_default_every_30_seconds() -> None:
    assert sandbox_shoppers.name == "sandbox_shoppers"
    assert sandbox_shoppers.minimum_interval_seconds == 30
    assert sandbox_shoppers.default_status == dg.DefaultSensorStatus.RUNNING
