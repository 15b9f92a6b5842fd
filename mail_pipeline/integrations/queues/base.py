"""The queue contract, shaped after SQS so the local queue and SQS are interchangeable.

- ``receive`` returns at most 10 messages and hides them for the visibility timeout; a
  message not deleted in time becomes visible again (at-least-once delivery).
- ``delete`` takes receipt handles and reports the ones that failed (SQS answers HTTP 200
  on partial failure; the caller must look).
- A message received more than ``max_receive_count`` times moves to the dead-letter queue
  (SQS redrive policy); ``dead_letter`` moves one there at once, with a reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_RECEIVE = 10
#: Deliveries of a message before the redrive policy moves it to the dead-letter queue (SQS
#: ``maxReceiveCount``). The one value the queues are set up with (``LocalQueue``,
#: ``LocalQueues``, :func:`~mail_pipeline.integrations.queues.sqs_setup.ensure_queue_with_dlq`)
#: and that consumers assume when they decide a delivery is a message's last.
MAX_RECEIVE_COUNT = 5


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int = 1
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeleteFailure:
    receipt_handle: str
    code: str
    message: str


class MessageQueue(ABC):
    name: str

    @abstractmethod
    def send(self, body: str, *, attributes: Mapping[str, str] | None = None) -> str:
        """Enqueue one message; return its message id."""

    @abstractmethod
    def send_batch(self, bodies: Sequence[str]) -> list[str]:
        """Enqueue many (sent 10 per call); return the message ids."""

    @abstractmethod
    def receive(
        self,
        max_messages: int = MAX_RECEIVE,
        *,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[QueueMessage]: ...

    @abstractmethod
    def delete(self, receipt_handles: Sequence[str]) -> list[DeleteFailure]: ...

    @abstractmethod
    def change_visibility(self, receipt_handle: str, seconds: int) -> None: ...

    @abstractmethod
    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        """Move a message to the dead-letter queue now, with ``reason`` attached."""

    @abstractmethod
    def approximate_depth(self) -> int:
        """Visible messages, approximately (SQS ``ApproximateNumberOfMessages``)."""
