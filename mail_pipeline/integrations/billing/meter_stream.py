"""Many meter events per call: Stripe's v2 meter event stream, through the official SDK.

``POST /v2/billing/meter_event_session`` (API host, secret key) returns a session token valid
15 minutes; ``POST /v2/billing/meter_event_stream`` (the SDK's ``meter_events`` base address,
``https://meter-events.stripe.com``) takes up to 100 events per call with that token as the
bearer key and answers ``{}``. Stripe validates the events later, so they are checked here
first (:func:`~mail_pipeline.integrations.billing.usage.checked_usage_events`).

Idempotency is the events' ``identifier``: Stripe keeps one event per identifier for at least
24 h, so a chunk sent again (a retry after a timeout or a 5xx, or a whole call repeated after
a failure part-way) bills nothing twice. The SDK's random ``Idempotency-Key`` plays no part.

The session token is shared by the threads using one meter: taken under a lock, renewed a
minute before ``expires_at``, and renewed once more when the stream answers 401 (Stripe's
``billing_meter_event_session_expired``, e.g. a clock that runs late).

Each call (a session, a chunk) passes the meter's circuit breaker
(:mod:`~mail_pipeline.integrations.circuit`): while it is open nothing is sent and the call
fails at once with the retryable ``CircuitOpen``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import stripe
from stripe.params.v2.billing import MeterEventStreamCreateParamsEvent

from mail_pipeline.integrations.billing.stripe_errors import map_stripe_error, retryable
from mail_pipeline.integrations.billing.usage import UsageEvent
from mail_pipeline.integrations.circuit import CircuitBreaker, Permit, call_through
from mail_pipeline.integrations.errors import AuthenticationFailed
from mail_pipeline.integrations.http import RetryPolicy

log = logging.getLogger(__name__)

#: Stripe's limit of events per stream request.
MAX_EVENTS_PER_REQUEST = 100
#: A session token is renewed this long before Stripe says it expires.
SESSION_RENEWAL_MARGIN = 60.0
#: Stripe's tokens last 15 minutes; used when a session's ``expires_at`` cannot be read.
SESSION_LIFETIME = 15 * 60.0
SESSION_EXPIRED = "billing_meter_event_session_expired"

T = TypeVar("T")


@dataclass(frozen=True)
class _Session:
    token: str
    expires_at: float


class MeterEventStream:
    """Sends usage events to one Stripe account's meter event stream."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        event_name: str,
        customer_key: str,
        value_key: str,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        circuit: CircuitBreaker | None = None,
    ) -> None:
        """``circuit``: the meter's breaker (default: one of this stream's own)."""
        self.client = client
        self.circuit = circuit or CircuitBreaker("stripe")
        self.event_name = event_name
        self.customer_key = customer_key
        self.value_key = value_key
        self.retry = retry
        self.sleep = sleep
        self.clock = clock
        self._session: _Session | None = None
        self._lock = threading.Lock()

    def send(self, events: Sequence[UsageEvent]) -> int:
        """Send checked events in chunks of at most 100; return the number of requests."""
        requests = 0
        for start in range(0, len(events), MAX_EVENTS_PER_REQUEST):
            chunk = events[start : start + MAX_EVENTS_PER_REQUEST]
            self._send_chunk([self._stream_event(event) for event in chunk])
            requests += 1
            log.debug(
                "stripe: %d meter events sent on the stream (%d of %d)",
                len(chunk),
                start + len(chunk),
                len(events),
            )
        return requests

    def _stream_event(self, event: UsageEvent) -> MeterEventStreamCreateParamsEvent:
        stamp = datetime.fromtimestamp(event.epoch(), UTC)
        return {
            "event_name": self.event_name,
            "identifier": event.identifier,
            "payload": {self.customer_key: event.customer_id, self.value_key: str(event.value)},
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }

    def _send_chunk(self, events: list[MeterEventStreamCreateParamsEvent]) -> None:
        what = f"{len(events)} meter events on the stream"
        token = self.session_token()
        try:
            self._with_retries(lambda: self._stream(events, token), what)
        except AuthenticationFailed as exc:
            # The stream knows only session tokens: a fresh one is the one thing to try.
            log.info("stripe: the meter event session was refused (%s); renewing it", exc)
            self._forget(token)
            renewed = self.session_token()
            self._with_retries(lambda: self._stream(events, renewed), what)

    def _stream(self, events: list[MeterEventStreamCreateParamsEvent], token: str) -> None:
        self.client.v2.billing.meter_event_stream.create(
            params={"events": events}, options={"api_key": token}
        )

    # -- the session ----------------------------------------------------------------------------
    def session_token(self) -> str:
        """A session token valid for at least another minute, created when needed.

        Threads wait on the lock while one of them creates the session, so a meter holds one
        session at a time.
        """
        with self._lock:
            session = self._session
            if session is None or self.clock() >= session.expires_at - SESSION_RENEWAL_MARGIN:
                session = self._session = self._create_session()
            return session.token

    def _forget(self, token: str) -> None:
        """Drop ``token`` unless another thread already replaced it."""
        with self._lock:
            if self._session is not None and self._session.token == token:
                self._session = None

    def _create_session(self) -> _Session:
        created = self._with_retries(
            self.client.v2.billing.meter_event_session.create, "meter event session"
        )
        expires_at = _epoch(getattr(created, "expires_at", None))
        if expires_at is None:
            log.warning("stripe: meter event session without a readable expires_at")
            expires_at = self.clock() + SESSION_LIFETIME
        log.info("stripe: new meter event session, valid until %s", _iso(expires_at))
        return _Session(token=created.authentication_token, expires_at=expires_at)

    def _with_retries(self, call: Callable[[], T], what: str) -> T:
        return call_through(self.circuit, lambda permit: self._attempts(call, what, permit))

    def _attempts(self, call: Callable[[], T], what: str, permit: Permit) -> T:
        """``call`` with its retries (one attempt for a circuit's trial call)."""
        max_attempts = 1 if permit.trial else self.retry.max_attempts
        failures = 0
        while True:
            if failures:
                self.circuit.check()
            try:
                return call()
            except stripe.StripeError as exc:
                failures += 1
                if not retryable(exc) or failures >= max_attempts:
                    raise map_stripe_error(exc) from exc
                delay = self.retry.backoff(failures)
                log.info(
                    "stripe: %s failed (%s); retry %d in %.2fs",
                    what,
                    type(exc).__name__,
                    failures,
                    delay,
                )
                self.sleep(delay)


def _epoch(value: object) -> float | None:
    """Stripe's v2 timestamps are ISO 8601 strings (``2024-06-01T12:15:00.000Z``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
