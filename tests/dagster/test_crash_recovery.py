"""A mailing run killed mid-batch, at the worst moment, loses nobody and prints nothing twice.

A real process mails a batch and dies (``os._exit``) just after the printer accepted a
postcard whose answer never came back - with other postcards in flight on other threads. Then
the real recovery sensor finds the batch whose lease expired, re-stages it, and the
mailing job it requests reconciles with the printer before creating anything.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Mailpiece, Organization, OrganizationIntegration, Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.billing.sandbox import StripeSandboxData
from mail_pipeline.integrations.printers.sandbox import sandbox_transports
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.jobs.pipeline import mailing_job
from mail_pipeline.resources.billing import SandboxBilling
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.printing import SandboxPrinters
from mail_pipeline.resources.queues import LocalQueues
from mail_pipeline.sensors.pipeline import recovery_sensor
from tests.dagster.crash_worker import KILLED

S = RecipientStatus
ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = 24


def _proofed_batch(db_url: str, make_campaign, add_recipients) -> str:  # type: ignore[no-untyped-def]
    org_id, campaign_id = make_campaign(design={"size": "4x6"})
    with unit_of_work(db_url) as session:
        session.get_one(Organization, org_id).stripe_customer_id = "cus_crash"
        session.add(
            OrganizationIntegration(
                organization_id=org_id,
                kind=IntegrationKind.KLAVIYO,
                secret_ref="KLAVIYO_API_KEY_CRASH",
            )
        )
    add_recipients(
        campaign_id,
        RECIPIENTS,
        status=S.PROOFED,
        last_name="Doe",
        address1="12 Oak St",
        city="Austin",
        region="TX",
        postal_code="78701",
        country="US",
        proof_front_url="https://imagedelivery.net/h/front/print",
        proof_back_url="https://imagedelivery.net/h/back/print",
        external_profile_id=None,
    )
    with unit_of_work(db_url) as session:
        claim = RecipientGateway(session).claim_batch(S.PROOFED, S.SENDING_STAGED, RECIPIENTS)
    assert len(claim) == RECIPIENTS
    return claim.batch_id


@pytest.mark.parametrize("kill_after", [1, 9, RECIPIENTS - 2])
def test_killed_mailing_run_is_recovered_without_duplicates(
    db_url: str,
    tmp_path: Path,
    make_campaign,
    add_recipients,
    kill_after: int,  # type: ignore[no-untyped-def]
) -> None:
    batch_id = _proofed_batch(db_url, make_campaign, add_recipients)
    sandbox = str(tmp_path / "sandbox.sqlite")

    crashed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.dagster.crash_worker",
            db_url,
            sandbox,
            batch_id,
            str(kill_after),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == KILLED, crashed.stderr[-2000:]

    store = SandboxStore(sandbox)
    lob = sandbox_transports(store)["lob"]
    printed_before = lob.created_count()
    assert printed_before >= kill_after
    with unit_of_work(db_url) as session:
        stuck = session.scalar(
            select(func.count()).select_from(Recipient).where(Recipient.status == S.SENDING)
        )
        known = session.scalar(
            select(func.count())
            .select_from(Mailpiece)
            .where(Mailpiece.provider_piece_id.is_not(None))
        )
    assert stuck > 0, "the kill left recipients in flight"
    assert known < printed_before, "the printer has pieces the database never heard of"

    resources = {
        "database": Database(url=db_url),
        "printers": SandboxPrinters(sandbox_path=sandbox),
        "billing": SandboxBilling(sandbox_path=sandbox),
        "cdp": SandboxCdp(sandbox_path=sandbox),
        "queues": LocalQueues(path=str(tmp_path / "queues.sqlite")),
    }
    # The dead run's lease expires a minute after its last renewal: judge it later.
    sensor = recovery_sensor(clock=lambda: datetime.now(UTC) + timedelta(minutes=5))
    with dg.instance_for_test() as instance:
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
        (request,) = tick.run_requests
        assert request.tags["mail_pipeline/batch"] == batch_id
        result = mailing_job.execute_in_process(
            run_config=request.run_config, tags=request.tags, resources=resources, instance=instance
        )
    assert result.success
    metadata = next(
        e.step_output_data.metadata
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT"
    )
    assert metadata["reconciled_with_printer"].value >= 1

    with unit_of_work(db_url) as session:
        statuses = set(session.scalars(select(Recipient.status)))
        pieces = session.scalars(select(Mailpiece.provider_piece_id)).all()
    assert statuses == {S.SENT}, "no recipient left behind"
    assert len(pieces) == RECIPIENTS and len(set(pieces)) == RECIPIENTS
    assert lob.created_count() == RECIPIENTS, "no postcard printed twice"
    assert len(lob.accepted_keys()) == RECIPIENTS
    assert len(StripeSandboxData(store).meter_events()) == RECIPIENTS
