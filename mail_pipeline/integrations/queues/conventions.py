"""SQS limits and attribute names that both queue implementations share.

The local queue enforces the same limits SQS does, so code that works locally does not
fail on the first day in production: at most 10 messages per receive, long polls of at most
20 s, visibility timeouts between 0 s and 12 h, and messages (body plus attributes) of at
most 1 MiB of UTF-8 made of characters SQS accepts.

Attribute names:

- ``SentTimestamp`` (milliseconds since the epoch, as SQS reports it) is added to every
  received :class:`~mail_pipeline.integrations.queues.base.QueueMessage`; senders may not set
  it themselves.
- ``reason``, ``source_queue`` and ``original_message_id`` are set on a message that
  ``dead_letter`` moved to the dead-letter queue. A reason may quote the message it is about;
  characters SQS refuses in it are written as escapes (``\\u0000``), so a hostile message can
  never make its own move to the DLQ fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

from mail_pipeline.integrations.errors import RequestRejected
from mail_pipeline.integrations.queues.base import MAX_RECEIVE

MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_TIMEOUT = 43_200
MAX_MESSAGE_BYTES = 1_048_576
MAX_MESSAGE_ATTRIBUTES = 10
#: SQS's batch calls take at most this many entries.
MAX_BATCH_ENTRIES = 10

SENT_TIMESTAMP = "SentTimestamp"
REASON = "reason"
SOURCE_QUEUE = "source_queue"
ORIGINAL_MESSAGE_ID = "original_message_id"
DEAD_LETTER_ATTRIBUTES = (REASON, SOURCE_QUEUE, ORIGINAL_MESSAGE_ID)
#: A reason longer than this is cut; it is for people, and it travels in every DLQ message.
MAX_REASON_CHARS = 1_000

# The characters SQS accepts in a body and attribute values (XML 1.0 characters).
_INVALID_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def escape_invalid(text: str) -> str:
    """``text`` with each character SQS refuses written as ``\\uXXXX`` (NUL, other control
    characters, lone surrogates, U+FFFE/U+FFFF)."""
    return _INVALID_CHARS.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def dead_letter_queue_name(name: str) -> str:
    """The conventional name of a queue's dead-letter queue: ``<name>-dlq``."""
    return f"{name}-dlq"


def receive_limit(max_messages: int) -> int:
    """Clamp a requested receive size to SQS's 1-10; fewer than 1 is a caller bug."""
    if max_messages < 1:
        raise ValueError(f"max_messages must be at least 1, got {max_messages}")
    return min(max_messages, MAX_RECEIVE)


def wait_limit(wait_seconds: float) -> float:
    """Clamp a long-poll wait to SQS's 0-20 s; a negative wait is a caller bug."""
    if wait_seconds < 0:
        raise ValueError(f"wait_seconds must not be negative, got {wait_seconds}")
    return min(float(wait_seconds), float(MAX_WAIT_SECONDS))


def check_visibility(seconds: int) -> int:
    """Validate a visibility timeout against SQS's 0-43,200 s."""
    if not 0 <= seconds <= MAX_VISIBILITY_TIMEOUT:
        raise ValueError(f"visibility timeout must be 0-{MAX_VISIBILITY_TIMEOUT} s, got {seconds}")
    return seconds


def check_user_attributes(attributes: Mapping[str, str] | None) -> dict[str, str]:
    """Attributes a sender may set: no reserved names, at most 10, non-empty values."""
    attrs = dict(attributes or {})
    if SENT_TIMESTAMP in attrs:
        raise ValueError(f"{SENT_TIMESTAMP!r} is set by the queue, not by the sender")
    if len(attrs) > MAX_MESSAGE_ATTRIBUTES:
        raise ValueError(
            f"a message takes at most {MAX_MESSAGE_ATTRIBUTES} attributes, got {len(attrs)}"
        )
    empty = sorted(name for name, value in attrs.items() if not name or not value)
    if empty:
        raise ValueError(f"attribute names and values must not be empty: {empty}")
    return attrs


def message_size(body: str, attributes: Mapping[str, str]) -> int:
    """Bytes SQS counts against the 1 MiB limit: body plus attribute names and values."""
    size = len(body.encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(value.encode()) + len(b"String")
    return size


def check_message(vendor: str, body: str, attributes: Mapping[str, str]) -> None:
    """Reject, as SQS would, an empty or oversized message or one with invalid characters."""
    if not body:
        raise RequestRejected(vendor, "the message body must not be empty", code="MissingParameter")
    for text in (body, *attributes.values()):
        bad = _INVALID_CHARS.search(text)
        if bad:
            raise RequestRejected(
                vendor,
                f"the message contains a character SQS refuses (U+{ord(bad.group()):04X})",
                code="InvalidMessageContents",
            )
    size = message_size(body, attributes)
    if size > MAX_MESSAGE_BYTES:
        raise RequestRejected(
            vendor,
            f"the message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}",
            code="InvalidParameterValue",
        )


def dead_letter_attributes(
    original: Mapping[str, str], *, reason: str, source_queue: str, message_id: str
) -> dict[str, str]:
    """Attributes for a message moved to the DLQ by hand: the reason first (escaped, see the
    module docstring), then the originals.

    The sender's attributes are kept as far as the 10-attribute limit allows; ``SentTimestamp``
    and earlier dead-letter attributes are dropped (the DLQ message gets its own).
    """
    reason = escape_invalid(reason.strip())
    if not reason:
        raise ValueError("a dead-letter reason must not be empty")
    attrs = {
        REASON: reason[:MAX_REASON_CHARS],
        SOURCE_QUEUE: source_queue,
        ORIGINAL_MESSAGE_ID: message_id,
    }
    for name, value in original.items():
        if len(attrs) >= MAX_MESSAGE_ATTRIBUTES:
            break
        if name != SENT_TIMESTAMP and name not in attrs and value:
            attrs[name] = value
    return attrs


def batches(bodies: Sequence[str]) -> Iterator[list[tuple[int, str]]]:
    """Split bodies into SQS batches: at most 10 entries and 1 MiB in total per batch.

    Yields ``(index in bodies, body)`` pairs so the caller can report failures by position.
    """
    batch: list[tuple[int, str]] = []
    size = 0
    for index, body in enumerate(bodies):
        body_size = len(body.encode())
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + body_size > MAX_MESSAGE_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((index, body))
        size += body_size
    if batch:
        yield batch


def chunks(items: Sequence[str], size: int = MAX_BATCH_ENTRIES) -> Iterator[Sequence[str]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
