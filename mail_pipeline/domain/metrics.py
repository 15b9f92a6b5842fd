"""The rules of daily metrics and campaign results, as plain Python.

Days
    A metric's day is the America/New_York calendar day of the event (the business's days,
    the daily partitions' days): :func:`day_of` converts an aware time with the IANA zone
    database, so a day is 23 hours long when clocks spring forward and 25 when they fall
    back. A day starts at local midnight (:func:`day_start`, which New York always has: its
    clocks change at 02:00) and an event at exactly midnight belongs to the day it starts.

Refresh
    Today's partition is refreshed every 15 minutes; yesterday's too until
    :data:`LATE_ORDER_CUTOFF` (06:00 New York time) the next morning, so orders that sources
    publish late (a Klaviyo event, a Shopify edit) and the tick at midnight, which closes the
    day, still reach it (:func:`days_to_refresh`). Older days change only by a backfill.

Revenue
    An order's revenue is its total minus what was refunded, never below zero; a cancelled
    order is no sale: it counts as neither an order nor revenue (:func:`net_revenue_minor`).
    Refunds are as the orders table knows them when the day is computed: a refund that
    arrives after a day was last refreshed reaches the day's figures with its next refresh
    or backfill (campaign results always read the orders as they are).

Recipients at the end of a day
    The table keeps each recipient's current status and the times of its milestones, not its
    history. Its status at the end of a day is rebuilt from them (:func:`status_at`): its
    current status if it last changed before the day ended, else the last milestone it had
    reached by then (Received, Sent, Proofed; before proofing it is counted as Pending).
    Every move of the state machine stamps ``status_changed_at``, so a milestone later than
    that (a printer's delivery time ahead of our clock) is taken as happening then, and one
    before the recipient was created as happening at its creation (:func:`timeline`).

Campaign results
    The mailed group is a campaign's recipients that are Sent or Received now (their postcard
    went out and was not failed by the printer); the holdout group its Holdout recipients. A
    recipient converted when an order that was not cancelled is attributed (mailed) or
    matched (holdout) to it. The lift is the difference of the two conversion rates; its 95%
    interval is only given when both groups are big enough (:func:`too_few_to_tell`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from mail_pipeline.domain.recipients import RecipientStatus

#: The business's time zone (``partitions.BUSINESS_TIMEZONE`` names the same zone).
METRICS_TIMEZONE = ZoneInfo("America/New_York")

#: Yesterday's partition is refreshed with today's until this local time the next morning.
LATE_ORDER_CUTOFF = time(6, 0)

#: A group (mailed or holdout) needs at least this many recipients for an interval...
MIN_GROUP_RECIPIENTS = 100
#: ...and at least this many converted recipients.
MIN_GROUP_CONVERSIONS = 5
#: The confidence level of the lift interval.
LIFT_CONFIDENCE = 0.95

#: Recipients whose postcard went out: the mailed side of a campaign's lift.
MAILED_GROUP = frozenset({RecipientStatus.SENT, RecipientStatus.RECEIVED})
#: Recipients held out of the mailing: the other side.
HOLDOUT_GROUP = frozenset({RecipientStatus.HOLDOUT})

#: How attributions name their methods: code redemptions, then responder matching.
MATCH_TYPES = ("offer_code", "email", "address")


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("an aware time is needed to find its day")
    return moment


def day_of(moment: datetime) -> date:
    """The New York calendar day of an aware time."""
    return _aware(moment).astimezone(METRICS_TIMEZONE).date()


def day_start(day: date) -> datetime:
    """The instant (UTC) the New York day begins: its local midnight."""
    return datetime.combine(day, time(0), tzinfo=METRICS_TIMEZONE).astimezone(UTC)


@dataclass(frozen=True)
class DayRange:
    """Consecutive New York days, ``first`` to ``last`` inclusive."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"a day range ends ({self.last}) before it starts ({self.first})")

    @classmethod
    def single(cls, day: date) -> DayRange:
        return cls(day, day)

    @classmethod
    def of_window(cls, start: datetime, end: datetime) -> DayRange:
        """The days of a partition time window ``[start, end)``: both ends must be local
        midnights (a daily partition's window, or a range of them)."""
        first, after = day_of(start), day_of(end)
        if day_start(first) != _aware(start).astimezone(UTC) or day_start(after) != _aware(
            end
        ).astimezone(UTC):
            raise ValueError("a window of days starts and ends at New York midnights")
        return cls(first, after - timedelta(days=1))

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    @property
    def start(self) -> datetime:
        """When the first day begins (UTC)."""
        return day_start(self.first)

    @property
    def end(self) -> datetime:
        """When the last day ends (UTC), exclusive."""
        return day_start(self.last + timedelta(days=1))

    def bounds(self) -> list[datetime]:
        """The UTC instants each day starts, then the end of the last: ``len(days) + 1``."""
        return [day_start(day) for day in self.days] + [self.end]

    def __len__(self) -> int:
        return (self.last - self.first).days + 1

    def __str__(self) -> str:
        if self.first == self.last:
            return self.first.isoformat()
        return f"{self.first.isoformat()}...{self.last.isoformat()}"


@dataclass(frozen=True)
class OffsetSegment:
    """A stretch ``[start, end)`` of UTC time over which New York is ``offset`` from UTC."""

    start: datetime
    end: datetime
    offset: timedelta


def utc_offset_segments(start: datetime, end: datetime) -> list[OffsetSegment]:
    """Split ``[start, end)`` where New York's UTC offset changes (its DST changes, which
    fall on whole UTC hours), so a database without time zones can find local days by
    shifting each stretch by its offset."""
    start, end = _aware(start).astimezone(UTC), _aware(end).astimezone(UTC)
    segments: list[OffsetSegment] = []
    offset = start.astimezone(METRICS_TIMEZONE).utcoffset()
    segment_start = start
    step = timedelta(hours=1)
    moment = start.replace(minute=0, second=0, microsecond=0) + step
    while moment < end:
        current = moment.astimezone(METRICS_TIMEZONE).utcoffset()
        if current != offset:
            assert offset is not None
            segments.append(OffsetSegment(segment_start, moment, offset))
            segment_start, offset = moment, current
        moment += step
    assert offset is not None
    segments.append(OffsetSegment(segment_start, end, offset))
    return segments


def days_to_refresh(moment: datetime) -> list[date]:
    """The days a refresh at ``moment`` recomputes, oldest first: today (New York), and
    yesterday while the local time is before :data:`LATE_ORDER_CUTOFF`."""
    local = _aware(moment).astimezone(METRICS_TIMEZONE)
    today = local.date()
    if local.time() < LATE_ORDER_CUTOFF:
        return [today - timedelta(days=1), today]
    return [today]


def net_revenue_minor(total_minor: int, refunded_minor: int, cancelled: bool) -> int:
    """An order's revenue: total minus refunds, never below zero; nothing if cancelled."""
    if cancelled:
        return 0
    return max(total_minor - refunded_minor, 0)


def counted_refund_minor(total_minor: int, refunded_minor: int, cancelled: bool) -> int:
    """The refund taken off an order's total: at most the total; none for a cancelled order
    (which counts for nothing at all)."""
    if cancelled:
        return 0
    return min(refunded_minor, total_minor)


#: The milestones a recipient row keeps a time for, in the order they are reached.
MILESTONES: tuple[tuple[str, RecipientStatus], ...] = (
    ("created_at", RecipientStatus.PENDING),
    ("proofed_at", RecipientStatus.PROOFED),
    ("sent_at", RecipientStatus.SENT),
    ("received_at", RecipientStatus.RECEIVED),
)


@dataclass(frozen=True)
class RecipientTimes:
    """What the recipients table keeps of one recipient's history."""

    status: RecipientStatus
    created_at: datetime
    status_changed_at: datetime
    proofed_at: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime | None = None


def timeline(recipient: RecipientTimes) -> list[tuple[datetime, RecipientStatus]]:
    """The statuses a recipient is taken to have been in, with when each began, in order.

    A recipient exists from its creation (created -> Pending) and its current status begins
    at ``status_changed_at``; each milestone in between (proofed, sent, received) is taken at
    its time, but never before the creation nor after the last status change (a printer's
    clock ahead of ours). Events at the same moment keep this order (the current status
    last), so the current status wins a tie."""
    last = recipient.status_changed_at
    first = min(recipient.created_at, last)
    events: list[tuple[datetime, int, RecipientStatus]] = []
    for rank, (field, status) in enumerate(MILESTONES):
        moment = getattr(recipient, field)
        if moment is not None:
            events.append((max(min(moment, last), first), rank, status))
    events.append((last, len(MILESTONES), recipient.status))
    events.sort(key=lambda event: (event[0], event[1]))
    return [(moment, status) for moment, _, status in events]


def status_at(recipient: RecipientTimes, moment: datetime) -> RecipientStatus | None:
    """The recipient's status just before ``moment`` (the end of a day: the next day's
    start), or ``None`` if it was not yet a recipient."""
    if min(recipient.created_at, recipient.status_changed_at) >= moment:
        return None
    state: RecipientStatus | None = None
    for begins, status in timeline(recipient):
        if begins >= moment:
            break
        state = status
    return state


def too_few_to_tell(
    mailed: int, mailed_converted: int, holdout: int, holdout_converted: int
) -> str | None:
    """Why a lift cannot be told from these groups, or ``None`` when it can: each group needs
    :data:`MIN_GROUP_RECIPIENTS` recipients and :data:`MIN_GROUP_CONVERSIONS` converted ones
    (fewer, and an interval would be mostly noise)."""
    if holdout == 0:
        return "the campaign has no holdout recipients"
    problems = []
    for name, size, converted in (
        ("mailed", mailed, mailed_converted),
        ("holdout", holdout, holdout_converted),
    ):
        if size < MIN_GROUP_RECIPIENTS:
            problems.append(f"{name} group has {size} recipients (needs {MIN_GROUP_RECIPIENTS})")
        elif converted < MIN_GROUP_CONVERSIONS:
            problems.append(
                f"{name} group has {converted} conversions (needs {MIN_GROUP_CONVERSIONS})"
            )
    if problems:
        return "too few to tell: " + "; ".join(problems)
    return None


class Verdict(StrEnum):
    """What a campaign's results say about the postcards' effect."""

    NO_HOLDOUT = "no_holdout"
    TOO_FEW = "too_few_to_tell"
    LIFT = "lift"
    NO_DETECTABLE_LIFT = "no_detectable_lift"
    NEGATIVE = "negative_lift"


def verdict(
    holdout: int, reason_too_few: str | None, low: float | None, high: float | None
) -> Verdict:
    """Lift when the whole interval is above zero, negative when it is below, otherwise no
    detectable lift; no interval: no holdout, or too few to tell."""
    if holdout == 0:
        return Verdict.NO_HOLDOUT
    if reason_too_few is not None or low is None or high is None:
        return Verdict.TOO_FEW
    if low > 0:
        return Verdict.LIFT
    if high < 0:
        return Verdict.NEGATIVE
    return Verdict.NO_DETECTABLE_LIFT


def rate(part: int, whole: int) -> float | None:
    """``part / whole``, or ``None`` for an empty whole."""
    return part / whole if whole else None


def cost_per_acquisition(spend_minor: int, orders: int) -> float | None:
    """Spend per attributed order (minor units), or ``None`` without orders."""
    return spend_minor / orders if orders else None


def return_on_ad_spend(revenue_minor: int, spend_minor: int) -> float | None:
    """Attributed revenue per unit of spend, or ``None`` without spend."""
    return revenue_minor / spend_minor if spend_minor else None


def single_currency(*amounts_by_currency: dict[str, int]) -> str | None:
    """The one currency all these amounts are in, or ``None`` if they span several (CPA and
    ROAS are then not given: the platform has no exchange rates) or there are none."""
    currencies: set[str] = set()
    for amounts in amounts_by_currency:
        currencies |= {currency for currency, amount in amounts.items() if amount}
    return next(iter(currencies)) if len(currencies) == 1 else None


def status_column(status: RecipientStatus) -> str:
    """The metrics column holding recipients in ``status`` at the end of a day."""
    return f"status_{status.name.lower()}"


STATUS_COLUMNS: Sequence[str] = tuple(status_column(status) for status in RecipientStatus)


#: ISO 4217 currencies without minor units (an amount in "minor units" is whole units).
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV"}
    | {"XAF", "XOF", "XPF"}
)


def major_units(minor: int | float, currency: str) -> str:
    """An amount in minor units written in the currency's units, for people (``12,345.67``)."""
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{minor:,.0f}"
    return f"{minor / 100:,.2f}"
