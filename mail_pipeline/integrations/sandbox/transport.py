"""The base of every sandbox vendor: an ``httpx`` transport that answers like the vendor.

A real client is built with ``transport=<Vendor>Sandbox(...)`` instead of the network, so the
exact code that talks to the vendor in production is what runs locally and in tests. The base
adds what real vendors do to callers: latency, a rate limit answered with the vendor's 429,
random 5xx before the request is processed, and - the dangerous one - a *lost response* after
the request was processed (the caller sees a timeout although the vendor did the work).
Subclasses declare routes and the vendor's error body.

Besides those rates, a test (or the sandbox server's ``POST /_faults``) can plan faults at run
time on a transport's :class:`FaultPlan` (``transport.faults``): the next N requests, or those
within a time window, optionally only of one method and path, meet a 429 storm (the vendor's
own 429 and headers, with or without its wait), a 5xx, a timeout, a slow answer, a connection
reset before the vendor acted, or a lost answer after it acted (:class:`FaultKind`).
``transport.requests`` counts the requests by ``"METHOD path"``.
"""

from __future__ import annotations

import functools
import json
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
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


class FaultKind(StrEnum):
    """What a planned fault does to a request (see :class:`Fault`)."""

    #: The vendor's own 429 (``rate_limited``) with its wait header(s): ``seconds``.
    RATE_LIMITED = "rate_limited"
    #: The vendor's own 429 without any header saying how long to wait.
    RATE_LIMITED_NO_WAIT = "rate_limited_no_wait"
    #: A 5xx (``status``) with the vendor's error body, before the vendor acted.
    SERVER_ERROR = "server_error"
    #: No answer within the client's read timeout, before the vendor acted.
    TIMEOUT = "timeout"
    #: The answer comes ``seconds`` late. Past the client's read timeout (when the request
    #: says it) the vendor acts but the client has given up: a lost response.
    SLOW = "slow"
    #: The connection is reset before the request reached the vendor.
    CONNECTION_RESET = "connection_reset"
    #: The vendor acted; its answer never arrives (the client's read times out).
    LOST_RESPONSE = "lost_response"
    #: The vendor acted; the connection is reset before its answer arrives.
    RESET_AFTER_ACTING = "reset_after_acting"
    #: A refusal (``status``, a 4xx) with the vendor's error body: the vendor is up.
    REFUSED = "refused"


#: Kinds after which the vendor has done the work.
ACTED = frozenset({FaultKind.LOST_RESPONSE, FaultKind.RESET_AFTER_ACTING})
#: Defaults of ``Fault.seconds`` by kind (a timeout's is the client's read timeout if known).
DEFAULT_FAULT_SECONDS = {
    FaultKind.RATE_LIMITED: 2.0,
    FaultKind.SLOW: 1.0,
    FaultKind.TIMEOUT: 10.0,
}


FAULT_FIELDS = frozenset({"kind", "times", "for_seconds", "seconds", "status", "method", "path"})


@dataclass(frozen=True)
class Fault:
    """One planned fault: ``kind`` for the next ``times`` matching requests (``None``: every
    one), within ``for_seconds`` of being planned (``None``: until used up or cleared).
    ``method`` and ``path`` (a regular expression searched in the path the vendor's routes
    see) narrow which requests match."""

    kind: FaultKind
    times: int | None = 1
    for_seconds: float | None = None
    #: ``RATE_LIMITED``: the wait the vendor asks for; ``SLOW``: the delay; ``TIMEOUT``: how
    #: long the vendor stays silent (default: the client's read timeout, else 10 s).
    seconds: float | None = None
    #: ``SERVER_ERROR`` (default 503) or ``REFUSED`` (default 422).
    status: int | None = None
    method: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError("a fault applies to at least one request (times=None: all)")
        status = self.status
        if status is not None:
            if self.kind is FaultKind.SERVER_ERROR and not 500 <= status <= 599:
                raise ValueError(f"a server error is a 5xx, not {status}")
            if self.kind is FaultKind.REFUSED and not 400 <= status <= 499:
                raise ValueError(f"a refusal is a 4xx, not {status}")
        if self.path is not None:
            try:
                re.compile(self.path)
            except re.error as exc:
                raise ValueError(f"a fault's path {self.path!r} is not a pattern: {exc}") from exc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """A fault from its JSON form (the field names; ``kind`` by value), or ValueError."""
        unknown = set(data) - {
            "kind",
            "times",
            "for_seconds",
            "seconds",
            "status",
            "method",
            "path",
        }
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        try:
            kind = FaultKind(data["kind"])
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"a fault needs a kind, one of {', '.join(k.value for k in FaultKind)}"
            ) from exc
        for name in ("times", "status"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"a fault's {name} must be a whole number or null")
        for name in ("for_seconds", "seconds"):
            value = data.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"a fault's {name} must be a number or null")
        for name in ("method", "path"):
            if data.get(name) is not None and not isinstance(data.get(name), str):
                raise ValueError(f"a fault's {name} must be text or null")
        return cls(
            kind,
            times=data.get("times", 1),
            for_seconds=data.get("for_seconds"),
            seconds=data.get("seconds"),
            status=data.get("status"),
            method=data.get("method"),
            path=data.get("path"),
        )

    def wait(self, request: httpx.Request | None = None) -> float:
        if self.seconds is not None:
            return self.seconds
        if self.kind is FaultKind.TIMEOUT and request is not None:
            read = _read_timeout(request)
            if read is not None:
                return read
        return DEFAULT_FAULT_SECONDS.get(self.kind, 0.0)


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    read = timeout.get("read") if isinstance(timeout, dict) else None
    return float(read) if isinstance(read, int | float) else None


@dataclass
class _Planned:
    fault: Fault
    remaining: int | None
    until: float | None
    pattern: re.Pattern[str] | None = field(default=None)


class FaultPlan:
    """The faults planned on one transport, taken by the requests they match (thread-safe).

    Faults are matched in the order they were planned; a used-up or expired one is dropped.
    ``injected`` counts what was injected, by kind."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._planned: list[_Planned] = []
        self.injected: Counter[FaultKind] = Counter()

    def add(self, fault: Fault) -> Fault:
        until = None if fault.for_seconds is None else self._clock() + fault.for_seconds
        pattern = None if fault.path is None else re.compile(fault.path)
        with self._lock:
            self._planned.append(_Planned(fault, fault.times, until, pattern))
        return fault

    def clear(self) -> None:
        """No more faults (what was injected stays counted)."""
        with self._lock:
            self._planned.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The fault this request meets, if any (one use of it is taken)."""
        now = self._clock()
        with self._lock:
            self._planned = [p for p in self._planned if p.until is None or now < p.until]
            for planned in self._planned:
                fault = planned.fault
                if fault.method is not None and fault.method.upper() != method:
                    continue
                if planned.pattern is not None and not planned.pattern.search(path):
                    continue
                if planned.remaining is not None:
                    planned.remaining -= 1
                    if planned.remaining <= 0:
                        self._planned.remove(planned)
                self.injected[fault.kind] += 1
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """The faults still planned, as JSON (``remaining``: requests left, None: all)."""
        now = self._clock()
        with self._lock:
            return [
                {
                    "kind": p.fault.kind.value,
                    "remaining": p.remaining,
                    "seconds_left": None if p.until is None else max(0.0, p.until - now),
                    "method": p.fault.method,
                    "path": p.fault.path,
                }
                for p in self._planned
                if p.until is None or now < p.until
            ]


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
        #: Requests by ``"METHOD path"`` (the path the routes see).
        self.requests: Counter[str] = Counter()
        #: Faults a test or the sandbox server plans at run time.
        self.faults = FaultPlan(clock)
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
    def inject(self, kind: FaultKind | str, **options: Any) -> Fault:
        """Plan a fault (see :class:`Fault` for the options); returns it."""
        return self.faults.add(Fault(FaultKind(kind), **options))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(self.mount_path)
        with self._lock:
            self.request_count += 1
            self.requests[f"{request.method} {path}"] += 1
            roll_fail = self._random.random()
            roll_lost = self._random.random()
            jitter = self._random.uniform(-1, 1)
        b = self.behaviour
        # A vendor's rate window counts a request when it arrives, and refuses one over the
        # limit at once (a 429 costs the vendor no processing); the latency is the time an
        # accepted request then takes. The sandbox server's accounting reads the moment.
        now = self.clock()
        request.extensions[DECIDED_AT] = now
        fault = self.faults.take(request.method, path)
        if fault is not None:
            faulted = self._before_acting(fault, request)
            if faulted is not None:
                return faulted
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
        if fault is not None and (
            fault.kind in ACTED
            or (fault.kind is FaultKind.SLOW and _past_read_timeout(fault, request))
        ):
            if fault.kind is FaultKind.RESET_AFTER_ACTING:
                raise httpx.RemoteProtocolError(
                    f"sandbox {self.vendor}: the connection was reset after the request was "
                    "processed",
                    request=request,
                )
            raise httpx.ReadTimeout(
                f"sandbox {self.vendor}: the response was lost after the request was processed",
                request=request,
            )
        if roll_lost < b.lost_response_rate and response.status_code < 500:
            raise httpx.ReadTimeout("sandbox: the response was lost", request=request)
        return response

    def _before_acting(self, fault: Fault, request: httpx.Request) -> httpx.Response | None:
        """What a planned fault does before the vendor acts: an answer, an exception, or
        ``None`` (the request goes on, and the fault may strike after the vendor acted)."""
        kind = fault.kind
        if kind is FaultKind.RATE_LIMITED:
            return self.rate_limited(fault.wait())
        if kind is FaultKind.RATE_LIMITED_NO_WAIT:
            response = self.rate_limited(fault.wait())
            for name in WAIT_HEADERS:
                response.headers.pop(name, None)
            return response
        if kind is FaultKind.SERVER_ERROR:
            status = fault.status or 503
            return self.error(status, "service temporarily unavailable", "service_unavailable")
        if kind is FaultKind.REFUSED:
            status = fault.status or 422
            return self.error(status, "the request was refused (a planned fault)", "refused")
        if kind is FaultKind.TIMEOUT:
            self.sleep(fault.wait(request))
            raise httpx.ReadTimeout(
                f"sandbox {self.vendor}: no answer within the read timeout", request=request
            )
        if kind is FaultKind.CONNECTION_RESET:
            raise httpx.RemoteProtocolError(
                f"sandbox {self.vendor}: the connection was reset before the request arrived",
                request=request,
            )
        if kind is FaultKind.SLOW:
            read = _read_timeout(request)
            self.sleep(fault.wait() if read is None else min(fault.wait(), read))
        return None

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


#: Headers in which vendors say how long to wait (``RATE_LIMITED_NO_WAIT`` removes them).
WAIT_HEADERS = (
    "retry-after",
    "x-rate-limit-reset",
    "x-ratelimit-reset",
    "ratelimit-reset",
    "ratelimit",
)


def _past_read_timeout(fault: Fault, request: httpx.Request) -> bool:
    read = _read_timeout(request)
    return read is not None and fault.wait() > read
