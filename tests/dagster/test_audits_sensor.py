"""The audit sensor and ``audit_job`` the way the daemon runs them: a tick looks at the audit
queue, the run it requests drains it; on the local queue (SQS semantics) and on SQS (moto).
The app database is SQLite, or PostgreSQL when MAIL_PIPELINE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from moto import mock_aws
from sqlalchemy import select

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Audit, Campaign, Organization, OrganizationIntegration
from mail_pipeline.definitions import build_definitions, sandbox_resources
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, profile_resource
from mail_pipeline.integrations.queues.base import DeleteFailure, MessageQueue, QueueMessage
from mail_pipeline.integrations.queues.sqs import SqsQueue
from mail_pipeline.integrations.queues.sqs_setup import ensure_queue_with_dlq, make_sqs_client
from mail_pipeline.jobs import tags
from mail_pipeline.resources.queues import (
    AUDIT_QUEUE,
    IMAGE_DELETION_QUEUE,
    REPORT_EMAIL_EVENTS_QUEUE,
    STATUS_QUEUE,
    LocalQueues,
    SqsQueues,
)
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.services.audits import audit_request_message
from mail_pipeline.settings import Environment, Settings

DESIGN = {"template": "classic", "brand_name": "Juniper", "headline": "Hello {first_name}"}
SEGMENT = "SEG-AUDIT"
MALFORMED = '{"organization_id": "twelve", "requested_by": "ana@brand.com"}'


def _without_latency(resource: Any) -> Any:
    fields = type(resource).model_fields
    updates = {k: 0.0 for k in ("latency_seconds", "failure_rate") if k in fields}
    return resource.model_copy(update=updates) if updates else resource


@dataclass
class Env:
    db_url: str
    settings: Settings
    instance: dg.DagsterInstance
    definitions: dg.Definitions = field(init=False)
    resources: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.definitions = build_definitions(self.settings)
        self.resources = {
            key: _without_latency(r) for key, r in sandbox_resources(self.settings).items()
        }
        KlaviyoSandboxData(shared_store(str(self.settings.sandbox_path))).put_segment_profiles(
            SEGMENT, [profile_resource("P1", "p1@example.com", "Ann", "Lee")]
        )

    @property
    def queue(self) -> MessageQueue:
        return self.resources["queues"].audit_queue()

    def tick(self) -> Any:
        sensor = self.definitions.resolve_sensor_def("audit_sensor")
        context = dg.build_sensor_context(instance=self.instance, resources=self.resources)
        return sensor.evaluate_tick(context)

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        job = self.definitions.resolve_job_def("audit_job")
        return job.execute_in_process(
            run_config=request.run_config,
            tags=request.tags,
            resources=self.resources,
            instance=self.instance,
        )

    def organization(self, n: int) -> int:
        """A healthy organization: Klaviyo connected, billed, one campaign on a segment."""
        with unit_of_work(self.db_url) as session:
            org = Organization(
                name=f"Brand {n}", slug=f"brand-{n}", country="US", stripe_customer_id="cus_1"
            )
            session.add(org)
            session.flush()
            session.add(
                OrganizationIntegration(
                    organization_id=org.id, kind=IntegrationKind.KLAVIYO, secret_ref="KLAVIYO"
                )
            )
            session.add(
                Campaign(
                    organization_id=org.id,
                    name=f"Campaign {n}",
                    campaign_mode=CampaignMode.AUTOMATED,
                    status=CampaignStatus.ACTIVE,
                    provider_segment_id=SEGMENT,
                    design=DESIGN,
                )
            )
            session.flush()
            return org.id

    def audits(self) -> list[Audit]:
        with unit_of_work(self.db_url) as session:
            return list(session.scalars(select(Audit).order_by(Audit.id)))


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    settings = Settings(Environment.TEST, db_url, tmp_path / "data")
    with dg.instance_for_test() as instance:
        yield Env(db_url, settings, instance)


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {key: value.value for key, value in output.step_output_data.metadata.items()}


def test_a_request_becomes_one_stored_audit_and_leaves_the_queue(env: Env) -> None:
    empty = env.tick()
    assert empty.run_requests == [] and empty.skip_message == "the queue is empty"

    org_id = env.organization(1)
    message_id = env.queue.send(audit_request_message(org_id, "ana@brand.com"))
    (request,) = env.tick().run_requests
    assert request.tags[tags.STAGE] == "maintenance"
    dg.validate_run_config(env.definitions.resolve_job_def("audit_job"), request.run_config)

    result = env.run(request)

    assert result.success
    (audit,) = env.audits()
    assert (audit.organization_id, audit.source_message_id) == (org_id, message_id)
    assert (audit.status, audit.requested_by) == ("completed", "ana@brand.com")
    assert env.queue.approximate_depth() == 0
    metadata = _metadata(result)
    assert (metadata["audits_completed"], metadata["messages_deleted"]) == (1, 1)
    report = metadata[f"audit {audit.id}: organization {org_id}"]
    assert report.startswith(
        f"### Audit of Brand 1 (organization {org_id}), audit {audit.id}: passed"
    )
    assert "| ok | segments | Every live campaign's segment exists in Klaviyo" in report


def test_at_most_one_audit_run_drains_the_queue(env: Env) -> None:
    env.queue.send(audit_request_message(env.organization(1), "ana@brand.com"))
    job = env.definitions.resolve_job_def("audit_job")
    env.instance.create_run_for_job(
        job_def=job,
        run_config={"ops": {"run_audits": {"config": {}}}},
        status=dg.DagsterRunStatus.STARTED,
        tags={tags.STAGE: "maintenance"},
    )
    busy = env.tick()
    assert busy.run_requests == []
    assert "audit_job is already draining the queue" in (busy.skip_message or "")


class _Twice(MessageQueue):
    """Delivers every message twice, as an SQS standard queue may."""

    def __init__(self, inner: MessageQueue) -> None:
        self.inner = inner
        self.name = inner.name

    def send(self, body: str, *, attributes: Any = None) -> str:
        return self.inner.send(body, attributes=attributes)

    def send_batch(self, bodies: Sequence[str]) -> list[str]:
        return self.inner.send_batch(bodies)

    def receive(self, max_messages: int = 10, **kwargs: Any) -> list[QueueMessage]:
        page = self.inner.receive(max_messages, **kwargs)
        return [m for message in page for m in (message, message)]

    def delete(self, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        return self.inner.delete(receipt_handles)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.inner.change_visibility(receipt_handle, seconds)

    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        self.inner.dead_letter(message, reason)

    def approximate_depth(self) -> int:
        return self.inner.approximate_depth()


class DuplicatingQueues(LocalQueues):
    def queue(self, name: str) -> MessageQueue:
        return _Twice(super().queue(name))


def test_a_duplicate_delivery_produces_one_audit(env: Env) -> None:
    env.resources["queues"] = DuplicatingQueues(path=str(env.settings.queue_path))
    env.queue.send(audit_request_message(env.organization(1), "ana@brand.com"))
    (request,) = env.tick().run_requests

    result = env.run(request)

    assert result.success
    assert len(env.audits()) == 1
    metadata = _metadata(result)
    assert (metadata["received"], metadata["audits_completed"], metadata["duplicates"]) == (2, 1, 1)
    assert env.queue.approximate_depth() == 0


def test_a_malformed_request_goes_to_the_dlq_and_the_others_are_audited(env: Env) -> None:
    first, second = env.organization(1), env.organization(2)
    env.queue.send(audit_request_message(first, "ana@brand.com"))
    env.queue.send(MALFORMED)
    env.queue.send(json.dumps({"organization_id": 424242, "requested_by": "ana@brand.com"}))
    env.queue.send(audit_request_message(second, "bo@brand.com"))
    (request,) = env.tick().run_requests

    result = env.run(request)

    assert result.success
    assert sorted(a.organization_id for a in env.audits()) == [first, second]
    assert env.queue.approximate_depth() == 0
    dead = env.resources["queues"].audit_queue().dlq().receive(10)
    assert sorted(m.attributes["reason"] for m in dead) == [
        "organization 424242 does not exist (the audit request's organization_id)",
        "the audit request needs a positive integer organization_id, not 'twelve'",
    ]
    assert MALFORMED in {m.body for m in dead}
    metadata = _metadata(result)
    assert (metadata["audits_completed"], metadata["dead_lettered"]) == (2, 2)
    assert len(metadata["dead_letter_reasons"]) == 2


# -- on SQS (moto) ------------------------------------------------------------------------


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield make_sqs_client(region_name="us-east-1")


def test_the_audit_flow_on_sqs(env: Env, sqs: Any) -> None:
    urls = {
        name: ensure_queue_with_dlq(sqs, name, visibility_timeout=120)
        for name in (STATUS_QUEUE, IMAGE_DELETION_QUEUE, AUDIT_QUEUE, REPORT_EMAIL_EVENTS_QUEUE)
    }
    env.resources["queues"] = SqsQueues(
        status_queue_url=urls[STATUS_QUEUE][0],
        image_deletion_queue_url=urls[IMAGE_DELETION_QUEUE][0],
        audit_queue_url=urls[AUDIT_QUEUE][0],
        report_email_events_queue_url=urls[REPORT_EMAIL_EVENTS_QUEUE][0],
        region_name="us-east-1",
    )
    org_id = env.organization(1)
    message_id = env.queue.send(audit_request_message(org_id, "ana@brand.com"))
    env.queue.send(MALFORMED)
    (request,) = env.tick().run_requests

    result = env.run(request)

    assert result.success
    (audit,) = env.audits()
    assert (audit.organization_id, audit.source_message_id) == (org_id, message_id)
    assert env.queue.approximate_depth() == 0
    (dead,) = SqsQueue(urls[AUDIT_QUEUE][1], client=sqs).receive(10)
    assert dead.body == MALFORMED
    assert dead.attributes["reason"] == (
        "the audit request needs a positive integer organization_id, not 'twelve'"
    )


def test_an_audit_run_a_person_launches_must_say_who_and_why(env: Env) -> None:
    env.queue.send(audit_request_message(env.organization(1), "ana@brand.com"))
    job = env.definitions.resolve_job_def("audit_job")
    refused = job.execute_in_process(
        resources=env.resources, instance=env.instance, raise_on_error=False
    )
    assert not refused.success
    error = refused.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and "must say who asked for it and why" in error.message
    assert env.audits() == [] and env.queue.approximate_depth() == 1

    asked = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "the brand asked"}
    assert job.execute_in_process(
        resources=env.resources, instance=env.instance, tags=asked
    ).success
    assert len(env.audits()) == 1
