"""Reading a queue inside a run: receive in pages of at most 10, dead-letter what can never be
processed (with its reason), and delete only what was processed, after its effect committed.

A delete that fails is logged and counted, never raised: the message comes back after its
visibility timeout and processing it again changes nothing (both consumers are idempotent).

A dead-letter reason may quote a hostile message (a NUL, a lone surrogate): both queues
escape what SQS would refuse in it (see :mod:`mail_pipeline.integrations.queues.conventions`),
so the move to the DLQ cannot fail on it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.queues.base import MAX_RECEIVE, MessageQueue, QueueMessage

R = TypeVar("R")

logger = logging.getLogger(__name__)


def receive_pages(
    queue: MessageQueue,
    max_receives: int,
    visibility_timeout: int,
    log: logging.Logger = logger,
) -> list[QueueMessage]:
    """Up to ``max_receives`` receives of at most 10 messages; stops at the first empty one.

    A receive that fails for good (the client's retries spent) after earlier pages arrived
    ends the receiving, not the pass: the pages already held are returned and processed now
    rather than hidden for a visibility timeout, and the failure is logged. The next pass's
    first receive meets the outage again and raises it, so a queue that stays down still
    fails the run."""
    messages: list[QueueMessage] = []
    for _ in range(max_receives):
        try:
            page = queue.receive(MAX_RECEIVE, visibility_timeout=visibility_timeout)
        except IntegrationError as exc:
            if not messages:
                raise
            log.warning(
                "receive from %s failed after %s messages arrived; processing those: %s",
                queue.name,
                len(messages),
                exc,
            )
            break
        if not page:
            break
        messages += page
    return messages


def dead_letter(
    queue: MessageQueue, message: QueueMessage, reason: str, log: logging.Logger, what: str
) -> bool:
    """Move ``message`` to the DLQ with ``reason``; False if that failed (it comes back)."""
    log.warning("%s message %s to the DLQ: %s", what, message.message_id, reason)
    try:
        queue.dead_letter(message, reason)
    except IntegrationError as exc:
        log.error("%s message %s not moved to the DLQ: %s", what, message.message_id, exc)
        return False
    return True


def delete_processed(
    queue: MessageQueue, messages: Sequence[QueueMessage], log: logging.Logger, what: str
) -> int:
    """Delete the messages; return how many could not be (they come back, harmlessly)."""
    if not messages:
        return 0
    try:
        failures = queue.delete([m.receipt_handle for m in messages])
    except IntegrationError as exc:
        log.error("could not delete %s %s messages: %s", len(messages), what, exc)
        return len(messages)
    for failure in failures:
        log.warning("%s message not deleted (%s): %s", what, failure.code, failure.message)
    return len(failures)


def repeat_passes(
    one_pass: Callable[[], R],
    *,
    idle_seconds: float,
    budget_seconds: float = 240.0,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
    """Run passes over a queue until one receives nothing and the queue has stayed empty
    for ``idle_seconds`` (0: after the first empty pass), or ``budget_seconds`` after the
    first pass began; returns the passes' results added up (their ``int`` fields summed,
    their tuples joined). A run that waits for messages is cheaper than a run per trickle
    of them: a run costs seconds of CPU to start."""
    started = clock()
    total = one_pass()
    idle_since: float | None = None if _received(total) else clock()
    while clock() - started < budget_seconds:
        if idle_since is not None and clock() - idle_since >= idle_seconds:
            break
        if idle_since is not None:
            sleep(poll_seconds)
        result = one_pass()
        total = _added(total, result)
        if _received(result):
            idle_since = None
        elif idle_since is None:
            idle_since = clock()
    return total


def _received(result: Any) -> bool:
    return bool(getattr(result, "received", 0))


def _added(total: R, more: R) -> R:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(total):  # type: ignore[arg-type]
        a, b = getattr(total, f.name), getattr(more, f.name)
        if isinstance(a, bool) or not isinstance(a, int | tuple):
            values[f.name] = b
        else:
            values[f.name] = a + b
    return dataclasses.replace(total, **values)  # type: ignore[type-var]
