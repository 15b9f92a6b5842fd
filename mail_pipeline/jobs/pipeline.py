"""Proofing and mailing runs: each processes one claimed batch (hundreds of recipients) with
bounded concurrency inside; per-run totals are metadata, never one event per recipient.

The sensors launch them for batches they claimed. A person can ask for one campaign instead
(``campaign_id``; who and why in the ``requested_by`` and ``reason`` tags): the run claims a
batch of that campaign's waiting recipients itself, by the sensors' rules, and processes it:

    dagster job launch -w workspace.yaml -j mailing_job \
      --config-json '{"ops": {"mail_recipients": {"config": {"campaign_id": 12}}}}' \
      --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "rush"}'
"""

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import Metadata, link, reasons_table
from mail_pipeline.jobs.runs import check_launch
from mail_pipeline.resources.billing import BillingResource
from mail_pipeline.resources.cdp import CdpResource
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.images import ImageHostResource
from mail_pipeline.resources.printing import PrintersResource
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.resources.rendering import RenderingResource
from mail_pipeline.services.mailing import MailingServices, mail_batch
from mail_pipeline.services.proofing import proof_batch
from mail_pipeline.services.staging import MAILING, PROOFING, Stage, claim_for_campaign


class BatchConfig(dg.Config):
    #: The batch a sensor claimed; empty for an on-demand run for ``campaign_id``.
    batch_id: str = ""
    #: On demand: claim a batch of this campaign's waiting recipients (up to ``batch_size``).
    campaign_id: int | None = None
    batch_size: int = 200
    #: Recipients processed at once inside the run.
    concurrency: int = 16


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
    result = proof_batch(
        database.session,
        config.batch_id,
        rendering.renderer(),
        image_host.client(),
        id_key=image_host.proof_id_key,
        run_id=context.run_id,
        concurrency=config.concurrency,
    )
    if not result.held:
        context.log.warning(
            "batch %s was already returned by recovery; nothing to do", config.batch_id
        )
        return dg.Output(None, metadata={"batch_id": config.batch_id, "recipients": 0})
    metadata: Metadata = {
        "batch_id": config.batch_id,
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
        "batch %s: %s of %s proofed, %s errors, %s released",
        config.batch_id,
        result.proofed,
        result.taken,
        len(result.errors),
        result.released,
    )
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags={tags.STAGE: "proofing", tags.MAX_RUNTIME: 900},
    description="Render and host the proofs of one claimed batch.",
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
    result = mail_batch(
        database.session,
        config.batch_id,
        services,
        run_id=context.run_id,
        concurrency=config.concurrency,
    )
    if not result.held:
        context.log.warning(
            "batch %s was already returned by recovery; nothing to do", config.batch_id
        )
        return dg.Output(None, metadata={"batch_id": config.batch_id, "recipients": 0})
    metadata: Metadata = {
        "batch_id": config.batch_id,
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
        "batch %s: %s of %s sent (%s created, %s reconciled), %s errors, %s deferred",
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
    tags={tags.STAGE: "mailing", tags.MAX_RUNTIME: 900},
    description="Print and mail the postcards of one claimed batch.",
)
def mailing_job() -> None:
    mail_recipients()
