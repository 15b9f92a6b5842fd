"""The sensors and the schedule, evaluated the way the daemon does, against a test instance and
the app database (SQLite, or PostgreSQL when MAIL_PIPELINE_TEST_DATABASE_URL is set).

Runs that the instance should consider in flight are created STARTED with the tags a sensor
would give them; requested runs are executed in-process with the sandbox resources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import insert, select

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.leases import BatchLeases
from mail_pipeline.db.mailpieces import MailpieceLedger, printer_key
from mail_pipeline.db.models import (
    Campaign,
    Mailpiece,
    ManualSyncTrigger,
    Organization,
    OrganizationIntegration,
    Recipient,
)
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.definitions import build_definitions, sandbox_resources
from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    IntegrationKind,
    OrganizationStatus,
    Postage,
)
from mail_pipeline.domain.manual_sync import MAX_ATTEMPTS
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, profile_resource
from mail_pipeline.integrations.printers.base import PostcardRequest
from mail_pipeline.integrations.printers.sandbox import sandbox_transports
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.pipeline import BatchConfig, proofing_job
from mail_pipeline.limits import PROOFING_RUNS_IN_FLIGHT
from mail_pipeline.resources.cdp import CdpResource
from mail_pipeline.resources.printing import SandboxPrinters
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.sensors.pipeline import staging_sensor
from mail_pipeline.services.manual_sync import request_sync, start_trigger
from mail_pipeline.services.staging import PROOFING
from mail_pipeline.settings import Environment, Settings
from tests.dagster.flow import without_idling

S = RecipientStatus
C = CampaignStatus
LONG_AGO = datetime.now(UTC) - timedelta(minutes=10)
IN_FLIGHT_RUN_CONFIG: dict[str, tuple[str, dict[str, Any]]] = {
    "proofing_job": ("proof_recipients", {"batch_id": "pending-elsewhere"}),
    "mailing_job": ("mail_recipients", {"batch_id": "sendingstaged-elsewhere"}),
    "mail_status_job": ("apply_mail_statuses", {}),
    "sync_organization_job": ("sync_recipients", {"organization_id": 0}),
}
DESIGN = {"template": "classic", "brand_name": "Juniper", "headline": "Hello {first_name}"}


def _without_latency(resource: Any) -> Any:
    if "latency_seconds" in type(resource).model_fields:
        resource = resource.model_copy(update={"latency_seconds": 0.0})
    if "failure_rate" in type(resource).model_fields:
        resource = resource.model_copy(update={"failure_rate": 0.0})
    return resource


@dataclass
class Env:
    db_url: str
    settings: Settings
    instance: dg.DagsterInstance
    definitions: dg.Definitions = field(init=False)
    resources: dict[str, Any] = field(init=False)
    _n: Iterator[int] = field(default_factory=lambda: iter(range(1, 10_000)))

    def __post_init__(self) -> None:
        self.definitions = build_definitions(self.settings)
        self.resources = {
            key: _without_latency(r) for key, r in sandbox_resources(self.settings).items()
        }
        self.resources["printers"] = SandboxPrinters(sandbox_path=str(self.settings.sandbox_path))

    @property
    def sessions(self):  # type: ignore[no-untyped-def]
        return self.resources["database"].session

    # -- ticks --------------------------------------------------------------------------
    def tick(self, name_or_sensor: str | dg.SensorDefinition, cursor: str | None = None) -> Any:
        sensor = (
            self.definitions.resolve_sensor_def(name_or_sensor)
            if isinstance(name_or_sensor, str)
            else name_or_sensor
        )
        context = dg.build_sensor_context(
            instance=self.instance, resources=self.resources, cursor=cursor
        )
        return sensor.evaluate_tick(context)

    def tick_schedule(self, when: datetime) -> Any:
        schedule = self.definitions.resolve_schedule_def("recipient_sync_schedule")
        context = dg.build_schedule_context(
            instance=self.instance, resources=self.resources, scheduled_execution_time=when
        )
        return schedule.evaluate_tick(context)

    def job(self, name: str) -> dg.JobDefinition:
        return self.definitions.resolve_job_def(name)

    def execute(self, request: dg.RunRequest, job_name: str) -> dg.ExecuteInProcessResult:
        return self.job(request.job_name or job_name).execute_in_process(
            run_config=without_idling(request.run_config),
            tags=request.tags,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )

    def running(
        self,
        job_name: str,
        run_tags: dict[str, str],
        status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
    ) -> dg.DagsterRun:
        """A run the instance holds as in flight (STARTED by default; a QUEUED run needs the
        origin of a code location, which an in-process test has not got - NOT_STARTED
        stands for a run waiting to start, and the sensors count both)."""
        op, config = IN_FLIGHT_RUN_CONFIG[job_name]
        return self.instance.create_run_for_job(
            job_def=self.job(job_name),
            run_config={"ops": {op: {"config": config}}},
            status=status,
            tags=run_tags,
        )

    # -- data ---------------------------------------------------------------------------
    def organization(self, status: OrganizationStatus = OrganizationStatus.ACTIVE) -> int:
        n = next(self._n)
        with unit_of_work(self.db_url) as session:
            org = Organization(name=f"Brand {n}", slug=f"brand-{n}", country="US", status=status)
            session.add(org)
            session.flush()
            session.add(
                OrganizationIntegration(
                    organization_id=org.id,
                    kind=IntegrationKind.KLAVIYO,
                    secret_ref=f"KLAVIYO_API_KEY_{n}",
                )
            )
            return org.id

    def campaign(
        self,
        org: int,
        status: CampaignStatus = C.ACTIVE,
        mode: CampaignMode = CampaignMode.AUTOMATED,
        segment: str | None = None,
        name: str | None = None,
    ) -> int:
        with unit_of_work(self.db_url) as session:
            campaign = Campaign(
                organization_id=org,
                name=name or f"Campaign {next(self._n)}",
                campaign_mode=mode,
                status=status,
                provider_segment_id=segment,
                design=DESIGN,
            )
            session.add(campaign)
            session.flush()
            return campaign.id

    def recipients(
        self, campaign_id: int, n: int, status: RecipientStatus = S.PENDING
    ) -> list[int]:
        with unit_of_work(self.db_url) as session:
            org = session.get_one(Campaign, campaign_id).organization_id
            rows = []
            for _ in range(n):
                k = next(self._n)
                rows.append(
                    {
                        "organization_id": org,
                        "campaign_id": campaign_id,
                        "status": status,
                        "first_name": "Ann",
                        "last_name": "Lee",
                        "email": f"p{k}@example.com",
                        "address1": f"{k} Main Street",
                        "city": "New York",
                        "region": "NY",
                        "postal_code": "10017",
                        "country": "US",
                        "proof_front_url": "https://imagedelivery.example/h/f/print",
                        "proof_back_url": "https://imagedelivery.example/h/b/print",
                    }
                )
            return sorted(session.scalars(insert(Recipient).returning(Recipient.id), rows))

    def claim(
        self,
        from_status: RecipientStatus,
        to_status: RecipientStatus,
        campaign_id: int,
        now: datetime | None = None,
    ) -> str:
        with unit_of_work(self.db_url) as session:
            claim = RecipientGateway(session).claim_batch(
                from_status, to_status, 100, campaign_id=campaign_id, now=now
            )
        assert claim.ids
        return claim.batch_id

    def rows(self, ids: list[int]) -> dict[int, Recipient]:
        with unit_of_work(self.db_url) as session:
            return {
                r.id: r for r in session.scalars(select(Recipient).where(Recipient.id.in_(ids)))
            }

    def status(self, ids: list[int]) -> dict[int, RecipientStatus]:
        return {rid: r.status for rid, r in self.rows(ids).items()}

    def segment(self, segment_id: str, profile_ids: list[str]) -> None:
        KlaviyoSandboxData(shared_store(str(self.settings.sandbox_path))).put_segment_profiles(
            segment_id,
            [
                profile_resource(
                    pid,
                    f"{pid.lower()}@example.com",
                    "Ann",
                    "Lee",
                    {
                        "address1": f"1 {pid} Street",
                        "city": "Austin",
                        "region": "TX",
                        "zip": "78701",
                        "country": "US",
                    },
                )
                for pid in profile_ids
            ],
        )

    def campaign_recipients(self, campaign_id: int) -> dict[str, RecipientStatus]:
        with unit_of_work(self.db_url) as session:
            rows = session.execute(
                select(Recipient.external_profile_id, Recipient.status).where(
                    Recipient.campaign_id == campaign_id
                )
            )
            return {pid: status for pid, status in rows}


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    settings = Settings(Environment.TEST, db_url, tmp_path / "data")
    with dg.instance_for_test() as instance:
        yield Env(db_url, settings, instance)


def _config(request: dg.RunRequest, op: str) -> dict[str, Any]:
    return request.run_config["ops"][op]["config"]


def _failure_description(result: dg.ExecuteInProcessResult, op: str) -> str:
    failure = result.failure_data_for_node(op)
    assert failure is not None
    if failure.user_failure_data is not None:
        return failure.user_failure_data.description or ""
    return failure.error.message if failure.error else ""


# -- proofing and mailing staging -----------------------------------------------------------


def test_the_proofing_sensor_claims_one_batch_per_organization(env: Env) -> None:
    org_a, org_b = env.organization(), env.organization()
    ids_a = env.recipients(env.campaign(org_a), 3)
    ids_b = env.recipients(env.campaign(org_b, C.PENDING), 2)
    paused = env.recipients(env.campaign(org_b, C.PAUSED), 2)

    data = env.tick("proofing_sensor")

    assert len(data.run_requests) == 2
    job = env.job("proofing_job")
    rows = env.rows(ids_a + ids_b)
    for request, org, ids in zip(data.run_requests, (org_a, org_b), (ids_a, ids_b), strict=True):
        dg.validate_run_config(job, request.run_config)
        batch = _config(request, "proof_recipients")["batch_id"]
        assert request.run_key == batch
        assert request.tags[tags.BATCH] == batch
        assert request.tags[tags.ORGANIZATION] == str(org)
        assert request.tags[tags.STAGE] == "proofing"
        assert {(rows[i].status, rows[i].batch_id) for i in ids} == {(S.PROOFING_STAGED, batch)}
    assert json.loads(data.cursor) == {"last_organization": org_b}
    assert env.status(paused) == dict.fromkeys(paused, S.PENDING)


def test_the_proofing_sensor_says_why_it_skips_when_nothing_waits(env: Env) -> None:
    env.recipients(env.campaign(env.organization(), C.PAUSED), 1)

    data = env.tick("proofing_sensor")

    assert data.run_requests == []
    assert data.skip_message == "no Pending recipients in campaigns that proofing takes"


def test_the_proofing_sensor_respects_runs_in_flight(env: Env) -> None:
    orgs = [env.organization() for _ in range(3)]
    ids = {org: env.recipients(env.campaign(org), 1) for org in orgs}
    for _ in range(PROOFING_RUNS_IN_FLIGHT - 1):
        env.running("proofing_job", {tags.STAGE: "proofing"})

    one_free = env.tick("proofing_sensor")

    assert [r.tags[tags.ORGANIZATION] for r in one_free.run_requests] == [str(orgs[0])]
    env.running("proofing_job", {tags.STAGE: "proofing"})
    full = env.tick("proofing_sensor", one_free.cursor)
    assert full.run_requests == []
    limit = PROOFING_RUNS_IN_FLIGHT
    assert full.skip_message == f"{limit} proofing runs in flight (limit {limit})"
    assert env.status(ids[orgs[1]] + ids[orgs[2]]) == {
        ids[orgs[1]][0]: S.PENDING,
        ids[orgs[2]][0]: S.PENDING,
    }

    closed = staging_sensor(
        PROOFING,
        proofing_job,
        "proof_recipients",
        batch_size=10,
        max_runs_in_flight=0,
        interval_seconds=10,
    )
    data = env.tick(closed)
    assert (
        data.run_requests == []
        and data.skip_message == f"{limit} proofing runs in flight (limit 0)"
    )


def test_the_staging_cursor_takes_turns_between_organizations(env: Env) -> None:
    orgs = [env.organization() for _ in range(3)]
    for org in orgs:
        env.recipients(env.campaign(org), 2)
    sensor = staging_sensor(
        PROOFING,
        proofing_job,
        "proof_recipients",
        batch_size=1,
        max_runs_in_flight=2,
        interval_seconds=10,
    )

    served: list[list[int]] = []
    cursor = None
    for _ in range(3):
        data = env.tick(sensor, cursor)
        served.append([int(r.tags[tags.ORGANIZATION]) for r in data.run_requests])
        cursor = data.cursor

    a, b, c = orgs
    assert served == [[a, b], [c, a], [b, c]]
    assert env.tick(sensor, cursor).skip_message is not None


def test_the_mailing_sensor_launches_active_campaigns_only(env: Env) -> None:
    org = env.organization()
    active = env.recipients(env.campaign(org), 2, S.PROOFED)
    paused = env.recipients(env.campaign(org, C.PAUSED), 2, S.PROOFED)

    data = env.tick("mailing_sensor")

    (request,) = data.run_requests
    dg.validate_run_config(env.job("mailing_job"), request.run_config)
    assert request.tags[tags.STAGE] == "mailing"
    assert request.run_key == _config(request, "mail_recipients")["batch_id"]
    assert env.status(active) == dict.fromkeys(active, S.SENDING_STAGED)
    assert env.status(paused) == dict.fromkeys(paused, S.PROOFED)


# -- the status queue -----------------------------------------------------------------------


def test_the_mail_status_sensor_launches_one_drain_when_messages_wait(env: Env) -> None:
    empty = env.tick("mail_status_sensor")
    assert empty.run_requests == [] and empty.skip_message == "the queue is empty"

    queue = env.resources["queues"].status_queue()
    for n in range(3):
        queue.send(json.dumps({"n": n}))
    data = env.tick("mail_status_sensor")

    (request,) = data.run_requests
    dg.validate_run_config(env.job("mail_status_job"), request.run_config)
    assert request.tags[tags.STAGE] == "status"

    env.running("mail_status_job", {tags.STAGE: "status"})
    busy = env.tick("mail_status_sensor")
    assert busy.run_requests == []
    assert "mail_status_job is already draining the queue" in (busy.skip_message or "")


# -- recovery -------------------------------------------------------------------------------


def test_recovery_returns_a_dead_proofing_batch_to_pending(env: Env) -> None:
    campaign = env.campaign(env.organization())
    ids = env.recipients(campaign, 2)
    env.claim(S.PENDING, S.PROOFING_STAGED, campaign, now=LONG_AGO)
    fresh_ids = env.recipients(campaign, 1)
    env.claim(S.PENDING, S.PROOFING_STAGED, campaign)  # claimed just now: its run may start

    data = env.tick("recovery_sensor")

    assert data.run_requests == []
    assert data.cursor == "1"
    assert env.status(ids) == dict.fromkeys(ids, S.PENDING)
    assert env.status(fresh_ids) == dict.fromkeys(fresh_ids, S.PROOFING_STAGED)
    assert env.tick("recovery_sensor", data.cursor).skip_message == "no expired claims"


def test_recovery_restages_a_dead_mailing_batch_and_requests_a_resume_run(env: Env) -> None:
    org = env.organization()
    campaign = env.campaign(org)
    ids = env.recipients(campaign, 2, S.PROOFED)
    batch = env.claim(S.PROOFED, S.SENDING_STAGED, campaign, now=LONG_AGO)
    dead = env.running("mailing_job", tags.batch_tags("mailing", org, batch))
    with unit_of_work(env.db_url) as session:
        RecipientGateway(session).start_batch(
            batch, S.SENDING_STAGED, S.SENDING, dead.run_id, now=LONG_AGO
        )

    data = env.tick("recovery_sensor", "4")

    (request,) = data.run_requests
    assert request.job_name == "mailing_job"
    assert request.run_key == f"{batch}-resume-5"
    dg.validate_run_config(env.job("mailing_job"), request.run_config)
    assert _config(request, "mail_recipients")["batch_id"] == batch
    assert request.tags[tags.BATCH] == batch
    assert request.tags[tags.ORGANIZATION] == str(org)
    assert request.tags[tags.STAGE] == "mailing"
    assert request.tags[tags.REASON].startswith("recovery")
    assert {(r.status, r.batch_id, r.claimed_by_run) for r in env.rows(ids).values()} == {
        (S.SENDING_STAGED, batch, None)
    }
    failed = env.instance.get_run_by_id(dead.run_id)
    assert failed is not None and failed.status is dg.DagsterRunStatus.FAILURE, (
        "Dagster still called the run STARTED; recovery marked it failed"
    )


def test_recovery_leaves_a_batch_whose_run_waits_in_the_queue(env: Env) -> None:
    org = env.organization()
    campaign = env.campaign(org)
    ids = env.recipients(campaign, 2, S.PROOFED)
    batch = env.claim(S.PROOFED, S.SENDING_STAGED, campaign, now=LONG_AGO)
    env.running(
        "mailing_job",
        tags.batch_tags("mailing", org, batch),
        status=dg.DagsterRunStatus.NOT_STARTED,
    )

    data = env.tick("recovery_sensor")

    assert data.run_requests == []
    assert data.skip_message == "no expired claims (1 batches wait for a queued run)"
    assert env.status(ids) == dict.fromkeys(ids, S.SENDING_STAGED)
    with unit_of_work(env.db_url) as session:
        lease = BatchLeases(session).get(batch)
    assert lease is not None and lease.expires_at > datetime.now(UTC), "kept open for the run"


def test_recovery_returns_a_batch_whose_started_run_never_took_it(env: Env) -> None:
    """The run was launched, then its process group was killed before the run took the
    batch: Dagster shows it STARTED, but the batch's lease expired unheld."""
    org = env.organization()
    campaign = env.campaign(org)
    ids = env.recipients(campaign, 2, S.PROOFED)
    batch = env.claim(S.PROOFED, S.SENDING_STAGED, campaign, now=LONG_AGO)
    stuck = env.running("mailing_job", tags.batch_tags("mailing", org, batch))

    data = env.tick("recovery_sensor")

    assert data.run_requests == [], "no printer was asked: back to Proofed, staged afresh later"
    assert env.status(ids) == dict.fromkeys(ids, S.PROOFED)
    failed = env.instance.get_run_by_id(stuck.run_id)
    assert failed is not None and failed.status is dg.DagsterRunStatus.FAILURE


def test_a_run_whose_batch_was_returned_writes_nothing(env: Env) -> None:
    """The run comes back after recovery gave its batch to another run: it finds nothing to
    take, and a late write with its token changes nothing."""
    org = env.organization()
    campaign = env.campaign(org)
    ids = env.recipients(campaign, 2)
    batch = env.claim(S.PENDING, S.PROOFING_STAGED, campaign, now=LONG_AGO)
    with unit_of_work(env.db_url) as session:
        RecipientGateway(session).start_batch(
            batch, S.PROOFING_STAGED, S.PROOFING, "late-run", now=LONG_AGO
        )
    env.tick("recovery_sensor")
    assert env.status(ids) == dict.fromkeys(ids, S.PENDING)

    result = env.execute(
        dg.RunRequest(
            run_config=dg.RunConfig(ops={"proof_recipients": BatchConfig(batch_id=batch)})
        ),
        "proofing_job",
    )

    assert result.success
    assert result.output_for_node("proof_recipients") is None
    assert env.status(ids) == dict.fromkeys(ids, S.PENDING), "the batch is not the new run's"


def test_a_crash_after_the_printer_accepted_is_resumed_without_a_second_postcard(
    env: Env,
) -> None:
    """The run died between "Lob accepted the postcard" and writing that down: recovery
    re-stages the batch, and the resume run finds the piece by its idempotency key."""
    org = env.organization()
    campaign = env.campaign(org)
    (rid,) = env.recipients(campaign, 1, S.PROOFED)
    batch = env.claim(S.PROOFED, S.SENDING_STAGED, campaign, now=LONG_AGO)
    with unit_of_work(env.db_url) as session:
        RecipientGateway(session).start_batch(
            batch, S.SENDING_STAGED, S.SENDING, "dead-run", now=LONG_AGO
        )
        MailpieceLedger(session).request(
            recipient_id=rid,
            organization_id=org,
            campaign_id=campaign,
            printer="lob",
            postage=Postage.FIRST_CLASS,
        )
    printers = env.resources["printers"]
    piece = printers.printers()["lob"].create_postcard(
        PostcardRequest(
            idempotency_key=printer_key(rid),
            recipient_id=rid,
            campaign_id=campaign,
            organization_id=org,
            to=Address.build(
                name="Ann Lee",
                line1="1 Main Street",
                city="New York",
                region="NY",
                postal_code="10017",
                country="US",
            ),
            front_url="https://imagedelivery.example/h/f/print",
            back_url="https://imagedelivery.example/h/b/print",
        )
    )
    lob = sandbox_transports(shared_store(str(env.settings.sandbox_path)))["lob"]
    assert lob.created_count() == 1

    (request,) = env.tick("recovery_sensor").run_requests
    result = env.execute(request, "mailing_job")

    assert result.success
    assert env.status([rid]) == {rid: S.SENT}
    assert lob.created_count() == 1, "the printer was asked once, ever"
    with unit_of_work(env.db_url) as session:
        mailpiece = session.scalars(select(Mailpiece).where(Mailpiece.recipient_id == rid)).one()
    assert mailpiece.provider_piece_id == piece.provider_piece_id


# -- the sync schedule ----------------------------------------------------------------------


def test_the_sync_schedule_requests_one_run_per_organization_with_candidates(env: Env) -> None:
    automated = env.organization()
    env.campaign(automated, C.PAUSED, segment="SEG-1")
    env.campaign(automated, C.ACTIVE, segment="SEG-2")
    scheduled = env.organization()
    env.campaign(scheduled, C.PENDING, CampaignMode.ONE_OFF, segment="SEG-3")
    mailed = env.organization()
    env.campaign(mailed, C.ACTIVE, CampaignMode.ONE_OFF, segment="SEG-4")
    churned = env.organization(OrganizationStatus.CHURNED)
    env.campaign(churned, C.ACTIVE, segment="SEG-5")
    when = datetime(2026, 11, 23, 17, 15, tzinfo=UTC)

    data = env.tick_schedule(when)

    job = env.job("sync_organization_job")
    by_org = {r.tags[tags.SYNC_ORG]: r for r in data.run_requests}
    assert set(by_org) == {str(automated), str(scheduled)}
    for org, request in by_org.items():
        dg.validate_run_config(job, request.run_config)
        assert _config(request, "sync_recipients")["organization_id"] == int(org)
        assert request.tags[tags.ORGANIZATION] == org
        assert request.tags[tags.REQUESTED_BY] == "schedule"
        assert request.tags[tags.STAGE] == "sync"
        assert request.run_key == f"sync-{org}-{when.isoformat()}"


def test_the_sync_schedule_skips_an_organization_still_syncing(env: Env) -> None:
    busy, free = env.organization(), env.organization()
    env.campaign(busy, segment="SEG-1")
    env.campaign(free, segment="SEG-2")
    env.running("sync_organization_job", {tags.SYNC_ORG: str(busy)})
    when = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)

    data = env.tick_schedule(when)

    assert [r.tags[tags.SYNC_ORG] for r in data.run_requests] == [str(free)]
    env.running("sync_organization_job", {tags.SYNC_ORG: str(free)})
    assert env.tick_schedule(when).skip_message == "no organization to sync (2 still syncing)"


def test_the_sync_schedule_with_no_candidates_says_so(env: Env) -> None:
    env.campaign(env.organization(), C.COMPLETED, segment="SEG")

    data = env.tick_schedule(datetime(2026, 11, 23, 17, 45, tzinfo=UTC))

    assert data.run_requests == [] and data.skip_message == "no campaign is a sync candidate"


def test_a_scheduled_sync_run_creates_the_recipients(env: Env) -> None:
    org = env.organization()
    campaign = env.campaign(org, segment="SEG")
    env.segment("SEG", ["P1", "P2"])

    (request,) = env.tick_schedule(datetime(2026, 11, 23, 18, 0, tzinfo=UTC)).run_requests
    result = env.execute(request, "sync_organization_job")

    assert result.success
    assert env.campaign_recipients(campaign) == {"P1": S.PENDING, "P2": S.PENDING}


# -- manual syncs ---------------------------------------------------------------------------


def test_a_manual_sync_request_becomes_one_run_and_is_completed_by_it(env: Env) -> None:
    org = env.organization()
    campaign = env.campaign(org, segment="SEG", name="Win-back")
    env.campaign(org, segment="SEG-OTHER")  # not asked for: not synced
    env.segment("SEG", ["P1", "P2", "P3"])
    env.segment("SEG-OTHER", ["Q1"])
    trigger = request_sync(env.sessions, campaign, "ana@ops", "segment fixed")

    data = env.tick("manual_sync_sensor")

    (request,) = data.run_requests
    dg.validate_run_config(env.job("sync_organization_job"), request.run_config)
    assert _config(request, "sync_recipients") == {
        "organization_id": org,
        "campaign_ids": [campaign],
        "manual_trigger_id": trigger,
    }
    assert request.run_key == f"manual-sync-{trigger}"
    assert request.tags[tags.REQUESTED_BY] == "ana@ops"
    assert request.tags[tags.REASON] == "segment fixed"
    assert request.tags[tags.SYNC_ORG] == str(org)
    # Until its run starts the request is asked for again, under the same run key, which
    # Dagster launches once.
    again = env.tick("manual_sync_sensor", data.cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key]

    result = env.execute(request, "sync_organization_job")

    assert result.success
    with unit_of_work(env.db_url) as session:
        row = session.get_one(ManualSyncTrigger, trigger)
        assert (row.status, row.synced_count, row.error) == ("completed", 3, None)
        assert row.run_id == result.run_id
        assert row.launched_at is not None and row.completed_at is not None
        total = len(session.scalars(select(Recipient.id)).all())
    assert total == 3, "only the requested campaign was synced"
    assert env.tick("manual_sync_sensor", None).skip_message == "no pending manual sync request"

    later = request_sync(env.sessions, campaign, "bo@ops")
    (next_request,) = env.tick("manual_sync_sensor", data.cursor).run_requests
    assert _config(next_request, "sync_recipients")["manual_trigger_id"] == later
    assert tags.REASON not in next_request.tags


def test_a_manual_sync_of_a_misconfigured_campaign_fails_the_run_and_the_request(
    env: Env,
) -> None:
    org = env.organization()
    campaign = env.campaign(org, name="Win-back")  # automated without a segment
    trigger = request_sync(env.sessions, campaign, "ana@ops")

    (request,) = env.tick("manual_sync_sensor").run_requests
    result = env.execute(request, "sync_organization_job")

    assert not result.success
    description = _failure_description(result, "sync_recipients")
    assert f"Win-back ({campaign})" in description
    assert "has no provider_segment_id" in description
    with unit_of_work(env.db_url) as session:
        row = session.get_one(ManualSyncTrigger, trigger)
        assert row.status == "failed" and row.synced_count == 0
        assert "has no provider_segment_id" in (row.error or "")


def _request_row(env: Env, trigger: int) -> ManualSyncTrigger:
    with unit_of_work(env.db_url) as session:
        row = session.get_one(ManualSyncTrigger, trigger)
        session.expunge(row)
        return row


def test_a_request_whose_run_lost_its_worker_is_launched_again_then_failed(env: Env) -> None:
    """The run marked the request running, then its worker died (no 'completed' or 'failed'
    could be written); run monitoring failed the run. The request must not stay running: it
    goes back to pending and the next tick launches another run under the next attempt's
    run key, naming the lost run; after the last attempt's run is lost too, it is failed
    and the requester is told to ask again."""
    org = env.organization()
    lost = request_sync(env.sessions, env.campaign(org, segment="SEG"), "ana@ops")
    alive = request_sync(env.sessions, env.campaign(org, segment="SEG-2"), "bo@ops")
    live_run = env.running("sync_organization_job", {})
    start_trigger(env.sessions, alive, live_run.run_id)

    dead_runs = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        dead_run = env.running("sync_organization_job", {}, dg.DagsterRunStatus.FAILURE)
        dead_runs.append(dead_run.run_id)
        start_trigger(env.sessions, lost, dead_run.run_id)
        tick = env.tick("manual_sync_sensor")
        row = _request_row(env, lost)
        if attempt < MAX_ATTEMPTS:
            assert [r.run_key for r in tick.run_requests] == [f"manual-sync-{lost}-{attempt + 1}"]
            assert row.status == "pending" and row.attempt == attempt + 1
            assert row.error == (
                f"attempt {attempt} of {MAX_ATTEMPTS}: its sync run {dead_run.run_id} ended "
                "(failure) without recording how the sync went (its worker was lost); "
                "launched again"
            )
        else:
            assert tick.skip_message == "no pending manual sync request"

    row = _request_row(env, lost)
    assert row.status == "failed" and row.completed_at is not None
    assert f"its sync run {dead_runs[-1]} ended (failure)" in (row.error or "")
    assert f"the last of {MAX_ATTEMPTS} runs" in (row.error or "")
    assert "mail-pipeline request-sync" in (row.error or "")
    assert _request_row(env, alive).status == "running", "its run is still going"


def test_a_request_whose_run_died_before_starting_it_is_launched_again(env: Env) -> None:
    org = env.organization()
    campaign = env.campaign(org, segment="SEG")
    env.segment("SEG", ["P1"])
    trigger = request_sync(env.sessions, campaign, "ana@ops")
    (request,) = env.tick("manual_sync_sensor").run_requests
    # The daemon launched it under its run key; the run died before its op began.
    run_key_tags = {"dagster/run_key": request.run_key}
    queued = env.running("sync_organization_job", run_key_tags, dg.DagsterRunStatus.NOT_STARTED)

    again = env.tick("manual_sync_sensor")
    assert [r.run_key for r in again.run_requests] == [request.run_key], "still on its way"
    assert _request_row(env, trigger).status == "pending"

    env.instance.report_run_failed(queued)
    relaunched = env.tick("manual_sync_sensor")
    assert [r.run_key for r in relaunched.run_requests] == [f"manual-sync-{trigger}-2"]
    row = _request_row(env, trigger)
    assert row.status == "pending" and row.attempt == 2
    assert "ended (failure) before it started the sync; launched again" in (row.error or "")

    # The second run completes it as any run does.
    result = env.execute(relaunched.run_requests[0], "sync_organization_job")
    assert result.success
    row = _request_row(env, trigger)
    assert row.status == "completed" and row.error is None and row.synced_count == 1


@pytest.mark.parametrize("sync_org_tag", [None, "other"])
def test_the_sync_op_refuses_to_run_without_its_organization_tag(
    env: Env, sync_org_tag: str | None
) -> None:
    org = env.organization()
    campaign = env.campaign(org, segment="SEG")
    env.segment("SEG", ["P1"])
    run_tags = {} if sync_org_tag is None else {tags.SYNC_ORG: str(org + 1000)}

    result = env.job("sync_organization_job").execute_in_process(
        run_config={"ops": {"sync_recipients": {"config": {"organization_id": org}}}},
        tags=run_tags,
        resources=env.resources,
        instance=env.instance,
        raise_on_error=False,
    )

    assert not result.success
    description = _failure_description(result, "sync_recipients")
    assert f"launch this job with the tag {tags.SYNC_ORG}={org}" in description
    assert env.campaign_recipients(campaign) == {}


# -- bugs -----------------------------------------------------------------------------------


class CrashingCdp(CdpResource):
    """A CDP client that fails in a way nobody mapped (a bug in a client, a driver error)."""

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        raise RuntimeError("unexpected failure inside the CDP client")


def test_a_manual_sync_that_crashes_marks_its_request_failed(env: Env) -> None:
    org = env.organization()
    campaign = env.campaign(org, segment="SEG")
    env.segment("SEG", ["P1"])
    trigger = request_sync(env.sessions, campaign, "ana@ops")
    (request,) = env.tick("manual_sync_sensor").run_requests
    env.resources["cdp"] = CrashingCdp()

    result = env.execute(request, "sync_organization_job")

    assert not result.success
    with unit_of_work(env.db_url) as session:
        row = session.get_one(ManualSyncTrigger, trigger)
        assert row.status == "failed"
        assert "unexpected failure inside the CDP client" in (row.error or "")


@pytest.mark.postgres
def test_a_manual_request_committed_late_is_still_launched(env: Env) -> None:
    org = env.organization()
    campaign = env.campaign(org, segment="SEG")
    requested: list[int] = []
    with unit_of_work(env.db_url) as slow:
        late = ManualSyncTrigger(organization_id=org, campaign_id=campaign, requested_by="app")
        slow.add(late)
        slow.flush()  # id taken, not yet committed
        early = request_sync(env.sessions, campaign, "ana@ops")
        first = env.tick("manual_sync_sensor")
        requested += [
            _config(r, "sync_recipients")["manual_trigger_id"] for r in first.run_requests
        ]
    assert late.id < early
    second = env.tick("manual_sync_sensor", first.cursor)
    requested += [_config(r, "sync_recipients")["manual_trigger_id"] for r in second.run_requests]

    # Requests repeat under the same run key until their run starts (Dagster launches each
    # key once); what matters is that the late-committed one is asked for at all.
    assert set(requested) == {late.id, early}
