"""The base of every sandbox vendor: an ``httpx`` transport that answers like the vendor.

A real client is built with ``transport=<Vendor>Sandbox(...)`` instead of the network, so the
exact code that talks to the vendor in production is what runs locally and in tests. The base
adds what real vendors do to callers: latency, a rate limit answered with the vendor's 429,
random 5xx before the request is processed, and - the dangerous one - a *lost response* after
the request was processed (the caller sees a timeout although the vendor did the work).
Subclasses declare routes and the vendor's error body.
"""

from __future__ import annotations

import functools
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from mail_pipeline.integrations.sandbox.store import SandboxStore


@dataclass(frozen=True)
class SandboxBehaviour:
    """How a sandbox misbehaves. The defaults are a well-behaved vendor with no latency."""

    latency_seconds: float = 0.0
    #: Latency varies uniformly by +- this fraction.
    latency_jitter: float = 0.2
    #: Probability that a request fails with a 5xx before the vendor processes it.
    failure_rate: float = 0.0
    #: Probability that the vendor processes a request but the response never arrives.
    lost_response_rate: float = 0.0
    #: ``(max_calls, per_seconds)``: more calls in the window are answered with 429.
    rate_limit: tuple[int, float] | None = None
    seed: int | None = None


Handler = Callable[..., httpx.Response]

#: ``request.extensions`` key: the time (``clock``) at which the vendor took the request in,
#: before its latency - the moment its rate window counts the call.
DECIDED_AT = "sandbox_decided_at"


def atomic(handler: Handler) -> Handler:
    """Run a sandbox handler in one store transaction, as a vendor applies a request whole:
    a crash mid-request never leaves an idempotency key without the object it names."""

    @functools.wraps(handler)
    def wrapper(self: SandboxTransport, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        with self.store.transaction():
            return handler(self, request, **kwargs)

    return wrapper


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


class SandboxTransport(httpx.BaseTransport):
    vendor: ClassVar[str] = "sandbox"
    #: ``(method, path regex, handler method name)``; named groups become keyword arguments.
    routes: ClassVar[list[tuple[str, str, str]]] = []

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store or SandboxStore()
        self.behaviour = behaviour or SandboxBehaviour()
        self.sleep = sleep
        self.clock = clock
        self._random = random.Random(self.behaviour.seed)
        self._window: deque[float] = deque()
        self._lock = threading.Lock()
        self._compiled = [(m, re.compile(p + r"/?$"), h) for m, p, h in self.routes]
        self.request_count = 0
        #: The path this vendor is mounted under when the sandbox server (``server.py``)
        #: serves it: routes match the path after it, while handlers see the request's full
        #: URL, so links they write (Klaviyo's ``links.next``) lead back through the server.
        self.mount_path = ""

    # -- what subclasses override -------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None) -> httpx.Response:
        """The vendor's error body for ``status``."""
        return json_response(status, {"error": {"message": message, "code": code}})

    def rate_limited(self, retry_after: float) -> httpx.Response:
        """The vendor's 429 (headers differ by vendor)."""
        return self.error(429, "rate limit exceeded", "rate_limit_exceeded")

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        """Return an error response when the request's credentials are wrong."""
        return None

    # -- the transport --------------------------------------------------------------------
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.request_count += 1
            roll_fail = self._random.random()
            roll_lost = self._random.random()
            jitter = self._random.uniform(-1, 1)
        b = self.behaviour
        # A vendor's rate window counts a request when it arrives, and refuses one over the
        # limit at once (a 429 costs the vendor no processing); the latency is the time an
        # accepted request then takes. The sandbox server's accounting reads the moment.
        now = self.clock()
        request.extensions[DECIDED_AT] = now
        if b.rate_limit is not None:
            wait = self._take_rate_slot(*b.rate_limit, now=now)
            if wait is not None:
                return self.rate_limited(wait)
        if b.latency_seconds:
            self.sleep(max(0.0, b.latency_seconds * (1 + b.latency_jitter * jitter)))
        if roll_fail < b.failure_rate:
            return self.error(503, "service temporarily unavailable", "service_unavailable")
        denied = self.authenticate(request)
        if denied is not None:
            return denied
        response = self._dispatch(request)
        if roll_lost < b.lost_response_rate and response.status_code < 500:
            raise httpx.ReadTimeout("sandbox: the response was lost", request=request)
        return response

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(self.mount_path)
        allowed = False
        for method, pattern, handler in self._compiled:
            match = pattern.match(path)
            if match is None:
                continue
            allowed = True
            if method == request.method:
                response: httpx.Response = getattr(self, handler)(request, **match.groupdict())
                return response
        if allowed:
            return self.error(405, f"{request.method} is not allowed on {path}", "not_allowed")
        return self.error(404, f"no such endpoint: {request.method} {path}", "not_found")

    def _take_rate_slot(
        self, max_calls: int, per_seconds: float, now: float | None = None
    ) -> float | None:
        """Count a call in the sliding window; the seconds until a slot frees when full."""
        now = self.clock() if now is None else now
        with self._lock:
            while self._window and now - self._window[0] >= per_seconds:
                self._window.popleft()
            if len(self._window) >= max_calls:
                return per_seconds - (now - self._window[0])
            self._window.append(now)
            return None
