"""A vendor rate limit shared by every process on the app database.

Two mailing runs are two processes on one printer API key. Instead of a fixed share each,
they take their calls from one schedule kept in the app database (``shared_rate_limits``,
one row per limit key), the "generic cell rate algorithm": the row holds the *next free slot*
``next_slot_at``. A caller reserves a slot with ONE atomic statement - an upsert whose update
sets ``next_slot_at = max(next_slot_at, now) + interval`` and returns it - then sleeps until
its slot. With ``interval = per_seconds / (fraction * max_calls)`` the calls of every process
are spaced at least ``interval`` apart, so any window of ``per_seconds`` holds at most
``floor(fraction * max_calls) + 1 <= max_calls`` slots (``fraction < 1``), and a call that
reaches the vendor up to ``(1 / fraction - 1) * per_seconds`` late (network, scheduling)
still cannot make a window exceed ``max_calls`` (the proof: ``docs/rate_limits.md``). A
caller that comes when the schedule is idle gets the slot ``now``: capacity not used is not
saved up for a burst.

One clock: on PostgreSQL the database's (``clock_timestamp()``, read by the statement after
it holds the row), on SQLite this machine's (read after ``BEGIN IMMEDIATE`` took the write
lock), so the processes never compare two clocks. Each row also keeps the clock reading it
was written at (``clock_at``); a later reading below it means the clock went backwards, and
the schedule is moved back by that step, so a waiting caller never waits the step out (while
every slot already handed out stays where it was in real time). A clock that jumps
*forwards* cannot be told from idle time: the calls already waiting then overlap the new
ones once (a short burst the vendor may answer with 429s, which the clients retry).

Keys name a vendor and a short hash of the API key (:func:`limit_key`), never the key.

Failure: when the database cannot reserve a slot (down, not migrated, locked past the busy
timeout), :meth:`SharedRateLimiter.acquire` raises :class:`SharedRateLimitUnavailable` and
the call is not made. There is no fallback to a per-process limiter: the other runs may still
be using the whole shared limit, so one run going it alone could exceed the vendor's limit.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Double, cast, extract, func, literal
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import SessionFactory, dialect_insert
from mail_pipeline.db.models import SharedRateLimit

#: Hex characters of the API key's SHA-256 kept in a limit key: enough to tell keys apart,
#: far too few to recover the key from.
KEY_HASH_CHARS = 12
#: The longest limit key (``shared_rate_limits.key``).
MAX_KEY_LENGTH = 64
_VENDOR = re.compile(r"^[a-z0-9_]{1,40}$")
#: The share of a window's lateness headroom a caller may be woken late and still send.
LATE_SLOT_SHARE = 0.25
#: How many times a caller woken too late reserves another slot before sending anyway.
LATE_SLOT_RETRIES = 3


class SharedRateLimitUnavailable(RuntimeError):
    """The app database could not reserve a call slot; the vendor call was not made."""

    def __init__(self, key: str, error: BaseException) -> None:
        self.key = key
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        super().__init__(
            f"rate limit {key}: no call slot could be reserved in the app database "
            f"({type(error).__name__}: {reason}); the call was not made (is the database "
            "reachable and migrated to 0013?)"
        )


def limit_key(vendor: str, api_key: str) -> str:
    """``lob:3f9a0c1b2d4e``: the vendor and a short hash of its API key. Every process using
    that key computes the same key, and the key itself never reaches the database."""
    if not _VENDOR.match(vendor):
        raise ValueError(f"a vendor name is 1-40 lower-case letters, digits or _: {vendor!r}")
    if not api_key:
        raise ValueError(f"{vendor}: a shared rate limit needs the API key it limits")
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:KEY_HASH_CHARS]
    return f"{vendor}:{digest}"


class SharedRateLimiter:
    """``fraction`` of ``max_calls`` per ``per_seconds`` for every process that uses ``key``
    on the database of ``sessions``. A :class:`~mail_pipeline.integrations.ratelimit.Limiter`
    (``acquire``), thread-safe: each reservation is its own short transaction."""

    def __init__(
        self,
        sessions: SessionFactory,
        key: str,
        max_calls: int,
        per_seconds: float,
        *,
        fraction: float = 0.95,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``clock`` is the shared clock on SQLite only (PostgreSQL uses its own); ``monotonic``
        and ``sleep`` time the wait for a slot in this process."""
        if max_calls < 1 or not (0 < per_seconds < math.inf):
            raise ValueError("a rate limit needs at least one call per positive window")
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            raise ValueError(f"a limit key is 1-{MAX_KEY_LENGTH} characters: {key!r}")
        self.key = key
        #: Seconds between two consecutive slots.
        self.interval = per_seconds / (max_calls * fraction)
        #: The lateness every window absorbs (``docs/rate_limits.md``); a quarter of it may
        #: pass before the call is sent, the rest is the way to the vendor.
        self.max_lateness = per_seconds * (1 / fraction - 1) * LATE_SLOT_SHARE
        self._sessions = sessions
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"SharedRateLimiter({self.key!r}, one call every {self.interval:.4f}s)"

    def acquire(self) -> None:
        """Reserve the next slot and sleep until it is due. A caller woken later than
        :attr:`max_lateness` after its slot (a machine whose cores are all busy) gives the
        slot up and reserves another, up to :data:`LATE_SLOT_RETRIES` times: a call sent late
        could fall into the next window beside calls sent on time, and the headroom that
        absorbs lateness also has to cover the rest of the way to the vendor."""
        for _ in range(LATE_SLOT_RETRIES + 1):
            [due] = self.acquire_many(1)
            while (left := due - self._monotonic()) > 0:
                self._sleep(left)
            if self._monotonic() - due <= self.max_lateness:
                return
        # Late every time: send anyway; a vendor's 429 is retried after its Retry-After.

    def acquire_many(self, n: int) -> list[float]:
        """Reserve ``n`` consecutive slots in one statement, without waiting. Returns when each
        is due, on this process's ``monotonic`` clock; the caller makes its i-th call no
        earlier than the i-th time (a batch caller waits for each in turn)."""
        if n < 1:
            raise ValueError("reserve at least one slot")
        first, now = self._reserve(n)
        received = self._monotonic()
        return [received + max(0.0, first + i * self.interval - now) for i in range(n)]

    def _reserve(self, n: int) -> tuple[float, float]:
        """The first of ``n`` reserved slots and the clock reading, both on the shared clock."""
        try:
            with self._sessions() as session:
                next_slot, clock_at = session.execute(self._statement(session, n)).one()
        except SQLAlchemyError as exc:
            raise SharedRateLimitUnavailable(self.key, exc) from exc
        return next_slot - n * self.interval, clock_at

    def _statement(self, session: Session, n: int) -> Any:
        """Insert the key's row at ``now``, or move its next slot: ``max(next slot - clock
        step back, now) + n * interval``; returns the new next slot and the clock reading."""
        now: Any
        postgres = session.get_bind().dialect.name == "postgresql"
        greatest: Any = func.greatest if postgres else func.max
        if postgres:
            # Volatile: read when the row is held, after any wait for another process.
            now = cast(extract("epoch", func.clock_timestamp()), Double)
        else:
            session.connection()  # BEGIN IMMEDIATE: the write lock is ours before the clock
            now = literal(self._clock(), Double)
        row = SharedRateLimit.__table__.c
        step_back = greatest(row.clock_at - now, 0.0)
        first = greatest(row.next_slot_at - step_back, now)
        insert = dialect_insert(session)
        statement = insert(SharedRateLimit).values(
            key=self.key, next_slot_at=now + n * self.interval, clock_at=now
        )
        return statement.on_conflict_do_update(
            index_elements=[row.key],
            set_={row.next_slot_at: first + n * self.interval, row.clock_at: now},
        ).returning(row.next_slot_at, row.clock_at)
