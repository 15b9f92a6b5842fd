"""The run that applies report email events (SES via SNS) from their queue.

As the status queue's run (``jobs.queues``): messages are received inside the run, applied in
one transaction, and deleted only after it committed; malformed ones go to the dead-letter
queue with their reason, unsupported ones (opens, clicks, subscription notices) are deleted.
"""

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import counts_metadata, unparked_failure
from mail_pipeline.jobs.queues import DrainConfig
from mail_pipeline.jobs.runs import check_launch
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.services.reports import bounces_by_organization, process_report_email_events


@dg.op
def apply_report_email_events(
    context: dg.OpExecutionContext,
    config: DrainConfig,
    database: Database,
    queues: QueuesResource,
) -> dg.Output[None]:
    """Record each SES event once and move its report to delivered or bounced."""
    check_launch(context)
    result = process_report_email_events(
        database.session,
        queues.report_email_events_queue(),
        max_receives=config.max_receives,
        visibility_timeout=queues.visibility_timeout,
        log=context.log,
    )
    with database.session() as session:
        bounces = bounces_by_organization(session)
    metadata = counts_metadata(result)
    # Every bounced report so far, per organization: the brands whose address bounces.
    metadata["bounced_reports_by_organization"] = dg.MetadataValue.json(
        {str(organization): n for organization, n in sorted(bounces.items())}
    )
    if failure := unparked_failure(result, metadata, "report email event"):
        raise failure
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags("status", max_runtime=600),
    description="Apply report email delivery events (SES) from their queue.",
)
def report_email_events_job() -> None:
    apply_report_email_events()
