"""Proofing and mailing runs: each processes claimed batches (hundreds of recipients each)
with bounded concurrency inside; per-run totals are metadata, never one event per recipient.

The sensors launch them for batches they claimed. A sensor's run then keeps claiming its
organization's waiting recipients, batch after batch, for up to ``keep_claiming_seconds``
(``services.staging.keep_claiming``: each batch with its own lease, processed whole before the
next; after a 60 s slice it gives way when another organization waits and no run slot is
free), so under load a run's start-up is paid once per minutes of work; once caught up, a
sensor's run waits ``idle_seconds`` for new recipients before it ends (a trickle is served by
a warm run). Its log says how it goes every ``PROGRESS_EVERY`` seconds, and its metadata
lists the batches it took. A person can ask for one campaign instead (``campaign_id``; who
and why in the ``requested_by`` and ``reason`` tags): the run claims a batch of that
campaign's waiting recipients itself, by the sensors' rules, and processes it:

    dagster job launch -w workspace.yaml -j mailing_job \
      --config-json '{"ops": {"mail_recipients": {"config": {"campaign_id": 12}}}}' \
      --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "rush"}'
"""

import time
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import Metadata, link, reasons_table
from mail_pipeline.jobs.runs import (
    active_run_tag_values,
    active_runs,
    check_launch,
    longest_running_run,
)
from mail_pipeline.limits import MAILING_RUNS_IN_FLIGHT, PROOFING_RUNS_IN_FLIGHT
from mail_pipeline.resources.billing import BillingResource
from mail_pipeline.resources.cdp import CdpResource
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.images import ImageHostResource
from mail_pipeline.resources.printing import PrintersResource
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.resources.rendering import RenderingResource
from mail_pipeline.services.mailing import MailingResult, MailingServices, mail_batch
from mail_pipeline.services.proofing import ProofingResult, proof_batch
from mail_pipeline.services.staging import (
    MAILING,
    PROOFING,
    Continuation,
    Stage,
    claim_for_campaign,
    keep_claiming,
)

R = TypeVar("R", ProofingResult, MailingResult)
#: A long run logs its progress at most this often (one event-log row), not per batch.
PROGRESS_EVERY = 15.0
#: The runs of each stage that may be in flight at once.
RUNS_IN_FLIGHT = {PROOFING.name: PROOFING_RUNS_IN_FLIGHT, MAILING.name: MAILING_RUNS_IN_FLIGHT}


class BatchConfig(dg.Config):
    #: The batch a sensor claimed; empty for an on-demand run for ``campaign_id``.
    batch_id: str = ""
    #: On demand: claim a batch of this campaign's waiting recipients (up to ``batch_size``).
    campaign_id: int | None = None
    batch_size: int = 200
    #: Recipients processed at once inside the run (vendor calls in flight).
    concurrency: int = 32
    #: After a sensor's batch, keep claiming the organization's waiting recipients for up to
    #: this many seconds (0: that batch only). On-demand runs take one batch.
    keep_claiming_seconds: float = 240.0
    #: With nothing waiting, look again every second for this long before ending (the
    #: sensors ask for ``sensors.pipeline.IDLE_SECONDS``; a run by hand or by recovery ends).
    idle_seconds: float = 0.0


def _batch(
    context: dg.OpExecutionContext, config: BatchConfig, database: Database, stage: Stage
) -> str | None:
    """The batch this run processes: the sensor's, or one claimed now for the campaign an
    on-demand run names (None: nothing of it waits)."""
    if config.batch_id:
        return config.batch_id
    if config.campaign_id is None:
        raise dg.Failure(description="give batch_id (a claimed batch) or campaign_id")
    check_launch(context)
    claim = claim_for_campaign(database.session, stage, config.campaign_id, config.batch_size)
    if not claim.ids:
        context.log.info(
            "campaign %s has no recipient waiting for %s", config.campaign_id, stage.name
        )
        return None
    context.log.info("claimed batch %s: %s recipients", claim.batch_id, len(claim.ids))
    return claim.batch_id


def _all_batches(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    database: Database,
    stage: Stage,
    process: Callable[[str], R],
) -> tuple[R, list[tuple[str, int]]]:
    """Process the run's batch and, for a sensor's run, the batches it goes on to claim
    (``keep_claiming``); returns the summed result and (batch id, recipients) of each."""
    done: list[tuple[str, int]] = []
    last_log = time.monotonic()

    def one(batch_id: str) -> R:
        nonlocal last_log
        result = process(batch_id)
        done.append((batch_id, result.taken))
        if time.monotonic() - last_log >= PROGRESS_EVERY:
            last_log = time.monotonic()
            context.log.info(
                "%s batches so far, %s recipients taken", len(done), sum(n for _b, n in done)
            )
        return result

    organization = context.run.tags.get(tags.ORGANIZATION, "")
    if config.campaign_id is not None or not organization.isdigit():
        results = [one(config.batch_id)]
    else:
        results = keep_claiming(
            database.session,
            stage,
            int(organization),
            config.batch_id,
            one,
            rules=Continuation(
                budget_seconds=config.keep_claiming_seconds,
                idle_seconds=config.idle_seconds,
                batch_size=config.batch_size,
            ),
            slot_free=lambda: (
                active_runs(context.instance, job_name=context.job_name)
                < RUNS_IN_FLIGHT[stage.name]
            ),
            served=lambda: {
                int(value)
                for value in active_run_tag_values(
                    context.instance, job_name=context.job_name, tag=tags.ORGANIZATION
                )
                if value.isdigit()
            },
            longest_running=lambda: (
                longest_running_run(context.instance, job_name=context.job_name) == context.run_id
            ),
        )
    total = results[0]
    for result in results[1:]:
        total.absorb(result)
    return total, done


def _batches_metadata(done: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "batches": len(done),
        "batch_ids": dg.MetadataValue.json(dict(done[:100])),
    }


def _nothing_waiting(config: BatchConfig) -> dg.Output[None]:
    return dg.Output(None, metadata={"campaign_id": config.campaign_id, "recipients": 0})


@dg.op
def proof_recipients(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    database: Database,
    rendering: RenderingResource,
    image_host: ImageHostResource,
) -> dg.Output[None]:
    """Render and host each recipient's postcard: ProofingStaged -> Proofing -> Proofed."""
    batch_id = _batch(context, config, database, PROOFING)
    if batch_id is None:
        return _nothing_waiting(config)
    config = config.model_copy(update={"batch_id": batch_id})
    renderer, images = rendering.renderer(), image_host.client()
    result, done = _all_batches(
        context,
        config,
        database,
        PROOFING,
        lambda batch: proof_batch(
            database.session,
            batch,
            renderer,
            images,
            id_key=image_host.proof_id_key,
            run_id=context.run_id,
            concurrency=config.concurrency,
        ),
    )
    if not result.held:
        context.log.warning(
            "batch %s not taken: %s; nothing to do", config.batch_id, result.refusal
        )
        return dg.Output(None, metadata={"batch_id": config.batch_id, "recipients": 0})
    metadata: Metadata = {
        "batch_id": config.batch_id,
        **_batches_metadata(done),
        "recipients": result.taken,
        "proofed": result.proofed,
        "no_longer_held": result.lost,
        "released_for_retry": result.released,
        "errors": len(result.errors),
        "renderers": dg.MetadataValue.json(dict(result.renderers)),
    }
    metadata.update(result.offer_code_metadata())
    if result.errors:
        metadata["error_reasons"] = reasons_table(result.errors)
    for recipient_id, front, back in result.samples[:3]:
        metadata[f"proof_{recipient_id}_front"] = link(front)
        metadata[f"proof_{recipient_id}_back"] = link(back)
    context.log.info(
        "%s batches from %s: %s of %s proofed, %s errors, %s released",
        len(done),
        config.batch_id,
        result.proofed,
        result.taken,
        len(result.errors),
        result.released,
    )
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags("proofing", max_runtime=900),
    description="Render and host the proofs of a claimed batch, then of the organization's "
    "next batches while its time budget lasts.",
)
def proofing_job() -> None:
    proof_recipients()


@dg.op
def mail_recipients(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    database: Database,
    printers: PrintersResource,
    billing: BillingResource,
    cdp: CdpResource,
    queues: QueuesResource,
) -> dg.Output[None]:
    """Print and mail each recipient's postcard at most once: SendingStaged -> Sending -> Sent."""
    batch_id = _batch(context, config, database, MAILING)
    if batch_id is None:
        return _nothing_waiting(config)
    config = config.model_copy(update={"batch_id": batch_id})
    services = MailingServices(
        printers=printers.strategy(),
        billing=billing.meter(),
        cdp=cdp,
        image_deletions=queues.image_deletion_queue(),
        test_mode=printers.test_mode,
    )
    result, done = _all_batches(
        context,
        config,
        database,
        MAILING,
        lambda batch: mail_batch(
            database.session,
            batch,
            services,
            run_id=context.run_id,
            concurrency=config.concurrency,
        ),
    )
    if not result.held:
        context.log.warning(
            "batch %s not taken: %s; nothing to do", config.batch_id, result.refusal
        )
        return dg.Output(None, metadata={"batch_id": config.batch_id, "recipients": 0})
    metadata: Metadata = {
        "batch_id": config.batch_id,
        **_batches_metadata(done),
        "recipients": result.taken,
        "sent": result.sent,
        "no_longer_held": result.lost,
        "postcards_created": result.created,
        "reconciled_with_printer": result.reconciled,
        "deferred": len(result.deferred),
        "held_back": len(result.held_back),
        "suppressed": len(result.suppressed),
        "errors": len(result.errors),
        "printers": dg.MetadataValue.json(dict(result.printers)),
    }
    if result.held_back:
        metadata["held_back_reasons"] = reasons_table(result.held_back)
    if result.suppressed:
        metadata["suppressed_reasons"] = reasons_table(result.suppressed)
    if result.errors:
        metadata["error_reasons"] = reasons_table(result.errors)
    if result.deferred:
        metadata["deferred_reasons"] = reasons_table(result.deferred)
    if result.follow_up_failures:
        metadata["follow_up_failures"] = reasons_table(
            {k: "; ".join(v) for k, v in result.follow_up_failures.items()}
        )
    context.log.info(
        "%s batches from %s: %s of %s sent (%s created, %s reconciled), %s errors, %s deferred",
        len(done),
        config.batch_id,
        result.sent,
        result.taken,
        result.created,
        result.reconciled,
        len(result.errors),
        len(result.deferred),
    )
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags("mailing", max_runtime=900),
    description="Print and mail the postcards of a claimed batch, then of the organization's "
    "next batches while its time budget lasts.",
)
def mailing_job() -> None:
    mail_recipients()
