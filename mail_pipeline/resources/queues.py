"""The queues the pipeline reads: printer status webhooks, hosted-image deletions,
organization audit requests and the report emails' delivery events (SES via SNS).

Production reads SQS (each queue has a dead-letter queue through its redrive policy); the
embedded default uses local queues with the same semantics in one SQLite file.
"""

from __future__ import annotations

import functools
from abc import abstractmethod

import dagster as dg

from mail_pipeline.integrations.queues.base import MAX_RECEIVE_COUNT, MessageQueue
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.queues.local_db import QueueDatabase
from mail_pipeline.integrations.queues.sqs import SqsQueue

STATUS_QUEUE = "mail-status"
IMAGE_DELETION_QUEUE = "image-deletion"
#: Organization audit requests (``services.audits`` holds the message contract).
AUDIT_QUEUE = "audit-requests"
#: SES delivery events of report emails (SNS -> SQS; ``domain.email_events`` reads them).
REPORT_EMAIL_EVENTS_QUEUE = "report-email-events"


class QueuesResource(dg.ConfigurableResource):
    #: Seconds a received message stays hidden; longer than the worst batch processing time.
    visibility_timeout: int = 120
    #: Receives before a message moves to the dead-letter queue: the local queues' redrive
    #: setting, and for SQS what the queues' redrive policy says (set up with the same
    #: default). Consumers dead-letter a message they keep for redelivery on its last one.
    max_receive_count: int = MAX_RECEIVE_COUNT

    @abstractmethod
    def queue(self, name: str) -> MessageQueue: ...

    def status_queue(self) -> MessageQueue:
        return self.queue(STATUS_QUEUE)

    def image_deletion_queue(self) -> MessageQueue:
        return self.queue(IMAGE_DELETION_QUEUE)

    def audit_queue(self) -> MessageQueue:
        return self.queue(AUDIT_QUEUE)

    def report_email_events_queue(self) -> MessageQueue:
        return self.queue(REPORT_EMAIL_EVENTS_QUEUE)


class SqsQueues(QueuesResource):
    status_queue_url: str
    image_deletion_queue_url: str
    audit_queue_url: str
    #: The queue subscribed to the SES configuration set's SNS topic (docs/email_delivery.md).
    report_email_events_queue_url: str
    region_name: str = "us-east-1"
    endpoint_url: str | None = None

    def queue(self, name: str) -> MessageQueue:
        url = {
            STATUS_QUEUE: self.status_queue_url,
            IMAGE_DELETION_QUEUE: self.image_deletion_queue_url,
            AUDIT_QUEUE: self.audit_queue_url,
            REPORT_EMAIL_EVENTS_QUEUE: self.report_email_events_queue_url,
        }[name]
        return SqsQueue(
            url,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            visibility_timeout=self.visibility_timeout,
        )


@functools.cache
def _database(path: str) -> QueueDatabase:
    return QueueDatabase(path)


class LocalQueues(QueuesResource):
    path: str

    def queue(self, name: str) -> MessageQueue:
        return LocalQueue(
            _database(self.path),
            name,
            visibility_timeout=self.visibility_timeout,
            max_receive_count=self.max_receive_count,
        )
