"""Local and test environments only: the sandbox printers' webhooks.

Real printers POST status webhooks to an ingress that puts them on the status SQS queue. The
sandbox printers schedule theirs when they accept a piece; this sensor delivers the due ones
onto the local status queue, as the ingress would. ``definitions.py`` binds it only where the
printers are sandboxes.
"""

import dagster as dg

from mail_pipeline.resources.printing import SandboxPrinters
from mail_pipeline.resources.queues import QueuesResource


@dg.sensor(
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Delivers the sandbox printers' due status webhooks to the status "
    "queue (what the webhook ingress does in production).",
)
def sandbox_printer_webhooks(printers: SandboxPrinters, queues: QueuesResource) -> dg.SkipReason:
    queue = queues.status_queue()
    sent = printers.emit_webhooks(queue.send)
    return dg.SkipReason(f"delivered {sent} webhooks to {queue.name}" if sent else "no webhook due")
