"""Organization audits on request (SPEC §3 ``audits.process_audits``): one run drains the
audit queue, auditing each requested organization and storing its report
(``services.audits``); the run's metadata shows each report as a Markdown table."""

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import Metadata, unparked_failure
from mail_pipeline.jobs.queues import DrainConfig
from mail_pipeline.jobs.runs import check_launch
from mail_pipeline.resources.cdp import CdpResource
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.orders import OrderSourcesResource
from mail_pipeline.resources.printing import PrintersResource
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.services.audits import AuditRunResult, AuditVendors, process_audit_queue


def audit_vendors(
    cdp: CdpResource, order_sources: OrderSourcesResource, printers: PrintersResource
) -> AuditVendors:
    """What an audit reads, from the resources (the CLI's ``mail-pipeline audit`` too)."""
    return AuditVendors(
        cdp=cdp, order_sources=order_sources, printers=frozenset(printers.printers())
    )


def audit_metadata(result: AuditRunResult) -> Metadata:
    """Totals, the dead-letter reasons, and one Markdown report per audit stored."""
    metadata: Metadata = {
        "received": result.received,
        "audits_completed": result.audits_completed,
        "audits_failed": result.audits_failed,
        "duplicates": result.duplicates,
        "dead_lettered": result.dead_lettered,
        "dead_letter_failures": result.dead_letter_failures,
        "messages_deleted": result.messages_deleted,
        "delete_failures": result.delete_failures,
    }
    if result.dead_letter_reasons:
        metadata["dead_letter_reasons"] = dg.MetadataValue.json(list(result.dead_letter_reasons))
    for report in result.reports:
        key = f"audit {report.audit_id}: organization {report.organization_id}"
        metadata[key] = dg.MetadataValue.md(report.markdown())
    return metadata


@dg.op
def run_audits(
    context: dg.OpExecutionContext,
    config: DrainConfig,
    database: Database,
    queues: QueuesResource,
    cdp: CdpResource,
    order_sources: OrderSourcesResource,
    printers: PrintersResource,
) -> dg.Output[None]:
    """Audit each organization requested on the audit queue and store its report; a
    malformed request or an unknown organization goes to the dead-letter queue with the
    reason, and a redelivered request is not audited twice."""
    check_launch(context)
    result = process_audit_queue(
        database.session,
        queues.audit_queue(),
        audit_vendors(cdp, order_sources, printers),
        max_receives=config.max_receives,
        visibility_timeout=queues.visibility_timeout,
        log=context.log,
    )
    metadata = audit_metadata(result)
    if failure := unparked_failure(result, metadata, "audit request"):
        raise failure
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags("maintenance", max_runtime=1800),
    description="Audit organizations on request (the audit queue): integrations, segments, "
    "campaigns, stuck recipients, billing; each report is stored in audits.",
)
def audit_job() -> None:
    run_audits()
