"""The world of the queue-fault suite: the status queue on SQS (moto) or the local queue, a
campaign whose Lob pieces the webhooks move, faults injected where each queue really fails,
and a watch on every delete.

Faults are injected below the code under test, so the calls it makes are the real ones:

- SQS: a handler on botocore's ``before-send`` event answers chosen calls with an SQS error
  (throttling, 500, 503) instead of moto. botocore's own retry logic (standard mode, as
  :func:`~mail_pipeline.integrations.queues.sqs_setup.make_sqs_client` configures it) sees
  the error as it would see SQS's, so a fault that lasts fewer attempts than the retry budget
  is absorbed there. A fault is either *refused* (SQS did nothing: the request never reaches
  moto) or *lost* (moto acted, then the answer became an error: the receive hid messages, the
  delete deleted them).
- Local queue: its SQLite file is held write-locked by another connection during the chosen
  operation, as another process's long transaction would. *Persistent*: the operation's busy
  timeout is cut short so it gives up; *transient*: the lock is let go a moment later, within
  the busy timeout, and the operation waits and succeeds (the local queue's retry).

Time is a fake clock on both queues (moto's SQS clock is patched to it), so a visibility
timeout expires at once, without sleeping.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from botocore.awsrequest import AWSResponse
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.models import Mailpiece, MailpieceEvent, Recipient
from mail_pipeline.domain.campaigns import Postage
from mail_pipeline.domain.mailpieces import MailpieceStatus as M
from mail_pipeline.domain.recipients import RecipientStatus as R
from mail_pipeline.integrations.printers.base import Printer
from mail_pipeline.integrations.queues.base import DeleteFailure, MessageQueue, QueueMessage
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.services.status_tracking import StatusRunResult, process_status_queue
from tests.signed_webhooks import lob_event, lob_message, signing_printers

#: Seconds a received message stays hidden (the consumer asks for it on every receive).
VISIBILITY = 120
#: Receives before the redrive policy moves a message to the DLQ (queue and consumer agree).
MAX_RECEIVES = 3
PIECES = 6
IN_TRANSIT_AT = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
DELIVERED_AT = datetime(2025, 3, 2, 15, 30, tzinfo=UTC)

Kind = Literal["sqs", "local"]
Operation = Literal["receive", "delete", "dead_letter"]


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def millis(self) -> float:
        return self.now * 1000

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WorkerKilled(BaseException):
    """The run's process dying mid-pass (OOM kill, lost node, run terminated; Dagster's own
    interrupt is a ``BaseException`` too): no ``except Exception`` handler sees it, only
    context managers unwind (the transaction rolls back)."""


# -- the mail the webhooks are about -------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """``PIECES`` Sent recipients, each with a Lob piece (created), and two webhooks per piece
    (in transit, then delivered): ``2 * PIECES`` messages, more than one receive page."""

    db_url: str
    #: message body -> the provider event ids it carries.
    events_of: Mapping[str, frozenset[str]]

    @property
    def messages(self) -> list[str]:
        return list(self.events_of)

    @property
    def event_ids(self) -> set[str]:
        return {event for events in self.events_of.values() for event in events}


def make_mail(db_url: str, make_campaign: Any, add_recipients: Any) -> Mail:
    _, campaign_id = make_campaign()
    ids = add_recipients(campaign_id, PIECES, R.SENT, sent_at=datetime.now(UTC))
    with unit_of_work(db_url) as session:
        for i, recipient_id in enumerate(ids):
            recipient = session.get_one(Recipient, recipient_id)
            session.add(
                Mailpiece(
                    recipient_id=recipient_id,
                    organization_id=recipient.organization_id,
                    campaign_id=recipient.campaign_id,
                    printer="lob",
                    idempotency_key=f"faults-lob-{recipient_id:06d}",
                    provider_piece_id=f"psc_fault_{i}",
                    status=M.CREATED,
                    postage=Postage.FIRST_CLASS,
                )
            )
    events: dict[str, frozenset[str]] = {}
    for i in range(PIECES):
        for event_id, event_type, at in (
            (f"evt_transit_{i}", "postcard.in_transit", IN_TRANSIT_AT),
            (f"evt_delivered_{i}", "postcard.delivered", DELIVERED_AT),
        ):
            body = lob_message(lob_event(event_id, f"psc_fault_{i}", event_type, at.isoformat()))
            events[body] = frozenset({event_id})
    return Mail(db_url, events)


Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(db_url: str) -> Snapshot:
    """Every row the status consumer writes, with every timestamp it sets."""
    with unit_of_work(db_url) as session:
        return {
            "events": [
                tuple(row)
                for row in session.execute(
                    sa.select(
                        MailpieceEvent.id,
                        MailpieceEvent.mailpiece_id,
                        MailpieceEvent.printer,
                        MailpieceEvent.provider_event_id,
                        MailpieceEvent.status,
                        MailpieceEvent.occurred_at,
                        MailpieceEvent.created_at,
                    ).order_by(MailpieceEvent.id)
                )
            ],
            "pieces": [
                tuple(row)
                for row in session.execute(
                    sa.select(
                        Mailpiece.id,
                        Mailpiece.status,
                        Mailpiece.last_event_at,
                        Mailpiece.delivered_at,
                        Mailpiece.updated_at,
                    ).order_by(Mailpiece.id)
                )
            ],
            "recipients": [
                tuple(row)
                for row in session.execute(
                    sa.select(
                        Recipient.id,
                        Recipient.status,
                        Recipient.received_at,
                        Recipient.status_reason,
                        Recipient.status_changed_at,
                        Recipient.updated_at,
                    ).order_by(Recipient.id)
                )
            ],
        }


def assert_applied_once(mail: Mail, *, extra_events: Iterable[str] = ()) -> Snapshot:
    """Every event of the mail (and ``extra_events``) recorded exactly once, every piece
    delivered at the printer's delivery time, every recipient Received at that time, without
    a reason; returns the snapshot, which a replay must leave as it is."""
    state = snapshot(mail.db_url)
    recorded = Counter(row[3] for row in state["events"])
    assert set(recorded) == mail.event_ids | set(extra_events)
    assert set(recorded.values()) == {1}, recorded
    assert [row[1:4] for row in state["pieces"]] == [
        (M.DELIVERED, DELIVERED_AT, DELIVERED_AT)
    ] * PIECES
    assert [row[1:4] for row in state["recipients"]] == [(R.RECEIVED, DELIVERED_AT, None)] * PIECES
    return state


def assert_nothing_applied(mail: Mail) -> None:
    state = snapshot(mail.db_url)
    assert state["events"] == []
    assert {row[1] for row in state["pieces"]} == {M.CREATED}
    assert {row[1] for row in state["recipients"]} == {R.SENT}


# -- the watch on deletes --------------------------------------------------------------------


@dataclass
class DeleteWatch:
    """Checks, at the moment a consumer deletes messages, that each one's events are
    committed (read through a separate connection); records every violation."""

    mail: Mail
    bodies: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    early: list[str] = field(default_factory=list)

    def received(self, messages: Sequence[QueueMessage]) -> None:
        for message in messages:
            self.bodies[message.receipt_handle] = message.body

    def deleting(self, handles: Sequence[str]) -> None:
        bodies = [self.bodies[h] for h in handles]
        wanted = {e for body in bodies for e in self.mail.events_of.get(body, ())}
        with unit_of_work(self.mail.db_url) as session:
            committed = set(
                session.scalars(
                    sa.select(MailpieceEvent.provider_event_id).where(
                        MailpieceEvent.provider_event_id.in_(wanted)
                    )
                )
            )
        for body in bodies:
            self.deleted.append(body)
            if not self.mail.events_of.get(body, frozenset()) <= committed:
                self.early.append(body)


class Watched(MessageQueue):
    """One consumer's view of a queue: the real queue, with its receives and deletes reported
    to the :class:`DeleteWatch`; ``on_receive`` is called after each receive, ``before_delete``
    before each delete."""

    def __init__(
        self,
        queue: MessageQueue,
        watch: DeleteWatch,
        on_receive: Callable[[list[QueueMessage]], None] | None = None,
        before_delete: Callable[[], None] | None = None,
    ) -> None:
        self.inner = queue
        self.name = queue.name
        self.watch = watch
        self.on_receive = on_receive
        self.before_delete = before_delete

    def send(self, body: str, *, attributes: Mapping[str, str] | None = None) -> str:
        return self.inner.send(body, attributes=attributes)

    def send_batch(self, bodies: Sequence[str]) -> list[str]:
        return self.inner.send_batch(bodies)

    def receive(
        self,
        max_messages: int = 10,
        *,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[QueueMessage]:
        messages = self.inner.receive(
            max_messages, wait_seconds=wait_seconds, visibility_timeout=visibility_timeout
        )
        self.watch.received(messages)
        if self.on_receive is not None:
            self.on_receive(messages)
        return messages

    def delete(self, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        if self.before_delete is not None:
            self.before_delete()
        self.watch.deleting(receipt_handles)
        return self.inner.delete(receipt_handles)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.inner.change_visibility(receipt_handle, seconds)

    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        self.inner.dead_letter(message, reason)

    def approximate_depth(self) -> int:
        return self.inner.approximate_depth()


# -- SQS faults (botocore before-send) -------------------------------------------------------


class _Raw:
    """An HTTP body for :class:`AWSResponse`."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


@dataclass(frozen=True)
class SqsError:
    code: str
    status: int
    message: str


THROTTLED = SqsError("ThrottlingException", 400, "Rate exceeded")
INTERNAL_ERROR = SqsError("InternalError", 500, "We encountered an internal error.")
UNAVAILABLE = SqsError("ServiceUnavailable", 503, "Service is unavailable. Try again later.")

_OPERATIONS: dict[Operation, str] = {
    "receive": "ReceiveMessage",
    "delete": "DeleteMessageBatch",
    "dead_letter": "SendMessage",
}


@dataclass
class _Rule:
    operation: str
    error: SqsError
    attempts: int | None
    skip: int
    queue_url: str | None
    lost: bool
    seen: int = 0
    failed: int = 0

    def applies(self, operation: str, queue_url: str) -> bool:
        return operation == self.operation and self.queue_url in (None, queue_url)

    def fires(self) -> bool:
        """Whether this attempt fails (counts the attempt)."""
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.attempts is not None and self.failed >= self.attempts:
            return False
        self.failed += 1
        return True


class SqsFaults:
    """Answers chosen SQS calls with an error at the HTTP layer (see the module)."""

    def __init__(self, client: Any) -> None:
        self.rules: list[_Rule] = []
        #: Every attempt on the wire: ``(operation, queue url, failed)``.
        self.attempts: list[tuple[str, str, bool]] = []
        client.meta.events.register("before-send.sqs", self._before_send)

    def fail(
        self,
        operation: str,
        error: SqsError,
        *,
        attempts: int | None = None,
        skip: int = 0,
        queue_url: str | None = None,
        lost: bool = False,
    ) -> _Rule:
        """Fail ``attempts`` attempts (``None``: every one) of ``operation`` (an SQS action
        name), after letting ``skip`` through; only those to ``queue_url`` if given. ``lost``:
        SQS acted before the answer failed."""
        rule = _Rule(operation, error, attempts, skip, queue_url, lost)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def count(self, operation: str, *, failed: bool | None = None) -> int:
        return sum(1 for op, _, f in self.attempts if op == operation and failed in (None, f))

    def _before_send(self, request: Any, **_: Any) -> AWSResponse | None:
        operation = request.headers.get("X-Amz-Target", b"")
        if isinstance(operation, bytes):
            operation = operation.decode()
        operation = operation.rsplit(".", 1)[-1]
        body = request.body or b"{}"
        queue_url = json.loads(body.decode() if isinstance(body, bytes) else body).get(
            "QueueUrl", ""
        )
        for rule in self.rules:
            if rule.applies(operation, queue_url) and rule.fires():
                self.attempts.append((operation, queue_url, True))
                if not rule.lost:
                    # Every before-send handler runs; moto's (registered after this one)
                    # ignores a request for a host it does not serve, so SQS does nothing.
                    request.url = "https://fault-injected.invalid/"
                error = rule.error
                payload = json.dumps(
                    {"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message}
                ).encode()
                return AWSResponse(
                    request.url,
                    error.status,
                    {
                        "x-amzn-query-error": f"{error.code};"
                        f"{'Sender' if error.status < 500 else 'Receiver'}",
                        "content-type": "application/x-amz-json-1.0",
                    },
                    _Raw(payload),
                )
        self.attempts.append((operation, queue_url, False))
        return None


# -- local queue faults (a locked SQLite file) -----------------------------------------------


@dataclass
class _LocalRule:
    operation: Operation
    persistent: bool
    skip: int
    attempts: int | None
    seen: int = 0
    failed: int = 0

    def fires(self) -> bool:
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.attempts is not None and self.failed >= self.attempts:
            return False
        self.failed += 1
        return True


class LocalFaults:
    """Holds the local queues' SQLite file write-locked during chosen operations (see the
    module). The rules count calls across every consumer's queue object."""

    #: How long a transient lock lasts: far inside the queue's 30 s busy timeout.
    TRANSIENT_SECONDS = 0.2
    #: The busy timeout (ms) of an operation that is to give up, and the usual one.
    GIVE_UP_MS = 50
    BUSY_MS = 30_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rules: list[_LocalRule] = []
        self.locked: Counter[str] = Counter()

    def fail(
        self, operation: Operation, *, persistent: bool, skip: int, attempts: int | None
    ) -> None:
        self.rules.append(_LocalRule(operation, persistent, skip, attempts))

    def clear(self) -> None:
        self.rules.clear()

    def attach(self, queue: LocalQueue) -> None:
        """Route this queue object's receive, delete and dead_letter through the rules."""
        for operation in ("receive", "delete", "dead_letter"):
            real = getattr(queue, operation)

            def faulty(*args: Any, _real: Any = real, _op: str = operation, **kw: Any) -> Any:
                rule = next((r for r in self.rules if r.operation == _op and r.fires()), None)
                if rule is None:
                    return _real(*args, **kw)
                with self._locked(queue, _op, persistent=rule.persistent):
                    return _real(*args, **kw)

            setattr(queue, operation, faulty)

    @contextmanager
    def _locked(self, queue: LocalQueue, operation: str, *, persistent: bool) -> Iterator[None]:
        self.locked[operation] += 1
        holder = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        done = threading.Lock()

        def release() -> None:
            if done.acquire(blocking=False):
                holder.execute("ROLLBACK")
                holder.close()

        if persistent:
            queue.database.conn.execute(f"PRAGMA busy_timeout={self.GIVE_UP_MS}")
            try:
                yield
            finally:
                queue.database.conn.execute(f"PRAGMA busy_timeout={self.BUSY_MS}")
                release()
            return
        timer = threading.Timer(self.TRANSIENT_SECONDS, release)
        timer.start()
        try:
            yield
        finally:
            timer.join()
            release()


# -- the world -------------------------------------------------------------------------------


@dataclass
class World:
    """The status queue of one kind, its consumers, the mail, and the faults."""

    kind: Kind
    mail: Mail
    clock: FakeClock
    watch: DeleteWatch
    #: A new queue object on the status queue: SQS, on the shared (fault-injected) client;
    #: local, with its own connection to the queue file, as another process would have.
    make_queue: Callable[[], MessageQueue]
    sqs: SqsFaults | None = None
    local: LocalFaults | None = None
    client: Any = None
    queue_url: str = ""
    dlq_url: str = ""
    printers: dict[str, Printer] = field(default_factory=signing_printers)
    opened: list[MessageQueue] = field(default_factory=list)

    @property
    def sessions(self) -> SessionFactory:
        return partial(unit_of_work, self.mail.db_url)

    def _queue(self) -> MessageQueue:
        queue = self.make_queue()
        self.opened.append(queue)
        return queue

    def consumer(
        self,
        on_receive: Callable[[list[QueueMessage]], None] | None = None,
        before_delete: Callable[[], None] | None = None,
    ) -> Watched:
        """A consumer's queue object, watched, and subject to the faults."""
        queue = self._queue()
        if self.local is not None:
            assert isinstance(queue, LocalQueue)
            self.local.attach(queue)
        return Watched(queue, self.watch, on_receive, before_delete)

    def run(
        self,
        queue: MessageQueue | None = None,
        sessions: Callable[[], AbstractContextManager[Session]] | None = None,
    ) -> StatusRunResult:
        """One pass of the status consumer, as the status job makes it."""
        return process_status_queue(
            sessions or self.sessions,
            queue or self.consumer(),
            self.printers,
            visibility_timeout=VISIBILITY,
            max_receive_count=MAX_RECEIVES,
        )

    def send(self, bodies: Sequence[str]) -> None:
        self._queue().send_batch(bodies)

    def expire(self) -> None:
        """Let every visibility timeout run out."""
        self.clock.advance(VISIBILITY + 1)

    def held(self) -> int:
        """Messages in the main queue, visible or in flight."""
        if self.kind == "sqs":
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"]) + int(
                attrs["ApproximateNumberOfMessagesNotVisible"]
            )
        queue = self._local()
        with queue.database.reading() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM queue_messages WHERE queue = ?", (queue.name,)
            ).fetchone()
        return int(row[0])

    def dead_letters(self) -> list[tuple[str, str | None]]:
        """``(body, reason)`` of each message in the DLQ; the reason is the one the consumer
        gave, ``None`` for a message the redrive policy moved there."""
        if self.kind == "local":
            return [(d.body, d.attributes.get("reason")) for d in self._local().dead_letters()]
        found: list[tuple[str, str | None]] = []
        while messages := self.client.receive_message(
            QueueUrl=self.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=VISIBILITY,
            MessageAttributeNames=["All"],
        ).get("Messages", []):
            for m in messages:
                reason = m.get("MessageAttributes", {}).get("reason", {}).get("StringValue")
                found.append((m["Body"], reason))
        # Visible again in the DLQ, as they were (a main-queue message hidden now is hidden
        # for longer than this anyway: every test lets timeouts run out with ``expire``).
        self.clock.advance(VISIBILITY + 1)
        return found

    def move_back_from_dlq(self) -> int:
        """What an operator does once the cause is fixed: every DLQ message back to the queue
        (SQS ``StartMessageMoveTask``, which moto lacks: here by hand)."""
        if self.kind == "local":
            return self._local().redrive_dead_letters()
        moved = 0
        while messages := self.client.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=VISIBILITY
        ).get("Messages", []):
            self._queue().send_batch([m["Body"] for m in messages])
            self.client.delete_message_batch(
                QueueUrl=self.dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            moved += len(messages)
        return moved

    def fail(
        self,
        operation: Operation,
        *,
        persistent: bool,
        error: SqsError = UNAVAILABLE,
        skip: int = 0,
        attempts: int | None = None,
        lost: bool = False,
    ) -> None:
        """Make the consumers' ``operation`` fail from now on (see the module), after
        ``skip`` calls.

        SQS: ``persistent`` fails every attempt, past botocore's retries; otherwise
        ``attempts`` attempts (default 1), which the retries absorb. ``dead_letter`` fails
        the send to the DLQ only. Local: the file is locked during the operation, until it
        gives up (``persistent``) or for a moment (it waits and succeeds).
        """
        if self.sqs is not None:
            self.sqs.fail(
                _OPERATIONS[operation],
                error,
                attempts=None if persistent else (attempts or 1),
                skip=skip,
                queue_url=self.dlq_url if operation == "dead_letter" else self.queue_url,
                lost=lost,
            )
            return
        assert self.local is not None
        if lost:
            raise ValueError("a lost answer is an SQS fault: the local queue answers in-process")
        self.local.fail(
            operation,
            persistent=persistent,
            skip=skip,
            attempts=None if persistent else (attempts or 1),
        )

    def heal(self) -> None:
        """Every fault is over."""
        if self.sqs is not None:
            self.sqs.clear()
        if self.local is not None:
            self.local.clear()

    def close(self) -> None:
        for queue in self.opened:
            if isinstance(queue, LocalQueue):
                queue.close()

    def _local(self) -> LocalQueue:
        queue = self._queue()
        assert isinstance(queue, LocalQueue)
        return queue
