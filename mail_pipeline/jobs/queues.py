"""Runs that drain a queue: printer status webhooks, and hosted-image deletions.

Messages are received inside the run (not in the sensor), deleted only after their effect is
committed; a run reads at most ``max_receives`` x 10 messages (5,000 by default) and stops
early when the queue is empty, so a large backlog becomes a few bounded runs rather than one
unbounded one - and not hundreds: a run costs seconds of CPU to start, and at 100 postcards
a second the status webhooks alone bring several hundred messages a second.
"""

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import counts_metadata, unparked_failure
from mail_pipeline.jobs.runs import check_launch
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.images import ImageHostResource
from mail_pipeline.resources.printing import PrintersResource
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.services.draining import repeat_passes
from mail_pipeline.services.image_cleanup import process_image_deletions
from mail_pipeline.services.status_tracking import process_status_queue


class DrainConfig(dg.Config):
    #: Receive calls per run (each returns at most 10 messages; a run stops early when the
    #: queue is empty). The seed's Celery task read 5 x 10 per 15 s tick, but a Dagster run
    #: costs seconds to start, so one run drains up to 5,000 messages.
    max_receives: int = 500
    #: Once the queue is empty, look again every second for this long before ending (the
    #: queue sensors ask for ``sensors.pipeline.IDLE_SECONDS``; a run by hand ends at once).
    idle_seconds: float = 0.0


@dg.op
def apply_mail_statuses(
    context: dg.OpExecutionContext,
    config: DrainConfig,
    database: Database,
    queues: QueuesResource,
    printers: PrintersResource,
) -> dg.Output[None]:
    """Parse printer webhooks and apply them, each message on its own (one bad message goes
    to the dead-letter queue alone): mailpieces move forward, Sent -> Received on delivery,
    Sent -> Error when the printer reports the piece failed or cancelled."""
    check_launch(context)
    queue, known = queues.status_queue(), printers.printers()
    result = repeat_passes(
        lambda: process_status_queue(
            database.session,
            queue,
            known,
            max_receives=config.max_receives,
            visibility_timeout=queues.visibility_timeout,
            max_receive_count=queues.max_receive_count,
            log=context.log,
        ),
        idle_seconds=config.idle_seconds,
    )
    metadata = counts_metadata(result)
    if failure := unparked_failure(result, metadata, "status"):
        raise failure
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags("status", max_runtime=600),
    description="Apply printer status webhooks from the status queue.",
)
def mail_status_job() -> None:
    apply_mail_statuses()


@dg.op
def delete_hosted_images(
    context: dg.OpExecutionContext,
    config: DrainConfig,
    queues: QueuesResource,
    image_host: ImageHostResource,
) -> dg.Output[None]:
    """Delete proof images that were mailed (Cloudflare deletions from the queue)."""
    check_launch(context)
    queue, images = queues.image_deletion_queue(), image_host.client()
    result = repeat_passes(
        lambda: process_image_deletions(
            queue,
            images,
            max_receives=config.max_receives,
            visibility_timeout=queues.visibility_timeout,
            log=context.log,
        ),
        idle_seconds=config.idle_seconds,
    )
    metadata = counts_metadata(result)
    if failure := unparked_failure(result, metadata, "image deletion"):
        raise failure
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags("maintenance", max_runtime=600),
    description="Delete hosted proof images queued for deletion.",
)
def image_cleanup_job() -> None:
    delete_hosted_images()
