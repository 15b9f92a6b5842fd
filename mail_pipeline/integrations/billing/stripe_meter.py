"""Usage billing: one Stripe meter event per mailed postcard, through the official SDK.

``record_usage`` sends ``POST /v1/billing/meter_events`` with a deterministic ``identifier``
derived from the recipient. Billing a postcard twice is the failure that matters, so the call
is idempotent at two levels:

- the SDK's ``Idempotency-Key`` header is ``meter-event-<identifier>-<digest of the
  parameters>``: a retry of the same request within Stripe's 24 h idempotency window (after a
  timeout, a lost response, a 5xx) is answered with the original response, so it reports
  success exactly like the first attempt;
- the meter event ``identifier`` is unique at Stripe for a rolling period of at least 24 h. A
  repeat that is not an idempotent replay (another process, or a key that expired) is
  *rejected* by Stripe with ``400 invalid_request_error`` "An event already exists with
  identifier ..." (``Stripe-Should-Retry: false``). That means the usage *was* recorded
  earlier, so this client reports it as success (``MeterEventResult.created`` is ``False``)
  instead of failing the recipient.

``record_usage_many`` sends up to 100 events per call on Stripe's v2 meter event stream
(:mod:`~mail_pipeline.integrations.billing.meter_stream`): one call per chunk of recipients
instead of one per recipient, and none of v1's one-call-at-a-time-per-customer limit. The
stream answers ``{}`` and reports nothing per event, so there is no ``created`` flag; the
identifier alone keeps a repeat from billing twice.

Retries are ours, not the SDK's: the SDK sleeps with ``time.sleep`` and does not retry 429s,
so the SDK runs with ``max_network_retries=0`` by default and this class retries rate limits,
409s, 5xx and connection errors with :class:`RetryPolicy` and an injectable ``sleep``, always
with the same idempotency key. Errors surface as the project's typed errors. Every call, v1 and
stream alike, passes the account's circuit breaker
(:mod:`~mail_pipeline.integrations.circuit`, keyed by the API base, the secret key and the
transport): while Stripe is down calls fail at once with the retryable ``CircuitOpen``.

The SDK's own ``stripe.HTTPXClient`` builds its ``httpx.Client`` internally and takes no
transport, so a sandbox plugs in through :class:`TransportHTTPClient`, a small
``stripe.HTTPClient`` (the SDK's documented extension point) over an ``httpx.Client`` with the
given transport. Production uses ``stripe.HTTPXClient(allow_sync_methods=True)``, which respx
intercepts in tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
import stripe
from stripe.params.billing import MeterEventCreateParams

from mail_pipeline.integrations.billing.meter_stream import MeterEventStream
from mail_pipeline.integrations.billing.stripe_errors import map_stripe_error, retryable
from mail_pipeline.integrations.billing.usage import (
    MAX_IDENTIFIER_LENGTH,
    UsageEvent,
    checked_usage_events,
)
from mail_pipeline.integrations.circuit import (
    CircuitBreaker,
    Permit,
    call_through,
    circuit_key,
    credential_digest,
    registry,
)
from mail_pipeline.integrations.http import RetryPolicy

log = logging.getLogger(__name__)

#: The meter's default payload keys (configurable on the meter at Stripe).
CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"


@dataclass(frozen=True)
class MeterEventResult:
    """What Stripe holds for one usage fact."""

    identifier: str
    event_name: str
    customer_id: str
    value: int
    timestamp: int
    #: ``False`` when Stripe already had this identifier: recorded earlier, not billed twice.
    created: bool
    livemode: bool = False


class TransportHTTPClient(stripe.HTTPClient):
    """A synchronous ``stripe.HTTPClient`` over ``httpx`` with a caller-chosen transport.

    This is how :class:`~mail_pipeline.integrations.billing.sandbox.StripeSandbox` (or any
    ``httpx.BaseTransport``) answers the real SDK. Network failures become
    ``stripe.APIConnectionError(should_retry=True)``, as in the SDK's own clients.
    """

    name = "httpx-transport"

    def __init__(
        self, transport: httpx.BaseTransport | None = None, *, timeout: float = 30.0
    ) -> None:
        super().__init__()
        self._httpx = httpx.Client(transport=transport, timeout=timeout)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        try:
            response = self._httpx.request(
                method, url, headers=dict(headers or {}), content=post_data or None
            )
        except httpx.HTTPError as exc:
            raise stripe.APIConnectionError(
                f"Network error talking to Stripe ({type(exc).__name__}: {exc})",
                should_retry=True,
            ) from exc
        return response.text, response.status_code, response.headers

    def close(self) -> None:
        self._httpx.close()


def _is_duplicate_identifier(exc: stripe.InvalidRequestError) -> bool:
    """Stripe's answer to a meter event whose identifier it already holds."""
    message = (exc.user_message or str(exc)).lower()
    return exc.http_status == 400 and "already exists" in message and "identifier" in message


def idempotency_key(
    event_name: str, identifier: str, customer_id: str, value: int, timestamp: int
) -> str:
    """``meter-event-<identifier>-<digest of the other parameters>``.

    Stripe answers a key reused with *different* parameters with an ``idempotency_error``;
    folding the parameters into the key means a later repeat with, say, another timestamp
    reaches the identifier check instead (and is reported as already recorded).
    """
    facts = json.dumps([event_name, customer_id, value, timestamp])
    return f"meter-event-{identifier}-{hashlib.sha256(facts.encode()).hexdigest()[:16]}"


class StripeMeter:
    """Records usage on one Stripe account's meter."""

    def __init__(
        self,
        api_key: str,
        *,
        event_name: str = "postcards_mailed",
        http_client: stripe.HTTPClient | None = None,
        transport: httpx.BaseTransport | None = None,
        api_base: str | None = None,
        meter_events_base: str | None = None,
        max_network_retries: int = 0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
        circuit: CircuitBreaker | None = None,
    ) -> None:
        """``transport`` (a sandbox) wins over ``http_client``; by default the SDK's
        ``HTTPXClient`` talks to ``api_base`` and, for the v2 meter event stream, to
        ``meter_events_base`` (Stripe's hosts unless overridden; a transport receives both).
        ``circuit`` defaults to the process's breaker for this account (and transport)."""
        if not api_key:
            raise ValueError("a Stripe meter needs a secret API key")
        if transport is not None:
            http_client = TransportHTTPClient(transport, timeout=timeout)
        elif http_client is None:
            http_client = stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True)
        self.event_name = event_name
        self.retry = retry or RetryPolicy(max_attempts=4)
        self.circuit = circuit or registry().breaker(
            "stripe",
            circuit_key(
                "stripe",
                api_base or stripe.DEFAULT_API_BASE,
                credential_digest({"authorization": api_key}),
            ),
            transport,
        )
        self.sleep = sleep
        self.clock = clock
        self._http_client = http_client
        self.client = stripe.StripeClient(
            api_key,
            http_client=http_client,
            max_network_retries=max_network_retries,
            base_addresses={
                "api": api_base or stripe.DEFAULT_API_BASE,
                "meter_events": meter_events_base or stripe.DEFAULT_METER_EVENTS_API_BASE,
            },
        )
        self.stream = MeterEventStream(
            self.client,
            event_name=event_name,
            customer_key=CUSTOMER_KEY,
            value_key=VALUE_KEY,
            retry=self.retry,
            sleep=sleep,
            clock=clock,
            circuit=self.circuit,
        )

    def record_usage(
        self,
        *,
        customer_id: str,
        identifier: str,
        value: int = 1,
        timestamp: datetime | int | None = None,
        event_name: str | None = None,
    ) -> MeterEventResult:
        """Record ``value`` units for ``customer_id`` once per ``identifier``.

        ``identifier`` must be deterministic (derived from what is billed, e.g. the
        recipient), at most 100 characters. ``timestamp`` (epoch seconds or an aware
        datetime, default now) must lie within the past 35 days and at most 5 minutes ahead;
        Stripe rejects it otherwise (:class:`RequestRejected`).
        """
        if not identifier or len(identifier) > MAX_IDENTIFIER_LENGTH:
            raise ValueError(
                f"a meter event identifier needs 1..{MAX_IDENTIFIER_LENGTH} "
                f"characters, got {identifier!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"a meter event value must be a whole number >= 0, not {value!r}")
        if not customer_id:
            raise ValueError("a meter event needs the Stripe customer id")
        if isinstance(timestamp, datetime):
            if timestamp.tzinfo is None:
                raise ValueError("a meter event timestamp must be timezone-aware")
            epoch = int(timestamp.timestamp())
        else:
            epoch = int(self.clock()) if timestamp is None else int(timestamp)
        name = event_name or self.event_name
        params: MeterEventCreateParams = {
            "event_name": name,
            "identifier": identifier,
            "payload": {CUSTOMER_KEY: customer_id, VALUE_KEY: str(value)},
            "timestamp": epoch,
        }
        result = MeterEventResult(
            identifier=identifier,
            event_name=name,
            customer_id=customer_id,
            value=value,
            timestamp=epoch,
            created=True,
        )
        key = idempotency_key(name, identifier, customer_id, value, epoch)
        return call_through(
            self.circuit, lambda permit: self._create_event(params, key, result, permit)
        )

    def _create_event(
        self,
        params: MeterEventCreateParams,
        key: str,
        result: MeterEventResult,
        permit: Permit,
    ) -> MeterEventResult:
        """The v1 create with its retries (one attempt for a circuit's trial call)."""
        identifier = params["identifier"]
        max_attempts = 1 if permit.trial else self.retry.max_attempts
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                self.circuit.check()
            try:
                event = self.client.v1.billing.meter_events.create(
                    params=params,
                    options={"idempotency_key": key},
                )
            except stripe.InvalidRequestError as exc:
                if _is_duplicate_identifier(exc):
                    log.info(
                        "stripe: meter event %s was already recorded; not billing again", identifier
                    )
                    return replace(result, created=False)
                raise map_stripe_error(exc) from exc
            except stripe.StripeError as exc:
                if not retryable(exc) or attempt >= max_attempts:
                    raise map_stripe_error(exc) from exc
                delay = self.retry.backoff(attempt)
                log.info(
                    "stripe: meter event %s failed (%s); retry %d in %.2fs",
                    identifier,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                self.sleep(delay)
                continue
            return replace(result, timestamp=int(event.timestamp), livemode=bool(event.livemode))

    def record_usage_many(self, events: Sequence[UsageEvent]) -> None:
        """Record each event once per identifier, up to 100 per call on Stripe's v2 meter event
        stream (one session token per 15 minutes, shared by this meter's threads).

        Every event is checked first and the whole call is refused with
        :class:`~mail_pipeline.integrations.billing.usage.InvalidUsageEvents` (nothing sent)
        if any is one Stripe would drop after answering success: a missing or over-long
        identifier, a customer id that is not ``cus_...``, a value that is not a whole number
        >= 0, a timestamp outside the past 35 days / next 5 minutes, an identifier repeated
        with different facts. Rate limits, 5xx and network failures are retried with
        :attr:`retry`, then raised as retryable errors; other 4xx are not retryable.

        Idempotent: an error part-way may leave the first chunks recorded, and calling again
        with the same events records nothing twice (Stripe keeps one event per identifier for
        at least 24 h). Stripe aggregates stream events asynchronously, like v1's.
        """
        checked = checked_usage_events(events, self.clock())
        if checked:
            self.stream.send(checked)

    def close(self) -> None:
        self._http_client.close()

    def __enter__(self) -> StripeMeter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
