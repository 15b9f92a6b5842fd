"""AWS SQS behind the :class:`MessageQueue` contract.

Every SQS batch call answers HTTP 200 even when some entries failed, so this class always
reads ``Failed``: ``send_batch`` raises :class:`SendBatchFailed` naming the failed entries
(after sending every other batch), ``delete`` returns them as :class:`DeleteFailure`.

Construction does no I/O: the boto3 client is built on first use (unless one is passed in),
and the dead-letter queue's URL, unless configured, is discovered on the first
``dead_letter`` from the queue's ``RedrivePolicy``.

Delivery is at-least-once: a message may be received twice, so whatever handles it must be
idempotent, and should delete it only after its side effects are committed.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mail_pipeline.integrations.errors import IntegrationError, RequestRejected
from mail_pipeline.integrations.queues.base import (
    MAX_RECEIVE,
    DeleteFailure,
    MessageQueue,
    QueueMessage,
)
from mail_pipeline.integrations.queues.conventions import (
    SENT_TIMESTAMP,
    batches,
    check_user_attributes,
    check_visibility,
    chunks,
    dead_letter_attributes,
    receive_limit,
    wait_limit,
)
from mail_pipeline.integrations.queues.sqs_errors import VENDOR, translated
from mail_pipeline.integrations.queues.sqs_setup import make_sqs_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        ReceiveMessageRequestTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )


@dataclass(frozen=True)
class SendFailure:
    """One entry SQS refused in a ``send_message_batch`` (``index`` into the bodies sent)."""

    index: int
    code: str
    message: str
    sender_fault: bool


class SendBatchFailed(IntegrationError):
    """Some messages of a ``send_batch`` were not sent.

    ``message_ids`` has one slot per body: the id for those that were sent, ``None`` for the
    failed ones, so the caller can resend exactly the failures. Retryable when no failure was
    the sender's fault.
    """

    def __init__(self, failures: Sequence[SendFailure], message_ids: list[str | None]) -> None:
        self.failures = tuple(failures)
        self.message_ids = message_ids
        named = "; ".join(f"#{f.index} {f.code}: {f.message}" for f in self.failures[:5])
        more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        super().__init__(
            VENDOR,
            f"{len(self.failures)} of {len(message_ids)} messages were not sent: {named}{more}",
            code=self.failures[0].code if self.failures else None,
        )
        self.retryable = not any(f.sender_fault for f in self.failures)


def _queue_name(queue_url: str) -> str:
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def _string_attributes(attributes: Mapping[str, str]) -> dict[str, MessageAttributeValueTypeDef]:
    return {
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
    }


class SqsQueue(MessageQueue):
    """One SQS standard queue.

    Pass ``client`` (tests, or a shared client), or the connection settings from which
    :func:`make_sqs_client` builds one lazily. ``visibility_timeout`` is the default for
    ``receive`` (``None``: the queue's own setting). ``dlq_url`` may be left out when the queue
    has a redrive policy.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        client: SQSClient | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        dlq_url: str | None = None,
        visibility_timeout: int | None = None,
    ) -> None:
        self.queue_url = queue_url
        self.name = _queue_name(queue_url)
        self.visibility_timeout = (
            None if visibility_timeout is None else check_visibility(visibility_timeout)
        )
        self._client = client
        self._make_client = functools.partial(
            make_sqs_client,
            region_name=region_name,
            endpoint_url=endpoint_url,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
        )
        self._dlq_url = dlq_url
        self._lock = threading.Lock()

    @property
    def client(self) -> SQSClient:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    # -- sending -------------------------------------------------------------------------

    def send(self, body: str, *, attributes: Mapping[str, str] | None = None) -> str:
        attrs = check_user_attributes(attributes)
        with translated("SendMessage"):
            if attrs:
                answer = self.client.send_message(
                    QueueUrl=self.queue_url,
                    MessageBody=body,
                    MessageAttributes=_string_attributes(attrs),
                )
            else:
                answer = self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)
        return answer["MessageId"]

    def send_batch(self, bodies: Sequence[str]) -> list[str]:
        """Send in batches of at most 10 (and 1 MiB); every batch is tried.

        Raises :class:`SendBatchFailed` afterwards if any entry failed; the messages that
        were sent stay sent (SQS has no transactions). If a whole call fails (after botocore's
        retries) its typed error is raised at once and earlier batches stay sent, so sending
        everything again duplicates them, which at-least-once consumers must tolerate anyway.
        """
        ids: list[str | None] = [None] * len(bodies)
        failures: list[SendFailure] = []
        for batch in batches(bodies):
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(index), "MessageBody": body} for index, body in batch
            ]
            with translated("SendMessageBatch"):
                answer = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for ok in answer.get("Successful", []):
                ids[int(ok["Id"])] = ok["MessageId"]
            reported = {int(failed["Id"]): failed for failed in answer.get("Failed", [])}
            for index, _body in batch:
                if index in reported:
                    failed = reported[index]
                    failures.append(
                        SendFailure(
                            index, failed["Code"], failed.get("Message", ""), failed["SenderFault"]
                        )
                    )
                elif ids[index] is None:
                    failures.append(
                        SendFailure(index, "NoAnswer", "SQS did not report on this entry", False)
                    )
        if failures:
            raise SendBatchFailed(failures, ids)
        return [message_id for message_id in ids if message_id is not None]

    # -- receiving -----------------------------------------------------------------------

    def receive(
        self,
        max_messages: int = MAX_RECEIVE,
        *,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[QueueMessage]:
        """Up to 10 messages, long-polling up to ``wait_seconds`` (at most 20, rounded up)."""
        visibility = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        request: ReceiveMessageRequestTypeDef = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": receive_limit(max_messages),
            "WaitTimeSeconds": math.ceil(wait_limit(wait_seconds)),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
            "MessageAttributeNames": ["All"],
        }
        if visibility is not None:
            request["VisibilityTimeout"] = check_visibility(visibility)
        with translated("ReceiveMessage"):
            answer = self.client.receive_message(**request)
        return [self._message(raw) for raw in answer.get("Messages", [])]

    @staticmethod
    def _message(raw: MessageTypeDef) -> QueueMessage:
        attributes: dict[str, str] = {}
        for name, value in raw.get("MessageAttributes", {}).items():
            if "StringValue" in value:
                attributes[name] = value["StringValue"]
            elif "BinaryValue" in value:
                attributes[name] = base64.b64encode(value["BinaryValue"]).decode()
        system = raw.get("Attributes", {})
        if "SentTimestamp" in system:
            attributes[SENT_TIMESTAMP] = system["SentTimestamp"]
        return QueueMessage(
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw["Body"],
            receive_count=int(system.get("ApproximateReceiveCount", "1")),
            attributes=attributes,
        )

    # -- deleting, visibility ------------------------------------------------------------

    def delete(self, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        """Delete in batches of 10; return every entry SQS reported as failed.

        Deleting again with the same (latest) handle succeeds, as SQS does.
        """
        failures: list[DeleteFailure] = []
        for chunk in chunks(receipt_handles):
            with translated("DeleteMessageBatch"):
                answer = self.client.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)
                    ],
                )
            answered = {ok["Id"] for ok in answer.get("Successful", [])}
            for failed in answer.get("Failed", []):
                answered.add(failed["Id"])
                failures.append(
                    DeleteFailure(
                        receipt_handle=chunk[int(failed["Id"])],
                        code=failed["Code"],
                        message=failed.get("Message", ""),
                    )
                )
            failures.extend(
                DeleteFailure(handle, "NoAnswer", "SQS did not report on this entry")
                for i, handle in enumerate(chunk)
                if str(i) not in answered
            )
        return failures

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        with translated("ChangeMessageVisibility"):
            self.client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=check_visibility(seconds),
            )

    # -- dead letters ----------------------------------------------------------------------

    def dead_letter_queue_url(self) -> str:
        """The DLQ's URL: as configured, or found once through the queue's redrive policy."""
        with self._lock:
            known = self._dlq_url
        if known is not None:
            return known
        with translated("GetQueueAttributes"):
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
        if "RedrivePolicy" not in attrs:
            raise RequestRejected(
                VENDOR, f"queue {self.name} has no redrive policy, so no dead-letter queue"
            )
        arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
        # arn:aws:sqs:<region>:<account>:<name>
        _, _, _, _, account, dlq_name = arn.split(":", 5)
        with translated("GetQueueUrl"):
            url = self.client.get_queue_url(QueueName=dlq_name, QueueOwnerAWSAccountId=account)[
                "QueueUrl"
            ]
        with self._lock:
            self._dlq_url = url
        return url

    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        """Send a copy to the DLQ with ``reason``, then delete the original.

        Not atomic: if the delete fails (the handle is stale because the message was received
        again) the copy stays in the DLQ and :class:`RequestRejected` is raised, naming the
        failure; the original will be delivered again.
        """
        attrs = dead_letter_attributes(
            message.attributes,
            reason=reason,
            source_queue=self.name,
            message_id=message.message_id,
        )
        with translated("SendMessage"):
            self.client.send_message(
                QueueUrl=self.dead_letter_queue_url(),
                MessageBody=message.body,
                MessageAttributes=_string_attributes(attrs),
            )
        for failure in self.delete([message.receipt_handle]):
            raise RequestRejected(
                VENDOR,
                f"message {message.message_id} was copied to the dead-letter queue but not "
                f"deleted from {self.name}: {failure.message}",
                code=failure.code,
            )

    # -- inspection ------------------------------------------------------------------------

    def approximate_depth(self) -> int:
        with translated("GetQueueAttributes"):
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            ).get("Attributes", {})
        return int(attrs["ApproximateNumberOfMessages"])

    def purge(self) -> None:
        """Delete every message (SQS allows one purge per 60 s; a second raises Conflict)."""
        with translated("PurgeQueue"):
            self.client.purge_queue(QueueUrl=self.queue_url)
