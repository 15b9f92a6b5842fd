"""The profile enrichment job and its schedule: one step per organization (mapping key =
organization id), an organization whose CDP is down fails alone and the summary then fails
the run naming it, totals in the summary's metadata, and a tick every 10 minutes in New York."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, Organization, OrganizationIntegration, Recipient
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.errors import VendorUnavailable
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, profile_resource
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.profile_enrichment import (
    JOBS,
    SCHEDULES,
    profile_enrichment_job,
    profile_enrichment_schedule,
)
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.sandbox import shared_store

NY = ZoneInfo("America/New_York")
ASKED = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "test"}
DESIGN = {
    "template": "classic",
    "brand_name": "Brew Co",
    "headline": "{first_name|Friend}, you're {loyalty_tier|a member}",
}


class PartlyDownCdp(SandboxCdp):
    """The sandbox, except that some organizations' Klaviyo is down."""

    down_organization_ids: list[int] = []

    def profile_properties(
        self, integration: IntegrationRef, profile_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        if integration.organization_id in self.down_organization_ids:
            raise VendorUnavailable("klaviyo", "service unavailable", status_code=503)
        return super().profile_properties(integration, profile_ids)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _organization(db_url: str, sandbox_path: str, n: int) -> tuple[int, int]:
    """An organization with a Klaviyo integration and one due recipient; its id and the
    recipient's."""
    with unit_of_work(db_url) as session:
        org = Organization(name=f"Brand {n}", slug=f"brand-{n}", country="US")
        session.add(org)
        session.flush()
        session.add(
            OrganizationIntegration(
                organization_id=org.id,
                kind=IntegrationKind.KLAVIYO,
                secret_ref=f"KLAVIYO_API_KEY_{n}",
                enabled=True,
            )
        )
        campaign = Campaign(
            organization_id=org.id,
            name="Autumn",
            campaign_mode=CampaignMode.AUTOMATED,
            status=CampaignStatus.ACTIVE,
            design=DESIGN,
        )
        session.add(campaign)
        session.flush()
        recipient = Recipient(
            organization_id=org.id,
            campaign_id=campaign.id,
            status=RecipientStatus.PENDING,
            external_profile_id=f"P{n}",
            email=f"p{n}@example.com",
        )
        session.add(recipient)
        session.flush()
        org_id, recipient_id = org.id, recipient.id
    KlaviyoSandboxData(shared_store(sandbox_path)).put_profile(
        profile_resource(f"P{n}", None, properties={"loyalty_tier": "gold"})
    )
    return org_id, recipient_id


def _run(db_url: str, cdp: SandboxCdp, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return profile_enrichment_job.execute_in_process(
        resources={"database": Database(url=db_url, environment="test"), "cdp": cdp},
        instance=instance,
        tags=ASKED,
        raise_on_error=False,
    )


def _summary_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    for event in result.all_node_events:
        if event.step_key != "summarize_profile_enrichment":
            continue
        if event.is_step_failure:
            data = event.step_failure_data
            assert data.user_failure_data is not None
            return {k: v.value for k, v in data.user_failure_data.metadata.items()}
        if event.is_successful_output:
            return {k: v.value for k, v in event.step_output_data.metadata.items()}
    raise AssertionError("the summary step left no output or failure")


def test_one_organization_failing_does_not_stop_the_others(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    sandbox = str(tmp_path / "sandbox.sqlite")
    down, down_recipient = _organization(db_url, sandbox, 1)
    up, up_recipient = _organization(db_url, sandbox, 2)
    cdp = PartlyDownCdp(sandbox_path=sandbox, down_organization_ids=[down])

    result = _run(db_url, cdp, instance)

    assert not result.success
    outcomes = result.output_for_node("enrich_organization_profiles")
    assert set(outcomes) == {str(down), str(up)}
    assert outcomes[str(down)].failure is not None
    assert "service unavailable" in outcomes[str(down)].failure
    assert outcomes[str(up)].failure is None
    assert outcomes[str(up)].counts["properties_set"] == 1
    metadata = _summary_metadata(result)
    assert metadata["failed_organizations"] == [down]
    assert metadata["organizations"] == 2
    assert metadata["properties_set"] == 1
    with unit_of_work(db_url) as session:
        assert session.get_one(Recipient, up_recipient).properties == {"loyalty_tier": "gold"}
        assert session.get_one(Recipient, down_recipient).profile_enriched_at is None


def test_a_clean_run_reports_totals_and_repeats_harmlessly(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    sandbox = str(tmp_path / "sandbox.sqlite")
    _organization(db_url, sandbox, 1)
    _organization(db_url, sandbox, 2)
    cdp = SandboxCdp(sandbox_path=sandbox)

    first = _run(db_url, cdp, instance)
    assert first.success
    metadata = _summary_metadata(first)
    assert metadata["organizations"] == 2
    assert (metadata["checked"], metadata["fetched"], metadata["properties_set"]) == (2, 2, 2)
    assert metadata["failed_organizations"] == []

    # everyone was enriched just now: nothing to fan out; the summary reports zero
    again = _run(db_url, cdp, instance)
    assert again.success
    assert _summary_metadata(again)["organizations"] == 0
    assert _summary_metadata(again)["checked"] == 0


def test_an_on_demand_run_must_say_who_and_why(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    result = profile_enrichment_job.execute_in_process(
        resources={
            "database": Database(url=db_url, environment="test"),
            "cdp": SandboxCdp(sandbox_path=str(tmp_path / "s.sqlite")),
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success


def test_schedule_every_ten_minutes_in_new_york(instance: dg.DagsterInstance) -> None:
    assert [profile_enrichment_job] == JOBS
    assert [profile_enrichment_schedule] == SCHEDULES
    assert profile_enrichment_schedule.cron_schedule == "*/10 * * * *"
    assert profile_enrichment_schedule.execution_timezone == "America/New_York"
    assert profile_enrichment_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert profile_enrichment_job.tags[tags.STAGE] == "sync"

    tick = datetime(2026, 11, 30, 9, 40, tzinfo=NY)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
    requests = list(profile_enrichment_schedule.evaluate_tick(context).run_requests or [])

    assert len(requests) == 1
    assert requests[0].run_key == f"profile-enrichment-{tick.isoformat()}"
    assert requests[0].tags[tags.REQUESTED_BY] == "schedule"
