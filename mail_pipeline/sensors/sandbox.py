"""Local and test environments only: what the outside world does to the sandboxes.

Real printers POST status webhooks to an ingress that puts them on the status SQS queue. The
sandbox printers schedule theirs when they accept a piece; ``sandbox_printer_webhooks``
delivers the due ones onto the local status queue, as the ingress would.
``sandbox_shoppers`` plays the brands' customers: it places orders in the sandbox order
sources after postcards are mailed (``services.sandbox_shoppers``). ``definitions.py`` binds
both only where the vendors are sandboxes.
"""

import dagster as dg

from mail_pipeline.resources.database import Database
from mail_pipeline.resources.printing import SandboxPrinters
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.resources.sandbox import SandboxState
from mail_pipeline.services.sandbox_shoppers import go_shopping


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


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Places the sandbox shoppers' orders - mailed and held-out recipients "
    "buying by email, address or offer code, strangers, refunds, cancellations - in the "
    "organizations' sandbox order sources (what real customers do in production).",
)
def sandbox_shoppers(database: Database, sandbox: SandboxState) -> dg.SkipReason:
    result = go_shopping(database.session, sandbox.store())
    if not result.organizations:
        return dg.SkipReason("no organization has a sandbox order source")
    return dg.SkipReason(
        f"looked at {result.recipients} mailed or held-out recipients of "
        f"{result.organizations} organizations; {result.new_orders} new orders in their "
        "sandbox sources"
    )
