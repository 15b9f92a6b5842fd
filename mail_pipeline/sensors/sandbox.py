"""Local and test environments only: what the outside world does to the sandboxes.

Real printers POST status webhooks to an ingress that puts them on the status SQS queue. The
sandbox printers schedule theirs when they accept a piece; ``sandbox_printer_webhooks``
delivers the due ones onto the local status queue, as the ingress would.
``sandbox_shoppers`` plays the brands' customers: it places orders in the sandbox order
sources after postcards are mailed (``services.sandbox_shoppers``).
``sandbox_enrichment_kickoff`` starts address-enrichment batches every few minutes while
recipients wait for one, so a local demo does not wait for the schedule's next of its four
daily times (``assets.reports.sandbox_weekly_reports`` sends the demo's week-to-date
reports). ``definitions.py`` binds these only where the vendors are sandboxes.
"""

from datetime import UTC, datetime

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.address_enrichment import address_enrichment_job
from mail_pipeline.jobs.runs import active_runs
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.printing import SandboxPrinters
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.resources.sandbox import SandboxState
from mail_pipeline.services.address_enrichment import organizations_waiting
from mail_pipeline.services.sandbox_shoppers import go_shopping


@dg.sensor(
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Delivers the sandbox printers' due status webhooks to the status "
    "queue (what the webhook ingress does in production).",
)
def sandbox_printer_webhooks(printers: SandboxPrinters, queues: QueuesResource) -> dg.SkipReason:
    queue = queues.status_queue()
    sent = printers.emit_webhooks(queue.send, send_many=queue.send_batch)
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


@dg.sensor(
    job=address_enrichment_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Local only: starts address-enrichment batches every 5 minutes while "
    "AddressEnrichable recipients wait (production waits for the schedule's 01:00, 07:00, "
    "13:00 or 19:00 New York).",
)
def sandbox_enrichment_kickoff(
    context: dg.SensorEvaluationContext, database: Database
) -> dg.RunRequest | dg.SkipReason:
    if not organizations_waiting(database.session):
        return dg.SkipReason("no recipient waits for address enrichment")
    if active_runs(context.instance, job_name=address_enrichment_job.name):
        return dg.SkipReason("an address-enrichment run is in flight")
    now = datetime.now(UTC)
    return dg.RunRequest(
        run_key=f"sandbox-enrichment-{now:%Y%m%dT%H%M}",
        tags={tags.REQUESTED_BY: "sandbox_enrichment_kickoff", tags.REASON: "local demo"},
    )
