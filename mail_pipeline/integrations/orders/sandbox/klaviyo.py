"""Klaviyo's events and metrics, read side, for one account: the Klaviyo sandbox plus
``GET /api/events`` and ``GET /api/metrics``.

It is the :class:`~mail_pipeline.integrations.klaviyo.sandbox.KlaviyoSandbox` (same
``Klaviyo-API-Key`` check, ``revision`` header, JSON:API errors, per-endpoint burst and
steady windows answered with 429 and ``Retry-After``) serving one account's events from the
order book (``book``), as the real API does:

- ``GET /api/events``: ``filter`` with ``equals(metric_id,"...")`` and
  ``greater-or-equal``/``greater-than``/``less-or-equal``/``less-than`` on ``datetime``,
  comma-joined (each term is ANDed); ``sort=datetime``; ``include=profile`` (the profiles in
  ``included``); ``fields[event]`` and ``fields[profile]``; ``page[size]`` 1..1000 (default
  200); an opaque base64 ``page[cursor]`` in ``links.next``; events in the future are not
  served yet. Limits 350/s and 3,500/min.
- ``GET /api/metrics``: the account's metrics (one page), ``fields[metric]``. Limits 10/s
  and 150/min.

Anything else the real API accepts (other filters, other sorts) is refused with a 400 that
says the sandbox does not support it, so a client relying on it fails in tests, not later.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mail_pipeline.integrations.klaviyo.sandbox import (
    SANDBOX_API_KEY,
    KlaviyoLimits,
    KlaviyoSandbox,
    _FixedWindows,
    _jsonapi_response,
)
from mail_pipeline.integrations.orders.sandbox.book import OrderBook
from mail_pipeline.integrations.orders.sandbox.data import OrderSandboxData
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

_TERM = re.compile(r"([a-z-]+)\(([^(),]+),([^()]+)\)")
_TIME_OPERATORS = {"greater-or-equal", "greater-than", "less-or-equal", "less-than"}
_EVENT_FIELDS = frozenset({"datetime", "event_properties", "id", "timestamp", "uuid"})
_METRIC_FIELDS = frozenset({"created", "id", "integration", "name", "updated"})
#: Klaviyo's limits of the endpoints the CDP sandbox already answers.
_WRITE_LIMITS = KlaviyoLimits()
#: A hair of a second: turns greater-than/less-or-equal into the book's [since, until).
_EPSILON = 1e-6


@dataclass(frozen=True)
class KlaviyoReadLimits:
    """``(burst per second, steady per minute)`` of the read endpoints (integrations.md §3)."""

    get_events: tuple[int, int] = (350, 3500)
    metrics: tuple[int, int] = (10, 150)


@dataclass(frozen=True)
class _EventQuery:
    metric_id: str | None
    since: float | None
    until: float | None


class KlaviyoOrdersSandbox(KlaviyoSandbox):
    routes = [
        *KlaviyoSandbox.routes,
        ("GET", r"/api/events", "get_events"),
        ("GET", r"/api/metrics", "get_metrics"),
    ]

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        account: str,
        api_key: str = SANDBOX_API_KEY,
        limits: KlaviyoLimits | None = _WRITE_LIMITS,
        read_limits: KlaviyoReadLimits | None = KlaviyoReadLimits(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``limits=None`` switches every rate limit off."""
        super().__init__(store, behaviour, api_key=api_key, limits=limits, sleep=sleep, clock=clock)
        self.account = account
        self.book = OrderBook(self.store, "klaviyo")
        self.data = OrderSandboxData(self.store, clock=clock)
        if self._limits is not None and read_limits is not None:
            self._limits["get_events"] = _FixedWindows(*read_limits.get_events)
            self._limits["metrics"] = _FixedWindows(*read_limits.metrics)

    def _bad(self, detail: str, parameter: str) -> httpx.Response:
        return self.error(400, detail, source={"parameter": parameter})

    # -- GET /api/events -------------------------------------------------------------------
    def get_events(self, request: httpx.Request) -> httpx.Response:
        denied, limit_headers = self._preflight(request, "get_events")
        if denied is not None:
            return denied
        params = request.url.params
        query = _parse_filter(params.get("filter"))
        if isinstance(query, str):
            return self._bad(query, "filter")
        if params.get("sort", "datetime") != "datetime":
            return self._bad("The sandbox supports sort=datetime only.", "sort")
        size_text = params.get("page[size]", "200")
        if not size_text.isdigit() or not 1 <= int(size_text) <= 1000:
            return self._bad(
                f"page[size] must be an integer between 1 and 1000, not {size_text!r}.",
                "page[size]",
            )
        includes = [name for name in params.get("include", "").split(",") if name]
        unknown = [name for name in includes if name not in ("profile", "metric", "attributions")]
        if unknown:
            return self._bad(f"Invalid include value(s): {', '.join(unknown)}.", "include")
        event_fields = _fields(params.get("fields[event]"))
        if event_fields is not None and not set(event_fields) <= _EVENT_FIELDS:
            return self._bad("Invalid field(s) for event.", "fields[event]")
        after = None
        if "page[cursor]" in params:
            after = _decode_cursor(params["page[cursor]"])
            if after is None:
                return self._bad("Invalid page cursor.", "page[cursor]")
        size = int(size_text)
        rows = self.book.page(
            self.account,
            now=self.clock(),
            since=query.since,
            until=query.until,
            after=after,
            tag=query.metric_id,
            limit=size + 1,
        )
        more, rows = len(rows) > size, rows[:size]
        data = [_sparse(row.doc["event"], event_fields) for row in rows]
        body: dict[str, Any] = {"data": data}
        next_url = None
        if more:
            token = _encode_cursor(rows[-1].effective_at, rows[-1].key)
            next_url = str(request.url.copy_set_param("page[cursor]", token))
        body["links"] = {"self": str(request.url), "next": next_url, "prev": None}
        if "profile" in includes:
            profile_fields = _fields(params.get("fields[profile]"))
            seen: dict[str, Any] = {}
            for row in rows:
                profile = row.doc.get("profile")
                if isinstance(profile, dict) and str(profile.get("id")) not in seen:
                    seen[str(profile.get("id"))] = _sparse(profile, profile_fields)
            body["included"] = list(seen.values())
        return _jsonapi_response(200, body, limit_headers)

    # -- GET /api/metrics ------------------------------------------------------------------
    def get_metrics(self, request: httpx.Request) -> httpx.Response:
        denied, limit_headers = self._preflight(request, "metrics")
        if denied is not None:
            return denied
        params = request.url.params
        if "filter" in params:
            return self._bad("The sandbox does not support filter on metrics.", "filter")
        fields = _fields(params.get("fields[metric]"))
        if fields is not None and not set(fields) <= _METRIC_FIELDS:
            return self._bad("Invalid field(s) for metric.", "fields[metric]")
        metrics = [_sparse(m, fields) for m in self.data.klaviyo_metrics(self.account)]
        links = {"self": str(request.url), "next": None, "prev": None}
        return _jsonapi_response(200, {"data": metrics, "links": links}, limit_headers)


def _fields(value: str | None) -> list[str] | None:
    return None if value is None else [name for name in value.split(",") if name]


def _sparse(resource: Any, fields: list[str] | None) -> Any:
    if fields is None or not isinstance(resource, dict):
        return resource
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        return resource
    return {**resource, "attributes": {k: v for k, v in attributes.items() if k in fields}}


def _time(text: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(text.strip().strip("'\""))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _parse_filter(value: str | None) -> _EventQuery | str:
    """The events filter, or the 400's detail."""
    if value is None:
        return _EventQuery(None, None, None)
    terms = _TERM.findall(value)
    if ",".join(f"{op}({field},{arg})" for op, field, arg in terms) != value:
        return f"Invalid filter {value!r}."
    metric_id: str | None = None
    since: float | None = None
    until: float | None = None
    for op, field, arg in terms:
        if field == "metric_id" and op == "equals":
            metric_id = arg.strip().strip("'\"")
        elif field == "datetime" and op in _TIME_OPERATORS:
            moment = _time(arg)
            if moment is None:
                return f"Invalid datetime {arg!r} in filter."
            if op == "greater-or-equal":
                since = moment if since is None else max(since, moment)
            elif op == "greater-than":
                since = moment + _EPSILON if since is None else max(since, moment + _EPSILON)
            elif op == "less-than":
                until = moment if until is None else min(until, moment)
            else:
                until = moment + _EPSILON if until is None else min(until, moment + _EPSILON)
        else:
            return f"The sandbox does not support {op}({field},...) on events."
    return _EventQuery(metric_id, since, until)


def _encode_cursor(effective_at: float, key: str) -> str:
    raw = json.dumps({"t": effective_at, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[float, str] | None:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    at, key = doc.get("t"), doc.get("k")
    if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(key, str):
        return None
    return float(at), key
