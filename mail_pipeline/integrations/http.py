"""The HTTP layer shared by every vendor client.

One ``HttpApi`` per vendor account: an ``httpx.Client`` with explicit timeouts, a retry loop
for 429/5xx/timeouts that honours ``Retry-After`` (and the vendors' reset headers), and a hook
that turns an error response into a typed :mod:`~mail_pipeline.integrations.errors` exception.

Retrying a POST is only safe when the request carries an idempotency key; clients that create
things (printers, Stripe, Klaviyo events) always send one, so a retried create never makes a
second object.

Every call passes the vendor account's circuit breaker (:mod:`.circuit`): a call whose retry
budget ran out counts as a failure, any answer (a success or a 4xx) as proof the vendor is up;
while the circuit is open a call fails at once with the retryable
:class:`~mail_pipeline.integrations.circuit.CircuitOpen` and sends nothing, a call in its retry
loop stops when another call opened the circuit, and the one trial call of a half-open circuit
makes a single attempt.
"""

from __future__ import annotations

import email.utils
import functools
import itertools
import logging
import random
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from mail_pipeline.integrations.circuit import (
    CircuitBreaker,
    HoldOpen,
    Permit,
    call_through,
    circuit_key,
    credential_digest,
    registry,
)
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    Conflict,
    IntegrationError,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.ratelimit import Limiter

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Connections per client: httpx keeps 20 idle ones by default, fewer than the threads a
#: mailing run sends from (32), so a busy run kept closing and reopening connections.
CONNECTION_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=64)
#: The pools a client's connections are spread over (:class:`PooledTransport`).
POOL_SHARDS = 8


class PooledTransport(httpx.BaseTransport):
    """A client's connections in ``shards`` pools, each thread sending through one of them.

    httpcore's pool looks at every connection it holds on each request and each response
    (whether it expired, whether the server closed it: a ``poll`` per idle connection), so
    with one pool of 64 connections for 32 sending threads that bookkeeping was an eighth
    of a run's HTTP CPU. Threads are given pools in turn; the limits are split between the
    pools, and the pools share one TLS context.
    """

    def __init__(self, limits: httpx.Limits = CONNECTION_LIMITS, shards: int = POOL_SHARDS):
        share = httpx.Limits(
            max_connections=-(-(limits.max_connections or 100) // shards),
            max_keepalive_connections=-(-(limits.max_keepalive_connections or 20) // shards),
            keepalive_expiry=limits.keepalive_expiry,
        )
        tls = _tls_context()
        self._pools = [httpx.HTTPTransport(verify=tls, limits=share) for _ in range(shards)]
        self._turns = itertools.count()
        self._local = threading.local()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pool: httpx.HTTPTransport | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = self._pools[next(self._turns) % len(self._pools)]
        return pool.handle_request(request)

    def close(self) -> None:
        for pool in self._pools:
            pool.close()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's roots, ``SSL_CERT_FILE``), built once a process:
    loading the roots costs milliseconds of CPU."""
    return httpx.create_ssl_context()


def default_transport() -> httpx.BaseTransport | None:
    """The transport of a client without a sandbox: :class:`PooledTransport`, or httpx's own
    (None) when the environment names a proxy, which httpx honours only with its own."""
    return None if urllib.request.getproxies() else PooledTransport()


@dataclass(frozen=True)
class RetryPolicy:
    """How long a client keeps trying before it gives up with a retryable error."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: A ``Retry-After`` longer than this is not waited out inside the call.
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter for attempt 1, 2, ..."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def retry_after_seconds(response: httpx.Response, *, now: float | None = None) -> float | None:
    """The wait a response asks for, from the headers vendors use.

    ``Retry-After`` (seconds or an HTTP date; Klaviyo, Cloudflare, Shopify REST), Lob's
    ``X-Rate-Limit-Reset`` (epoch seconds) and Stannp's ``X-RateLimit-Reset`` (seconds until
    the reset). ``None`` when the response says nothing.
    """
    now = time.time() if now is None else now
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed is not None:
                return max(0.0, parsed.timestamp() - now)
    reset = response.headers.get("x-rate-limit-reset") or response.headers.get("x-ratelimit-reset")
    if reset:
        try:
            number = float(reset)
        except ValueError:
            return None
        # Epoch seconds are far larger than any "seconds until reset" a vendor would send.
        return max(0.0, number - now) if number > 1_000_000_000 else max(0.0, number)
    return None


ErrorMapper = Callable[[httpx.Response], IntegrationError | None]


def default_error(
    vendor: str, response: httpx.Response, message: str, code: str | None = None
) -> IntegrationError:
    """The typed error for a final (non-retried) error response."""
    status = response.status_code
    kind: type[IntegrationError]
    if status in (401, 403):
        kind = AuthenticationFailed
    elif status == 404:
        kind = NotFound
    elif status == 409:
        kind = Conflict
    elif status == 429:
        return RateLimited(vendor, message, retry_after=retry_after_seconds(response), code=code)
    elif status >= 500:
        kind = VendorUnavailable
    else:
        kind = RequestRejected
    return kind(vendor, message, status_code=status, code=code)


@dataclass
class HttpApi:
    """A vendor's HTTP API: base URL, auth, timeouts, retries and error mapping.

    ``transport`` is where a sandbox plugs in: the same client code then talks to an
    in-process stand-in that answers with the vendor's shapes.
    """

    vendor: str
    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: httpx.Auth | tuple[str, str] | None = None
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(10.0, connect=5.0))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transport: httpx.BaseTransport | None = None
    limiter: Limiter | None = None
    #: Turns an error response into the vendor's typed error (reads the vendor's error body).
    error_mapper: Callable[[httpx.Response], IntegrationError] | None = None
    sleep: Callable[[float], None] = time.sleep
    #: The account's circuit breaker; ``None``: the process's breaker for this vendor, base
    #: URL, credential and transport (:mod:`~mail_pipeline.integrations.circuit`).
    circuit: CircuitBreaker | None = None
    _client: httpx.Client | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _circuit_key: str | None = field(default=None, init=False, repr=False)

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker this client's calls pass (its key is worked out on first use:
        a resource's credentials may only be resolved by then)."""
        if self.circuit is not None:
            return self.circuit
        if self._circuit_key is None:
            self._circuit_key = circuit_key(
                self.vendor, self.base_url, credential_digest(self.headers, self.auth)
            )
        return registry().breaker(self.vendor, self._circuit_key, self.transport)

    @property
    def client(self) -> httpx.Client:
        """The account's one ``httpx.Client``, made on first use. A run's pool threads all
        start at once: the lock makes one client (one TLS context, one connection pool)
        instead of one per thread, each but the last left open. Idle connections are kept
        for as many threads as a run sends from, so a busy run reuses its connections
        instead of opening new ones."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        base_url=self.base_url,
                        headers=dict(self.headers),
                        auth=self.auth,
                        timeout=self.timeout,
                        transport=self.transport or default_transport(),
                        limits=CONNECTION_LIMITS,
                    )
                client = self._client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(
        self,
        method: str,
        url: str,
        *,
        ok: Callable[[httpx.Response], bool] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request, retrying 429/5xx/timeouts; return the response or raise typed.

        ``ok`` decides which responses are answers rather than errors (default: any 2xx);
        Stannp's 409 idempotent replay, for one, is an answer. :class:`CircuitOpen` (nothing
        sent) when the account's circuit is open.
        """
        is_ok = ok or (lambda r: r.is_success)
        breaker = self.breaker
        return call_through(
            breaker, lambda permit: self._attempts(method, url, is_ok, breaker, permit, kwargs)
        )

    def _attempts(
        self,
        method: str,
        url: str,
        is_ok: Callable[[httpx.Response], bool],
        breaker: CircuitBreaker,
        permit: Permit,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        """The retry loop of one call; a trial call of a half-open circuit makes one attempt."""
        max_attempts = 1 if permit.trial else self.retry.max_attempts
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                breaker.check()
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                if attempt >= max_attempts:
                    raise VendorUnavailable(self.vendor, f"timed out: {exc}") from exc
                self.sleep(self.retry.backoff(attempt))
                continue
            except httpx.TransportError as exc:
                if attempt >= max_attempts:
                    raise VendorUnavailable(self.vendor, f"connection failed: {exc}") from exc
                self.sleep(self.retry.backoff(attempt))
                continue

            if is_ok(response):
                return response
            if response.status_code in RETRYABLE_STATUSES:
                wait = retry_after_seconds(response)
                if wait is not None and wait > self.retry.max_retry_after:
                    raise HoldOpen(self._error(response), wait)
                if attempt < max_attempts:
                    delay = wait if wait is not None else self.retry.backoff(attempt)
                    log.info(
                        "%s %s %s -> %s; retrying in %.2fs",
                        self.vendor,
                        method,
                        url,
                        response.status_code,
                        delay,
                    )
                    self.sleep(delay)
                    continue
            raise self._error(response)

    def _error(self, response: httpx.Response) -> IntegrationError:
        if self.error_mapper is not None:
            return self.error_mapper(response)
        return default_error(self.vendor, response, response.text[:300] or response.reason_phrase)
