"""A circuit breaker per vendor account, so a run stops calling a vendor that is down.

Every call already retries 429/5xx/timeouts with backoff (:mod:`.http`). When a vendor is
down, that alone would make each recipient of a batch spend the whole retry budget: a batch of
500 against a dead printer is 2,500 requests and minutes of sleeping, and a 429 storm is made
worse by every one of them. The breaker counts calls whose retry budget ran out
(:class:`~.errors.VendorUnavailable` or :class:`~.errors.RateLimited` reached the caller):

- **closed**: calls go out. ``failure_threshold`` such calls in a row, with no answered call in
  between, open it. Any answer - a success, or a refusal such as a 4xx that retrying cannot
  help - closes the count: the vendor is up, the request was the problem.
- **open**: calls fail at once, without a request, with :class:`CircuitOpen` - retryable, a
  :class:`~.errors.VendorUnavailable`, so every service already treats it as an outage: the
  recipient waits in its state and is resumed later; nothing becomes ``Error`` because of it.
  A call already in its retry loop when the circuit opens gives up before its next attempt.
- **half-open**: after ``cool_off_seconds`` the next call is the trial: one attempt, no retries.
  An answer closes the circuit; a failure opens it for another cool-off. Calls that arrive
  while the trial is out wait for its outcome (at most ``trial_wait_seconds``, about one
  request's timeout) and then go out or fail fast with it, so a vendor that came back serves
  a run's other threads at once instead of sending their recipients back for another round.
  A trial that never reports (its thread died) is given up after ``trial_timeout_seconds``
  and the next caller tries.

A vendor that asks for a wait longer than a call may wait (``Retry-After`` above
``RetryPolicy.max_retry_after``: a Cloudflare Images lockout of 5 minutes) opens the circuit at
once, until then (at most ``max_open_seconds``): every call before would be refused, and would
only prolong the lockout.

**The defaults** (:data:`DEFAULT_POLICY`): 5 failed calls in a row, 30 s of cool-off.

- One failed call is already 3 to 5 attempts over 1 to 15 s of backoff (``RetryPolicy``), so a
  failure is not a blip; 5 in a row with nothing answered in between is an outage, not one
  recipient's bad luck. With a run's 16 vendor threads the circuit opens within one retry
  budget of the outage, after at most ``(5 + 16 - 1) x max_attempts`` requests, whatever the
  size of the batch.
- 30 s is longer than the vendors' short windows (Lob's rate limit is per 5 s; a load
  balancer's failover takes seconds) and well inside the 120 s after which a mailing run's
  deferred recipients are resumed (``LeasePolicy.deferred``): the resumed run finds the
  circuit half-open and its first call is the trial, instead of every recipient failing
  without the vendor being asked. A run never waits for the circuit: failing fast lets it
  finish its batch (and renew its 60 s lease) at once, leaving the recipients for later.
- A vendor down for an hour costs each process one trial request per 30 s.

**The key**: one breaker per vendor account per process: the vendor's name, its base URL and
a digest of the credential the calls carry (``Authorization`` and any header whose name says
key or token, HTTP basic auth), so a client's several ``HttpApi`` (Lob's two endpoints,
IntelliPrint's create and lookups) share one, and so do clients of one account built by
different runs in one process. Accounts stay apart: a 429 storm is per key, and one
organization's exhausted limit must not stop another's calls; a real outage shows on every
account, and each learns it after ``failure_threshold`` calls. Calls through an explicit
``httpx`` transport (a sandbox, a test's stand-in) have breakers of that transport's own: two
sandboxes are two vendors. Processes do not share breakers (each run process learns an outage
by itself, at the cost above); the key never leaves the process.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from mail_pipeline.integrations.errors import IntegrationError, VendorUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitPolicy:
    """When a breaker opens, and for how long (see the module docstring for the defaults)."""

    #: Failed calls in a row (each after its retry budget) that open the circuit.
    failure_threshold: int = 5
    #: How long an open circuit refuses calls before a trial call may go out.
    cool_off_seconds: float = 30.0
    #: The longest a vendor's own requested wait keeps the circuit open.
    max_open_seconds: float = 600.0
    #: A trial that has not reported after this long is given up; the next caller tries.
    trial_timeout_seconds: float = 120.0
    #: How long a call arriving while the trial is out waits for its outcome (real time).
    trial_wait_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("a circuit opens after at least one failed call")
        if self.cool_off_seconds <= 0 or self.trial_timeout_seconds <= 0:
            raise ValueError("a circuit's cool-off and trial timeout must be positive")
        if self.trial_wait_seconds < 0:
            raise ValueError("a circuit's trial wait cannot be negative")
        if self.max_open_seconds < self.cool_off_seconds:
            raise ValueError("max_open_seconds must be at least cool_off_seconds")


DEFAULT_POLICY = CircuitPolicy()


class CircuitOpen(VendorUnavailable):
    """The vendor was not called: its circuit is open. Retryable, like the outage behind it.

    ``retry_after`` is the seconds until a trial call may go out."""

    def __init__(self, vendor: str, message: str, *, retry_after: float) -> None:
        super().__init__(vendor, message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; ``trial``: the call decides whether the circuit closes."""

    trial: bool = False


def failure_text(vendor: str, error: BaseException) -> str:
    """A failure as it reads after the circuit's own message: without the vendor's name."""
    text = str(error) or type(error).__name__
    return text.removeprefix(f"{vendor}: ")


class CircuitBreaker:
    """One vendor account's circuit (thread-safe; see the module docstring)."""

    def __init__(
        self,
        vendor: str,
        policy: CircuitPolicy = DEFAULT_POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.vendor = vendor
        self.policy = policy
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        #: Notified when a trial's outcome is known.
        self._settled = threading.Condition(self._lock)
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._opened_because = ""
        self._last_failure = ""
        self._trial_since: float | None = None

    # -- what a caller does ---------------------------------------------------------------
    def admit(self) -> Permit:
        """Leave for one call, or :class:`CircuitOpen` when the vendor must not be called.

        While a trial is out this waits for its outcome, up to ``trial_wait_seconds``."""
        deadline = time.monotonic() + self.policy.trial_wait_seconds
        with self._lock:
            while True:
                if self._state is CircuitState.CLOSED:
                    return Permit()
                now = self._clock()
                if self._state is CircuitState.OPEN and now >= self._open_until:
                    self._state = CircuitState.HALF_OPEN
                    self._trial_since = None
                if self._state is not CircuitState.HALF_OPEN:
                    raise self._refusal(now)
                stale = (
                    self._trial_since is not None
                    and now - self._trial_since >= self.policy.trial_timeout_seconds
                )
                if self._trial_since is None or stale:
                    self._trial_since = now
                    log.info("%s: circuit half-open; one trial call goes out", self.vendor)
                    return Permit(trial=True)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._refusal(now)
                self._settled.wait(left)

    def check(self) -> None:
        """:class:`CircuitOpen` unless the circuit is closed: a call in its retry loop asks
        before each further attempt, and stops once another call has opened the circuit."""
        with self._lock:
            if self._state is not CircuitState.CLOSED:
                raise self._refusal(self._clock())

    def succeeded(self, permit: Permit) -> None:
        """The vendor answered (a success, or a refusal retrying cannot change): whatever
        the state, the vendor is up and the circuit closes."""
        with self._lock:
            if self._state is not CircuitState.CLOSED:
                log.info(
                    "%s: %s answered; circuit closed",
                    self.vendor,
                    "the trial call" if permit.trial else "a call",
                )
            self._state = CircuitState.CLOSED
            self._failures = 0
            self._trial_since = None
            self._settled.notify_all()

    def failed(
        self, permit: Permit, error: BaseException, *, hold_for: float | None = None
    ) -> None:
        """The call's retry budget ran out (or the vendor asked for a wait of ``hold_for``
        seconds, longer than a call may wait: the circuit opens at once, for that long)."""
        with self._lock:
            now = self._clock()
            self._failures += 1
            self._last_failure = failure_text(self.vendor, error)
            if hold_for is not None:
                wait = min(self.policy.max_open_seconds, max(hold_for, 0.0))
                self._open(now, wait, f"the vendor asked to wait {wait:.0f} s")
            elif permit.trial and self._state is CircuitState.HALF_OPEN:
                self._open(now, self.policy.cool_off_seconds, "the trial call failed")
            elif (
                self._state is CircuitState.CLOSED
                and self._failures >= self.policy.failure_threshold
            ):
                self._open(
                    now,
                    self.policy.cool_off_seconds,
                    f"{self._failures} consecutive failures",
                )
            if permit.trial:
                self._settled.notify_all()

    def abandoned(self, permit: Permit) -> None:
        """The call ended without telling whether the vendor is up (an unexpected error, or
        it stopped because the circuit opened): a trial lets the next caller try."""
        if not permit.trial:
            return
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._trial_since = None
                self._settled.notify_all()

    # -- what an operator or a test reads -------------------------------------------------
    @property
    def state(self) -> CircuitState:
        with self._lock:
            if self._state is CircuitState.OPEN and self._clock() >= self._open_until:
                return CircuitState.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def _open(self, now: float, seconds: float, because: str) -> None:
        until = now + seconds
        if self._state is CircuitState.OPEN and self._open_until >= until:
            return  # already open for longer
        self._state = CircuitState.OPEN
        self._open_until = until
        self._opened_because = because
        self._trial_since = None
        log.warning(
            "%s: circuit open after %s (last: %s); no calls for %.0f s",
            self.vendor,
            because,
            self._last_failure,
            seconds,
        )

    def _refusal(self, now: float) -> CircuitOpen:
        remaining = max(0.0, self._open_until - now)
        at = datetime.fromtimestamp(self._wall_clock() + remaining, UTC).strftime("%H:%M:%S")
        trial = " (a trial call is under way)" if self._state is CircuitState.HALF_OPEN else ""
        return CircuitOpen(
            self.vendor,
            f"not called: circuit open after {self._opened_because}, retrying after {at} UTC"
            f"{trial}; last failure: {self._last_failure}",
            retry_after=remaining,
        )


def credential_digest(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], auth: Any = None
) -> str:
    """12 hex digits naming the credential of a client's calls without revealing it: the
    ``Authorization`` header, any header whose name says key or token, and basic auth."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    parts = sorted(
        b"%s=%s" % (name.lower().encode(), _text(value))
        for name, value in items
        if any(word in name.lower() for word in ("auth", "key", "token"))
    )
    if isinstance(auth, tuple):
        parts.append(b"basic=" + b":".join(_text(p) for p in auth))
    elif auth is not None:
        parts.append(b"auth=%s:%d" % (type(auth).__name__.encode(), id(auth)))
    return hashlib.sha256(b"\n".join(parts)).hexdigest()[:12]


def _text(value: Any) -> bytes:
    """A credential's bytes. Text is read as it is stored (``str.encode``), never through a
    subclass's ``__str__``: a configuration value that refuses to be printed is still keyed."""
    return value.encode() if isinstance(value, str) else repr(type(value)).encode()


def circuit_key(vendor: str, base_url: str, credential: str) -> str:
    """``vendor base_url credential-digest``: one account of one vendor."""
    return f"{vendor} {base_url.rstrip('/')} {credential}"


class CircuitRegistry:
    """The breakers of a process, by key (and by transport, for calls that use one)."""

    def __init__(
        self,
        policy: CircuitPolicy = DEFAULT_POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._network: dict[str, CircuitBreaker] = {}
        self._by_transport: weakref.WeakKeyDictionary[object, dict[str, CircuitBreaker]] = (
            weakref.WeakKeyDictionary()
        )

    def breaker(self, vendor: str, key: str, transport: object | None = None) -> CircuitBreaker:
        """The breaker for ``key`` (see :func:`circuit_key`), made on first use."""
        with self._lock:
            if transport is None:
                table = self._network
            else:
                table = self._by_transport.setdefault(transport, {})
            found = table.get(key)
            if found is None:
                found = table[key] = CircuitBreaker(
                    vendor, self.policy, clock=self.clock, wall_clock=self.wall_clock
                )
            return found

    def open_circuits(self) -> list[str]:
        """The keys of the network breakers that are not closed (for a log line or a test)."""
        with self._lock:
            breakers = list(self._network.items())
        return [key for key, b in breakers if b.state is not CircuitState.CLOSED]


_registry = CircuitRegistry()


def registry() -> CircuitRegistry:
    """The process's breakers."""
    return _registry


@contextmanager
def isolated_registry(
    policy: CircuitPolicy = DEFAULT_POLICY,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Iterator[CircuitRegistry]:
    """A fresh registry for the process while the block runs (tests: their own circuits, on
    their own clock); the previous one comes back after."""
    global _registry
    previous, _registry = _registry, CircuitRegistry(policy, clock=clock, wall_clock=wall_clock)
    try:
        yield _registry
    finally:
        _registry = previous


def breaker_for(
    vendor: str,
    base_url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    auth: Any = None,
    transport: object | None = None,
) -> CircuitBreaker:
    """The process's breaker for one vendor account (see the module docstring)."""
    key = circuit_key(vendor, base_url, credential_digest(headers, auth))
    return _registry.breaker(vendor, key, transport)


class HoldOpen(Exception):
    """Raised inside a call when the vendor asked for a wait longer than a call may wait:
    :func:`call_through` raises ``error`` at once and keeps the circuit open ``seconds``."""

    def __init__(self, error: IntegrationError, seconds: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.seconds = seconds


def call_through(breaker: CircuitBreaker, call: Callable[[Permit], T]) -> T:
    """``call(permit)`` past ``breaker``, for a client with a retry loop of its own (Stripe's
    SDK calls): the loop makes one attempt when ``permit.trial``, calls ``breaker.check()``
    before each further attempt and raises the project's typed errors; a retryable one counts
    as a failure, any other answer as the vendor being up, and :class:`HoldOpen` keeps the
    circuit open for the vendor's long wait."""
    permit = breaker.admit()
    try:
        result = call(permit)
    except HoldOpen as held:
        breaker.failed(permit, held.error, hold_for=held.seconds)
        raise held.error from None
    except CircuitOpen:
        breaker.abandoned(permit)
        raise
    except IntegrationError as exc:
        if exc.retryable:
            breaker.failed(permit, exc)
        else:
            breaker.succeeded(permit)
        raise
    except BaseException:
        breaker.abandoned(permit)
        raise
    breaker.succeeded(permit)
    return result


def not_called(error: BaseException) -> bool:
    """Whether a failure left the vendor unasked: an open circuit (also inside an error
    that sums up several, as the renderer chain's does, when every part was not called)."""
    if isinstance(error, CircuitOpen):
        return True
    return getattr(error, "not_called", False) is True
