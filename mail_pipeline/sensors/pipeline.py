"""Sensors that move recipients: stage batches for proofing and mailing, drain the status and
image-deletion queues, and recover claims whose run died.

Each is built by a small factory so tests can build one with other numbers. Sensors only
claim and launch; the work happens in runs.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from mail_pipeline.integrations.queues.base import MessageQueue
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.pipeline import BatchConfig, mailing_job, proofing_job
from mail_pipeline.jobs.queues import DrainConfig, image_cleanup_job, mail_status_job
from mail_pipeline.jobs.runs import active_run_ids, active_runs, fail_run, queued_runs
from mail_pipeline.limits import MAILING_RUNS_IN_FLIGHT, PROOFING_RUNS_IN_FLIGHT
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.services.recovery import recover_expired_claims
from mail_pipeline.services.staging import MAILING, PROOFING, Stage, stage_batches

RUNNING = dg.DefaultSensorStatus.RUNNING
#: A run the sensors launch waits this long for new work once it has caught up (a stage
#: run for recipients, ``BatchConfig.idle_seconds``; a queue's run for messages,
#: ``DrainConfig.idle_seconds``): a trickle is served by a warm run within about a second,
#: and under load a mailing run outlasts the gap until its organization's next proofed batch
#: (a proofing batch of 200 takes 20-40 s). A waiting run gives its slot up at once to an
#: organization that waits unserved (``services.staging.keep_claiming``).
IDLE_SECONDS = 45.0


def staging_sensor(
    stage: Stage,
    job: dg.JobDefinition,
    op_name: str,
    *,
    batch_size: int,
    max_runs_in_flight: int,
    interval_seconds: int,
    idle_seconds: float = IDLE_SECONDS,
) -> dg.SensorDefinition:
    """Claim recipients into batches (one organization each) and launch one run per batch,
    never more runs in flight than ``max_runs_in_flight``; each run keeps claiming its
    organization's work and waits ``idle_seconds`` for more once it has caught up."""

    @dg.sensor(
        name=f"{stage.name}_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=RUNNING,
        description=f"Claims {stage.from_status} recipients into {stage.to_status} "
        f"batches of up to {batch_size} and launches {job.name} runs.",
    )
    def _sensor(context: dg.SensorEvaluationContext, database: Database) -> dg.SensorResult:
        in_flight = active_runs(context.instance, job_name=job.name)
        free = max_runs_in_flight - in_flight
        if free <= 0:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{in_flight} {stage.name} runs in flight (limit {max_runs_in_flight})"
                )
            )
        cursor = json.loads(context.cursor) if context.cursor else {}
        claims = stage_batches(
            database.session,
            stage,
            free_slots=free,
            batch_size=batch_size,
            after_organization=cursor.get("last_organization"),
        )
        if not claims:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"no {stage.from_status} recipients in campaigns that {stage.name} takes"
                )
            )
        requests = [
            dg.RunRequest(
                run_key=claim.batch_id,
                run_config=dg.RunConfig(
                    ops={op_name: BatchConfig(batch_id=claim.batch_id, idle_seconds=idle_seconds)}
                ),
                tags=tags.batch_tags(
                    stage.name, claim.recipients[0].organization_id, claim.batch_id
                ),
            )
            for claim in claims
        ]
        last = claims[-1].recipients[0].organization_id
        context.log.info(
            "claimed %s recipients in %s batches", sum(len(c) for c in claims), len(claims)
        )
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps({"last_organization": last})
        )

    return _sensor


def queue_sensor(
    name: str,
    job: dg.JobDefinition,
    op_name: str,
    queue_of: Callable[[QueuesResource], MessageQueue],
    *,
    interval_seconds: int,
) -> dg.SensorDefinition:
    """Launch a draining run when the queue has messages and no such run is in flight."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=RUNNING,
        description=f"Launches {job.name} when its queue has messages.",
    )
    def _sensor(context: dg.SensorEvaluationContext, queues: QueuesResource) -> dg.SensorResult:
        depth = queue_of(queues).approximate_depth()
        if depth == 0:
            return dg.SensorResult(skip_reason=dg.SkipReason("the queue is empty"))
        if active_runs(context.instance, job_name=job.name):
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{depth} messages wait; {job.name} is already draining the queue"
                )
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_config=dg.RunConfig(ops={op_name: DrainConfig(idle_seconds=IDLE_SECONDS)}),
                    tags={tags.STAGE: job.tags[tags.STAGE]},
                )
            ]
        )

    return _sensor


def _utcnow() -> datetime:
    return datetime.now(UTC)


def recovery_sensor(
    *, interval_seconds: int = 30, clock: Callable[[], datetime] = _utcnow
) -> dg.SensorDefinition:
    """``clock`` is the time leases are judged at (tests move it forward)."""

    @dg.sensor(
        name="recovery_sensor",
        jobs=[mailing_job],
        minimum_interval_seconds=interval_seconds,
        default_status=RUNNING,
        description="Returns batches whose lease expired (their run died or went silent, "
        "whatever Dagster says about it) to where they can start again, and marks that run "
        "failed; re-staged Sending batches get a mailing run that reconciles with the "
        "printer first.",
    )
    def _sensor(context: dg.SensorEvaluationContext, database: Database) -> dg.SensorResult:
        def run_is_queued(batch_id: str) -> bool:
            return queued_runs(context.instance, tags={tags.BATCH: batch_id}) > 0

        result = recover_expired_claims(database.session, run_is_queued, now=clock())
        doomed = dict(result.failed_runs)
        for batch_id, reason in result.returned_batches.items():
            for run_id in active_run_ids(context.instance, tags={tags.BATCH: batch_id}):
                doomed.setdefault(run_id, reason)
        for run_id, reason in doomed.items():
            if fail_run(context.instance, run_id, reason):
                context.log.warning("marked run %s failed: %s", run_id, reason)
        tick = int(context.cursor or 0) + 1
        requests = [
            dg.RunRequest(
                run_key=f"{batch_id}-resume-{tick}",
                job_name=mailing_job.name,
                run_config=dg.RunConfig(ops={"mail_recipients": BatchConfig(batch_id=batch_id)}),
                tags={
                    **tags.batch_tags("mailing", organization_id, batch_id),
                    tags.REASON: "recovery: resume a batch whose run died",
                },
            )
            for batch_id, organization_id in result.mailing_batches
        ]
        if not requests and not result.returned:
            waiting = f" ({len(result.waiting)} batches wait for a queued run)"
            return dg.SensorResult(
                skip_reason=dg.SkipReason("no expired claims" + (waiting if result.waiting else ""))
            )
        context.log.warning(
            "recovered %s; resuming %s mailing batches", dict(result.returned), len(requests)
        )
        return dg.SensorResult(run_requests=requests, cursor=str(tick))

    return _sensor


proofing_sensor = staging_sensor(
    PROOFING,
    proofing_job,
    "proof_recipients",
    batch_size=200,
    max_runs_in_flight=PROOFING_RUNS_IN_FLIGHT,
    interval_seconds=10,
)
#: Runs in flight share the printers' rate limits: the number is defined once in
#: mail_pipeline.limits.
mailing_sensor = staging_sensor(
    MAILING,
    mailing_job,
    "mail_recipients",
    batch_size=200,
    max_runs_in_flight=MAILING_RUNS_IN_FLIGHT,
    interval_seconds=10,
)
mail_status_sensor = queue_sensor(
    "mail_status_sensor",
    mail_status_job,
    "apply_mail_statuses",
    lambda q: q.status_queue(),
    interval_seconds=15,
)
image_cleanup_sensor = queue_sensor(
    "image_cleanup_sensor",
    image_cleanup_job,
    "delete_hosted_images",
    lambda q: q.image_deletion_queue(),
    interval_seconds=10,
)
stale_claims_sensor = recovery_sensor()
