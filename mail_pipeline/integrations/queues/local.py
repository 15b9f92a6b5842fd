"""A durable local queue with SQS semantics, for local development and tests.

It behaves as an SQS standard queue with a redrive policy does, so the same pipeline code
runs against either:

- ``receive`` returns at most 10 messages, hides them for the visibility timeout and gives
  each receive a fresh receipt handle; the receive count goes up by one each time.
- A message that has already been received ``max_receive_count`` times moves to the
  dead-letter queue instead of being delivered again.
- ``delete`` works only with a message's latest receipt handle; any other handle is reported
  as ``DeleteFailure(code="ReceiptHandleIsInvalid")``. Deleting twice with the same (latest)
  handle succeeds, as on SQS.
- ``wait_seconds`` long-polls: it checks again every ``poll_interval`` until a message is
  visible or the wait is over.
- The file being unusable - write-locked by another process for longer than the busy timeout,
  unreadable, full - raises :class:`~mail_pipeline.integrations.errors.VendorUnavailable`, as
  SQS's 5xx does after the client's retries (the busy timeout is the local queue's retry). So
  a consumer treats both queues' outages alike: a message it could not delete or move to the
  DLQ stays in the queue and comes back, instead of the pass failing half-way.

Messages live in an SQLite file shared by all processes (see
:mod:`~mail_pipeline.integrations.queues.local_db`); the DLQ is another queue in the same
file. Unlike SQS the local queue delivers in send order and never delivers a message twice
while it is hidden.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mail_pipeline.integrations.errors import RequestRejected, VendorUnavailable
from mail_pipeline.integrations.queues.base import (
    MAX_RECEIVE,
    MAX_RECEIVE_COUNT,
    DeleteFailure,
    MessageQueue,
    QueueMessage,
)
from mail_pipeline.integrations.queues.conventions import (
    DEAD_LETTER_ATTRIBUTES,
    SENT_TIMESTAMP,
    check_message,
    check_user_attributes,
    check_visibility,
    dead_letter_attributes,
    receive_limit,
    wait_limit,
)
from mail_pipeline.integrations.queues.local_db import QueueDatabase

VENDOR = "local queue"
#: Deleted receipt handles are remembered this long, so a repeated delete still succeeds.
DELETED_HANDLE_MEMORY_SECONDS = 900

_INVALID_HANDLE = "ReceiptHandleIsInvalid"


@dataclass(frozen=True)
class DeadLetter:
    """A message waiting in a dead-letter queue, and why it is there (for operators)."""

    message_id: str
    body: str
    reason: str
    source_queue: str
    original_message_id: str
    receive_count: int
    dead_lettered_at: float
    attributes: Mapping[str, str] = field(default_factory=dict)


class LocalQueue(MessageQueue):
    """One named queue in a :class:`QueueDatabase` (or an SQLite path, or ``":memory:"``).

    ``visibility_timeout`` is the default for ``receive``. ``dead_letter_queue`` names the
    DLQ in the same database (``"{name}"`` is replaced by this queue's name; ``None`` for no
    DLQ, which also means no redrive). ``max_receive_count=None`` turns redrive off while
    keeping ``dead_letter``. ``clock`` (epoch seconds) and ``sleep`` are injectable so tests
    can expire visibility timeouts and long polls without waiting.
    """

    def __init__(
        self,
        database: QueueDatabase | str | Path = ":memory:",
        name: str = "default",
        *,
        visibility_timeout: int = 30,
        max_receive_count: int | None = MAX_RECEIVE_COUNT,
        dead_letter_queue: str | None = "{name}-dlq",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.05,
    ) -> None:
        if dead_letter_queue is None and max_receive_count is not None:
            raise ValueError("max_receive_count needs a dead_letter_queue to move messages to")
        if max_receive_count is not None and max_receive_count < 1:
            raise ValueError(f"max_receive_count must be at least 1, got {max_receive_count}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.database = database if isinstance(database, QueueDatabase) else QueueDatabase(database)
        self.name = name
        self.visibility_timeout = check_visibility(visibility_timeout)
        self.max_receive_count = max_receive_count
        self.dead_letter_queue = (
            None if dead_letter_queue is None else dead_letter_queue.format(name=name)
        )
        if self.dead_letter_queue == name:
            raise ValueError("a queue cannot be its own dead-letter queue")
        self.poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._dlq: LocalQueue | None = None

    def dlq(self) -> LocalQueue:
        """The dead-letter queue, as a queue of its own (same database, clock and timeout)."""
        if self.dead_letter_queue is None:
            raise RequestRejected(VENDOR, f"queue {self.name} has no dead-letter queue")
        if self._dlq is None:
            self._dlq = LocalQueue(
                self.database,
                self.dead_letter_queue,
                visibility_timeout=self.visibility_timeout,
                max_receive_count=None,
                dead_letter_queue=None,
                clock=self._clock,
                sleep=self._sleep,
                poll_interval=self.poll_interval,
            )
        return self._dlq

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the queue file (see the module on an unusable file)."""
        try:
            with self.database.transaction() as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise VendorUnavailable(VENDOR, f"queue {self.name} is unavailable: {exc}") from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.database.reading() as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            raise VendorUnavailable(VENDOR, f"queue {self.name} is unavailable: {exc}") from exc

    # -- sending -------------------------------------------------------------------------

    def send(self, body: str, *, attributes: Mapping[str, str] | None = None) -> str:
        attrs = check_user_attributes(attributes)
        check_message(VENDOR, body, attrs)
        message_id = str(uuid.uuid4())
        with self._writing() as conn:
            self._insert(conn, message_id, body, attrs)
        return message_id

    def send_batch(self, bodies: Sequence[str]) -> list[str]:
        """Enqueue all bodies in one transaction: every one is sent, or (if one is invalid)
        none is."""
        for body in bodies:
            check_message(VENDOR, body, {})
        ids = [str(uuid.uuid4()) for _ in bodies]
        with self._writing() as conn:
            for message_id, body in zip(ids, bodies, strict=True):
                self._insert(conn, message_id, body, {})
        return ids

    def _insert(
        self, conn: sqlite3.Connection, message_id: str, body: str, attrs: Mapping[str, str]
    ) -> None:
        now = self._clock()
        conn.execute(
            "INSERT INTO queue_messages (queue, message_id, body, attributes, sent_at, "
            "visible_at) VALUES (?, ?, ?, ?, ?, ?)",
            (self.name, message_id, body, json.dumps(dict(attrs)), now, now),
        )

    # -- receiving -----------------------------------------------------------------------

    def receive(
        self,
        max_messages: int = MAX_RECEIVE,
        *,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[QueueMessage]:
        """Up to 10 visible messages, long-polling up to ``wait_seconds`` (at most 20)."""
        limit = receive_limit(max_messages)
        wait = wait_limit(wait_seconds)
        hide_for = check_visibility(
            self.visibility_timeout if visibility_timeout is None else visibility_timeout
        )
        messages = self._receive_once(limit, hide_for)
        waited = 0.0
        while not messages and waited < wait:
            step = min(self.poll_interval, wait - waited)
            self._sleep(step)
            waited += step
            messages = self._receive_once(limit, hide_for)
        return messages

    def _receive_once(self, limit: int, hide_for: int) -> list[QueueMessage]:
        taken: list[QueueMessage] = []
        with self._writing() as conn:
            now = self._clock()
            after = 0
            while len(taken) < limit:
                rows = conn.execute(
                    "SELECT seq, message_id, body, attributes, sent_at, receive_count "
                    "FROM queue_messages WHERE queue = ? AND visible_at <= ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (self.name, now, after, limit - len(taken)),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    after = row["seq"]
                    if self._exhausted(row["receive_count"]):
                        self._redrive(conn, row, now)
                        continue
                    taken.append(self._take(conn, row, now, hide_for))
        return taken

    def _exhausted(self, receive_count: int) -> bool:
        return self.max_receive_count is not None and receive_count >= self.max_receive_count

    def _redrive(self, conn: sqlite3.Connection, row: sqlite3.Row, now: float) -> None:
        """Move a message received ``max_receive_count`` times to the DLQ, as SQS does:
        same message id, body, attributes and receive count."""
        conn.execute(
            "UPDATE queue_messages SET queue = ?, visible_at = ?, receipt_handle = NULL, "
            "dead_letter_reason = ?, dead_letter_source = ?, dead_letter_original_id = ?, "
            "dead_lettered_at = ? WHERE seq = ?",
            (
                self.dead_letter_queue,
                now,
                f"received {row['receive_count']} times (max_receive_count "
                f"{self.max_receive_count})",
                self.name,
                row["message_id"],
                now,
                row["seq"],
            ),
        )

    def _take(
        self, conn: sqlite3.Connection, row: sqlite3.Row, now: float, hide_for: int
    ) -> QueueMessage:
        handle = secrets.token_urlsafe(32)
        count = row["receive_count"] + 1
        conn.execute(
            "UPDATE queue_messages SET receive_count = ?, receipt_handle = ?, visible_at = ? "
            "WHERE seq = ?",
            (count, handle, now + hide_for, row["seq"]),
        )
        attributes = json.loads(row["attributes"])
        attributes[SENT_TIMESTAMP] = str(int(row["sent_at"] * 1000))
        return QueueMessage(
            message_id=row["message_id"],
            receipt_handle=handle,
            body=row["body"],
            receive_count=count,
            attributes=attributes,
        )

    # -- deleting, visibility ------------------------------------------------------------

    def delete(self, receipt_handles: Sequence[str]) -> list[DeleteFailure]:
        """Delete by latest receipt handle; report every other handle as a failure."""
        failures: list[DeleteFailure] = []
        with self._writing() as conn:
            now = self._clock()
            conn.execute(
                "DELETE FROM queue_deleted_receipts WHERE deleted_at < ?",
                (now - DELETED_HANDLE_MEMORY_SECONDS,),
            )
            for handle in receipt_handles:
                deleted = conn.execute(
                    "DELETE FROM queue_messages WHERE queue = ? AND receipt_handle = ?",
                    (self.name, handle),
                ).rowcount
                if deleted:
                    conn.execute(
                        "INSERT OR REPLACE INTO queue_deleted_receipts VALUES (?, ?, ?)",
                        (handle, self.name, now),
                    )
                elif not self._recently_deleted(conn, handle):
                    failures.append(
                        DeleteFailure(
                            handle,
                            _INVALID_HANDLE,
                            f'The input receipt handle "{handle}" is not a valid receipt '
                            "handle (unknown, or the message was received again since).",
                        )
                    )
        return failures

    def _recently_deleted(self, conn: sqlite3.Connection, handle: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM queue_deleted_receipts WHERE receipt_handle = ? AND queue = ?",
            (handle, self.name),
        ).fetchone()
        return row is not None

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Hide a received message for ``seconds`` from now (0 makes it visible at once)."""
        check_visibility(seconds)
        with self._writing() as conn:
            now = self._clock()
            row = self._row_for_handle(conn, receipt_handle)
            if row["visible_at"] <= now:
                raise RequestRejected(
                    VENDOR,
                    f"message {row['message_id']} is not in flight (its visibility timeout "
                    "has expired)",
                    code="MessageNotInflight",
                )
            conn.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE seq = ?",
                (now + seconds, row["seq"]),
            )

    def _row_for_handle(self, conn: sqlite3.Connection, receipt_handle: str) -> sqlite3.Row:
        row = conn.execute(
            "SELECT * FROM queue_messages WHERE queue = ? AND receipt_handle = ?",
            (self.name, receipt_handle),
        ).fetchone()
        if row is None:
            raise RequestRejected(
                VENDOR, "the receipt handle is invalid or stale", code=_INVALID_HANDLE
            )
        return row

    # -- dead letters ----------------------------------------------------------------------

    def dead_letter(self, message: QueueMessage, reason: str) -> None:
        """Move the message to the DLQ now (atomically), with ``reason`` as an attribute.

        The DLQ copy gets a new message id and the attributes ``reason``, ``source_queue``
        and ``original_message_id``. A stale receipt handle raises :class:`RequestRejected`
        and moves nothing.
        """
        dlq = self.dlq().name
        with self._writing() as conn:
            now = self._clock()
            row = self._row_for_handle(conn, message.receipt_handle)
            attrs = dead_letter_attributes(
                json.loads(row["attributes"]),
                reason=reason,
                source_queue=self.name,
                message_id=row["message_id"],
            )
            conn.execute(
                "UPDATE queue_messages SET queue = ?, message_id = ?, attributes = ?, "
                "sent_at = ?, visible_at = ?, receive_count = 0, receipt_handle = NULL, "
                "dead_letter_reason = ?, dead_letter_source = ?, dead_letter_original_id = ?, "
                "dead_lettered_at = ? WHERE seq = ?",
                (
                    dlq,
                    str(uuid.uuid4()),
                    json.dumps(attrs),
                    now,
                    now,
                    attrs["reason"],
                    self.name,
                    row["message_id"],
                    now,
                    row["seq"],
                ),
            )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The messages in this queue's DLQ, oldest first, without receiving them."""
        dlq = self.dlq().name
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT * FROM queue_messages WHERE queue = ? ORDER BY seq LIMIT ?", (dlq, limit)
            ).fetchall()
        return [
            DeadLetter(
                message_id=row["message_id"],
                body=row["body"],
                reason=row["dead_letter_reason"] or "",
                source_queue=row["dead_letter_source"] or "",
                original_message_id=row["dead_letter_original_id"] or row["message_id"],
                receive_count=row["receive_count"],
                dead_lettered_at=row["dead_lettered_at"] or row["sent_at"],
                attributes=json.loads(row["attributes"]),
            )
            for row in rows
        ]

    def redrive_dead_letters(self, limit: int | None = None) -> int:
        """Move this queue's messages back from the DLQ, visible now, receive count 0.

        For operators, after the cause is fixed (SQS: ``start_message_move_task``). Only
        messages that came from this queue move; returns how many did.
        """
        dlq = self.dlq().name
        with self._writing() as conn:
            now = self._clock()
            rows = conn.execute(
                "SELECT seq, message_id, attributes, dead_letter_original_id "
                "FROM queue_messages WHERE queue = ? AND dead_letter_source = ? "
                "ORDER BY seq LIMIT ?",
                (dlq, self.name, -1 if limit is None else limit),
            ).fetchall()
            for row in rows:
                attrs = json.loads(row["attributes"])
                for name in DEAD_LETTER_ATTRIBUTES:
                    attrs.pop(name, None)
                conn.execute(
                    "UPDATE queue_messages SET queue = ?, message_id = ?, attributes = ?, "
                    "visible_at = ?, receive_count = 0, receipt_handle = NULL, "
                    "dead_letter_reason = NULL, dead_letter_source = NULL, "
                    "dead_letter_original_id = NULL, dead_lettered_at = NULL WHERE seq = ?",
                    (
                        self.name,
                        row["dead_letter_original_id"] or row["message_id"],
                        json.dumps(attrs),
                        now,
                        row["seq"],
                    ),
                )
        return len(rows)

    # -- inspection ------------------------------------------------------------------------

    def approximate_depth(self) -> int:
        """Visible messages (exact here; SQS's is approximate)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM queue_messages WHERE queue = ? AND visible_at <= ?",
                (self.name, self._clock()),
            ).fetchone()
        return int(row[0])

    def purge(self) -> int:
        """Delete every message of this queue (not of its DLQ); return how many."""
        with self._writing() as conn:
            return conn.execute("DELETE FROM queue_messages WHERE queue = ?", (self.name,)).rowcount

    def close(self) -> None:
        self.database.close()
