"""Report emails as a resource: Amazon SES in production, the local outbox elsewhere.

Which one is a binding (like the printers): :class:`SesReportEmail` sends through SES with a
configuration set whose SNS destination feeds the report email events queue;
:class:`OutboxReportEmail` writes ``.eml`` files into a folder and puts the same SES-shaped
delivery events on the local report email events queue at once, so the sensor and the
``reports`` rows move exactly as in production.

Recipients: the platform has no per-brand report address yet, so every organization's
reports go to ``recipient_template`` with ``{slug}`` replaced by the organization's slug
(sandbox default ``reports+{slug}@example.com``: example.com never receives mail; the outbox
reports it delivered). Production must bind a template that reaches people (e.g. the CSM
team's alias ``csm+{slug}@...``).

``archive_folder`` is where each report's charts and standalone HTML are kept, under
``<partition>/<organization slug>/``.
"""

from __future__ import annotations

from abc import abstractmethod

import dagster as dg

from mail_pipeline.db.reports import ReportOrganization
from mail_pipeline.integrations.email_delivery import (
    EmailSender,
    OutboxEmailSender,
    SesEmailSender,
)
from mail_pipeline.resources.queues import QueuesResource
from mail_pipeline.services.reports import ReportDelivery


class ReportEmailResource(dg.ConfigurableResource):
    #: The From address of report emails.
    sender_address: str
    #: Who gets an organization's reports; ``{slug}`` is its slug.
    recipient_template: str
    #: Where the charts and HTML of each report are kept.
    archive_folder: str

    @abstractmethod
    def sender(self, queues: QueuesResource) -> EmailSender: ...

    def recipients(self, organization: ReportOrganization) -> list[str]:
        return [self.recipient_template.format(slug=organization.slug)]

    def delivery(self, queues: QueuesResource) -> ReportDelivery:
        return ReportDelivery(
            sender=self.sender(queues),
            from_address=self.sender_address,
            recipients=self.recipients,
        )


class SesReportEmail(ReportEmailResource):
    """Amazon SES (v1 ``SendRawEmail``). Credentials come from boto3's chain."""

    region_name: str = "us-east-1"
    #: Its SNS event destination publishes Send, Delivery, Bounce, Complaint, Reject and
    #: DeliveryDelay to the topic the report email events queue subscribes to.
    configuration_set: str
    endpoint_url: str | None = None

    def sender(self, queues: QueuesResource) -> EmailSender:
        return SesEmailSender(
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            configuration_set=self.configuration_set,
            source=self.sender_address,
        )


class OutboxReportEmail(ReportEmailResource):
    """The local outbox: nothing leaves the machine."""

    #: The outbox folder (``<UTC time>-report-<id>.eml`` and ``.json``).
    folder: str
    sender_address: str = "reports@mail-pipeline.example.com"
    recipient_template: str = "reports+{slug}@example.com"

    def sender(self, queues: QueuesResource) -> EmailSender:
        return OutboxEmailSender(self.folder, queues.report_email_events_queue().send)
