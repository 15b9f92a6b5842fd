"""One usage fact to bill, and the checks Stripe's meter event stream only makes later.

The v2 stream validates asynchronously: it answers ``{}`` to a malformed event and reports it
later (``v1.billing.meter.error_report_triggered``), so a postcard would go unbilled with no
error where it was sent. :func:`checked_usage_events` refuses such events before anything is
sent, each with a reason a person can read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mail_pipeline.integrations.billing.stripe_errors import VENDOR
from mail_pipeline.integrations.errors import RequestRejected

MAX_IDENTIFIER_LENGTH = 100
#: Stripe's limit on a meter event value (digits of a whole number).
MAX_VALUE_DIGITS = 15
#: A meter event's timestamp: within the past 35 days, at most 5 minutes ahead.
PAST_WINDOW = 35 * 24 * 3600
FUTURE_WINDOW = 5 * 60
#: A Stripe customer id (``cus_`` and letters, digits or ``_``).
CUSTOMER_ID = re.compile(r"cus_[A-Za-z0-9_]{1,250}")
#: How many refused events a message names; the error's ``problems`` holds all of them.
_NAMED = 5


@dataclass(frozen=True)
class UsageEvent:
    """``value`` units used by ``customer_id`` at ``timestamp``, billed once per ``identifier``.

    ``identifier`` is deterministic (derived from what is billed, e.g. the recipient's ledger
    key), 1..100 characters; Stripe keeps one event per identifier for at least 24 h, which is
    what makes sending the same event again harmless. ``timestamp`` is an aware datetime or
    epoch seconds.
    """

    customer_id: str
    identifier: str
    value: int
    timestamp: datetime | int

    def epoch(self) -> int:
        """The timestamp in epoch seconds (a naive datetime is refused by the checks first)."""
        if isinstance(self.timestamp, datetime):
            return int(self.timestamp.timestamp())
        return int(self.timestamp)


class InvalidUsageEvents(RequestRejected, ValueError):
    """Events Stripe would drop after answering success; nothing of the call was sent.

    A :class:`RequestRejected` (not retryable), so a caller that handles integration errors
    handles this one, and a ``ValueError`` like :meth:`StripeMeter.record_usage`'s argument
    checks. ``problems`` maps each refused identifier to its reason (``""`` for a missing
    identifier); the other events are fine and may be sent again without these.
    """

    def __init__(self, problems: Mapping[str, str], total: int) -> None:
        self.problems = dict(problems)
        named = "; ".join(
            f"{identifier or '(no identifier)'}: {reason}"
            for identifier, reason in list(self.problems.items())[:_NAMED]
        )
        more = len(self.problems) - _NAMED
        super().__init__(
            VENDOR,
            f"{len(self.problems)} of {total} meter events refused before sending, nothing "
            f"was sent: {named}" + (f"; and {more} more" if more > 0 else ""),
        )


def usage_problem(event: UsageEvent, now: float) -> str | None:
    """Why Stripe would not record ``event`` at ``now``, or None when it would."""
    if not isinstance(event.identifier, str) or not event.identifier:
        return "the identifier is missing (it is what keeps a repeat from billing twice)"
    if len(event.identifier) > MAX_IDENTIFIER_LENGTH:
        return f"the identifier has {len(event.identifier)} characters, at most 100 are allowed"
    if not isinstance(event.customer_id, str) or not CUSTOMER_ID.fullmatch(event.customer_id):
        return f"{event.customer_id!r} is not a Stripe customer id (cus_...)"
    value = event.value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"the value must be a whole number >= 0, not {value!r}"
    if len(str(value)) > MAX_VALUE_DIGITS:
        return f"the value {value} has more than {MAX_VALUE_DIGITS} digits"
    stamp = event.timestamp
    if isinstance(stamp, datetime):
        if stamp.tzinfo is None:
            return f"the timestamp {stamp.isoformat()} has no timezone"
    elif isinstance(stamp, bool) or not isinstance(stamp, int):
        return f"the timestamp must be an aware datetime or epoch seconds, not {stamp!r}"
    epoch = event.epoch()
    if epoch < now - PAST_WINDOW:
        return f"the timestamp {_iso(epoch)} is more than 35 days ago"
    if epoch > now + FUTURE_WINDOW:
        return f"the timestamp {_iso(epoch)} is more than 5 minutes in the future"
    return None


def checked_usage_events(events: Sequence[UsageEvent], now: float) -> list[UsageEvent]:
    """``events`` in order, each identifier once, or :class:`InvalidUsageEvents` naming every
    event Stripe would drop.

    An identifier given twice with the same facts is sent once. Given twice with different
    facts, Stripe would keep one and silently drop the other, so both are refused.
    """
    problems: dict[str, str] = {}
    seen: dict[str, tuple[str, int, int]] = {}
    unique: list[UsageEvent] = []
    for event in events:
        problem = usage_problem(event, now)
        if problem is not None:
            problems.setdefault(event.identifier, problem)
            continue
        facts = (event.customer_id, event.value, event.epoch())
        earlier = seen.get(event.identifier)
        if earlier is None:
            seen[event.identifier] = facts
            unique.append(event)
        elif earlier != facts:
            problems[event.identifier] = (
                "the identifier is given twice in this call with different customer, value or "
                "timestamp; Stripe would keep one and drop the other"
            )
    if problems:
        raise InvalidUsageEvents(problems, len(events))
    return unique


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
