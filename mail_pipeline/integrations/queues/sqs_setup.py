"""Build an SQS client, and create a queue with its dead-letter queue.

:func:`ensure_queue_with_dlq` is what local/test setup calls, and what operations runs once
per environment (or reproduces in infrastructure code) for each queue the pipeline reads::

    client = make_sqs_client(region_name="us-east-1")
    url, dlq_url = ensure_queue_with_dlq(client, "mail-status-events", visibility_timeout=120)

It is idempotent: running it again converges an existing queue to the given visibility timeout
and redrive policy instead of failing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from mail_pipeline.integrations.errors import NotFound
from mail_pipeline.integrations.queues.base import MAX_RECEIVE_COUNT
from mail_pipeline.integrations.queues.conventions import check_visibility, dead_letter_queue_name
from mail_pipeline.integrations.queues.sqs_errors import translated

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

#: Messages wait in a dead-letter queue for the SQS maximum, 14 days, so that someone can
#: look at them (the source queue's default retention is 4 days).
DLQ_RETENTION_SECONDS = 1_209_600


def make_sqs_client(
    *,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    max_attempts: int = 5,
    connect_timeout: float = 5,
    read_timeout: float = 40,
) -> SQSClient:
    """A boto3 SQS client with standard retries and a read timeout above the 20 s long poll.

    Credentials left ``None`` come from boto3's usual chain (environment, profile, role).
    Creating a client does no network I/O.
    """
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return boto3.client(
        "sqs",
        region_name=region_name,
        endpoint_url=endpoint_url,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        config=config,
    )


def ensure_queue_with_dlq(
    client: SQSClient,
    name: str,
    max_receive_count: int = MAX_RECEIVE_COUNT,
    visibility_timeout: int = 30,
    *,
    dlq_name: str | None = None,
) -> tuple[str, str]:
    """Create (or converge) a standard queue and its DLQ; return ``(queue_url, dlq_url)``.

    A message received more than ``max_receive_count`` times moves to the DLQ (default
    :data:`~mail_pipeline.integrations.queues.base.MAX_RECEIVE_COUNT`, which the status
    consumer assumes too). FIFO queues are not supported (the pipeline's queues are
    standard, at-least-once queues).
    """
    if name.endswith(".fifo"):
        raise ValueError("FIFO queues are not supported; use a standard queue")
    if max_receive_count < 1:
        raise ValueError(f"max_receive_count must be at least 1, got {max_receive_count}")
    check_visibility(visibility_timeout)
    dlq_url = _ensure_queue(
        client,
        dlq_name or dead_letter_queue_name(name),
        {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)},
    )
    with translated("GetQueueAttributes"):
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    queue_url = _ensure_queue(
        client,
        name,
        {"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": json.dumps(redrive)},
    )
    return queue_url, dlq_url


def _ensure_queue(
    client: SQSClient, name: str, attributes: dict[QueueAttributeNameType, str]
) -> str:
    """Look the queue up, create it if missing, then set ``attributes`` (idempotent)."""
    try:
        with translated("GetQueueUrl"):
            url = client.get_queue_url(QueueName=name)["QueueUrl"]
    except NotFound:
        # Two processes may race here; CreateQueue with identical attributes is idempotent.
        with translated("CreateQueue"):
            return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    with translated("SetQueueAttributes"):
        client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url
