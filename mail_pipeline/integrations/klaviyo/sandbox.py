"""A stand-in for Klaviyo's API: the real :class:`KlaviyoClient` runs against it unchanged.

It answers the endpoints the pipeline uses the way Klaviyo does (integrations.md §3):

- ``GET /api/segments/{id}/profiles``: the seeded members in JSON:API pages, ``page[size]``
  1..100 (default 20), an opaque base64 cursor in ``links.next``, sparse fieldsets, the
  ``greater-than(joined_group_at, ...)`` filter; 404 for a segment nobody seeded.
- ``POST /api/events``: 202 with an empty body; the first event per
  ``(unique_id, profile, metric)`` is recorded and repeats are silently dropped (without a
  ``unique_id``, one event per profile, metric and second).
- ``POST /api/event-bulk-create-jobs``: 202 with an empty body; up to 1,000 events (one or
  more per profile entry), each validated as ``POST /api/events`` validates one and recorded
  the same way; one invalid event refuses the whole job with a 400 whose ``source.pointer``
  names it, as Klaviyo validates a job before accepting it. 10 calls a second, 150 a minute.
- ``GET /api/accounts``: the one account the key belongs to (:data:`SANDBOX_ACCOUNT`),
  limited to 1 request per second and 15 per minute as Klaviyo's accounts endpoint is;
- ``GET /api/segments/{id}``: a seeded segment (its id as name), without its members; 404
  for a segment nobody seeded.
- ``GET /api/profiles``: seeded profiles (of any segment, or added alone) by id with the
  ``any(id,["...",...])`` filter (at most 100 ids), sparse fieldsets, ``page[size]`` 1..100;
  ids nobody seeded are simply not in the answer, as in Klaviyo.

Like Klaviyo it wants ``Authorization: Klaviyo-API-Key <key>`` (401 otherwise) and a
``revision`` header (400 otherwise), answers errors as ``{"errors": [...]}``, and rate-limits
each endpoint with a burst (per second) and a steady (per minute) fixed window, answering 429
with ``Retry-After`` and *no* ``RateLimit-*`` headers (other answers carry them). Seeded data
and recorded events live in the shared store; the rate windows, like the base class's, are
counted per sandbox instance.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mail_pipeline.integrations.klaviyo.sandbox_data import (
    EVENTS,
    PROFILE_EMAILS,
    PROFILES,
    SEGMENTS,
    segment_collection,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour, SandboxTransport, atomic

SANDBOX_API_KEY = "pk_sandbox_klaviyo"
#: The account the sandbox key belongs to (``GET /api/accounts``).
SANDBOX_ACCOUNT = {"id": "SbxK1a", "organization_name": "Klaviyo sandbox"}
JSONAPI = "application/vnd.api+json"
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.pre)?$")
_FILTER = re.compile(r"^greater-than\(joined_group_at,([^)]+)\)$")
_ID_FILTER = re.compile(r"^any\(id,\[(.*)\]\)$")
_MAX_FILTER_IDS = 100
_PROFILE_ATTRIBUTES = frozenset(
    {
        "email",
        "phone_number",
        "external_id",
        "anonymous_id",
        "first_name",
        "last_name",
        "organization",
        "locale",
        "title",
        "image",
        "created",
        "updated",
        "last_event_date",
        "location",
        "properties",
        "joined_group_at",
    }
)
_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    415: "Unsupported media type.",
    429: "Request was throttled.",
    500: "A server error occurred.",
    503: "Service unavailable.",
}
_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    415: "unsupported_media_type",
    429: "throttled",
    500: "error",
    503: "service_unavailable",
}
#: The base transport's generic codes, in Klaviyo's words.
_BASE_CODES = {"not_allowed": "method_not_allowed", "rate_limit_exceeded": "throttled"}
_MAX_PROPERTIES = 400
_MAX_BULK_EVENTS = 1000
_EARLIEST_EVENT = datetime(1990, 1, 1, tzinfo=UTC)
_YEAR = 365 * 24 * 3600.0


@dataclass(frozen=True)
class KlaviyoLimits:
    """Per-endpoint ``(burst per second, steady per minute)`` (integrations.md §3)."""

    segment_profiles: tuple[int, int] = (75, 750)
    events: tuple[int, int] = (350, 3500)
    bulk_events: tuple[int, int] = (10, 150)
    accounts: tuple[int, int] = (1, 15)
    segments: tuple[int, int] = (75, 700)
    profiles: tuple[int, int] = (75, 700)


class _FixedWindows:
    """Klaviyo's two fixed windows for one endpoint: burst (1 s) and steady (60 s)."""

    def __init__(self, burst: int, steady: int) -> None:
        self.windows = ((burst, 1.0), (steady, 60.0))
        self.counts: dict[float, tuple[int, int]] = {}

    def take(self, now: float) -> tuple[float | None, dict[str, str]]:
        """Count a call; return ``(retry_after, headers)`` - ``retry_after`` set when full."""
        state = []
        for limit, length in self.windows:
            bucket = int(now // length)
            current_bucket, used = self.counts.get(length, (bucket, 0))
            if current_bucket != bucket:
                used = 0
            state.append((limit, length, bucket, used))
        full = [
            (bucket + 1) * length - now for limit, length, bucket, used in state if used >= limit
        ]
        if full:
            return max(full), {}
        for _limit, length, bucket, used in state:
            self.counts[length] = (bucket, used + 1)
        remaining = min(limit - used - 1 for limit, _l, _b, used in state)
        reset = min((bucket + 1) * length - now for _lim, length, bucket, _u in state)
        burst, steady = self.windows
        headers = {
            "RateLimit-Limit": f"{burst[0]}, {burst[0]};w=1, {steady[0]};w=60",
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(max(1, math.ceil(reset))),
        }
        return None, headers


def _jsonapi_response(
    status: int, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": JSONAPI, **(headers or {})},
    )


class KlaviyoSandbox(SandboxTransport):
    vendor = "klaviyo"
    routes = [
        ("GET", r"/api/segments/(?P<segment_id>[^/]+)/profiles", "get_segment_profiles"),
        ("POST", r"/api/events", "create_event"),
        ("POST", r"/api/event-bulk-create-jobs", "bulk_create_events"),
        ("GET", r"/api/accounts", "get_accounts"),
        ("GET", r"/api/segments/(?P<segment_id>[^/]+)", "get_segment"),
        ("GET", r"/api/profiles", "get_profiles"),
    ]

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        api_key: str = SANDBOX_API_KEY,
        limits: KlaviyoLimits | None = KlaviyoLimits(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``limits=None`` switches Klaviyo's rate limits off."""
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.api_key = api_key
        self._limits = (
            None
            if limits is None
            else {
                "segment_profiles": _FixedWindows(*limits.segment_profiles),
                "events": _FixedWindows(*limits.events),
                "bulk_events": _FixedWindows(*limits.bulk_events),
                "accounts": _FixedWindows(*limits.accounts),
                "segments": _FixedWindows(*limits.segments),
                "profiles": _FixedWindows(*limits.profiles),
            }
        )

    # -- the vendor's answers ---------------------------------------------------------------
    def _profile_fields(
        self, params: Mapping[str, str]
    ) -> tuple[list[str] | None, httpx.Response | None]:
        """The sparse fieldset ``fields[profile]`` asks for (None: every field), or the
        400 Klaviyo answers for a field a profile does not have."""
        if "fields[profile]" not in params:
            return None, None
        fields = [f for f in params["fields[profile]"].split(",") if f]
        unknown = [f for f in fields if f.split(".", 1)[0] not in _PROFILE_ATTRIBUTES]
        if unknown:
            return None, self.error(
                400,
                f"Invalid field(s) {', '.join(unknown)} for profile.",
                source={"parameter": "fields[profile]"},
            )
        return fields, None

    def error(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        source: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Klaviyo's JSON:API error document."""
        error = {
            "id": str(uuid.uuid4()),
            "status": status,
            "code": _BASE_CODES.get(code, code) if code else _CODES.get(status, "error"),
            "title": _TITLES.get(status, "Error."),
            "detail": message,
            "source": source or {"pointer": "/data/"},
            "links": {},
            "meta": {},
        }
        return _jsonapi_response(status, {"errors": [error]}, headers)

    def rate_limited(self, retry_after: float) -> httpx.Response:
        """429 with ``Retry-After`` (whole seconds) and no ``RateLimit-*`` headers."""
        seconds = max(1, math.ceil(retry_after))
        return self.error(
            429,
            f"Request was throttled. Expected available in {seconds} "
            f"second{'s' if seconds != 1 else ''}.",
            "throttled",
            headers={"Retry-After": str(seconds)},
        )

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != "Klaviyo-API-Key" or not key.strip():
            return self.error(
                401,
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
                "not_authenticated",
            )
        if key.strip() != self.api_key:
            return self.error(401, "Incorrect authentication credentials.", "authentication_failed")
        return None

    def _preflight(
        self, request: httpx.Request, endpoint: str
    ) -> tuple[httpx.Response | None, dict[str, str]]:
        """The revision header, then the endpoint's rate limit."""
        revision = request.headers.get("revision")
        if not revision:
            return self.error(
                400,
                "Missing required header 'revision'. Set it to an API "
                "revision date such as 2026-07-15.",
                source={"parameter": "revision"},
            ), {}
        if not _REVISION.match(revision):
            return self.error(
                400,
                f"Invalid revision {revision!r}; expected YYYY-MM-DD.",
                source={"parameter": "revision"},
            ), {}
        if self._limits is None:
            return None, {}
        with self._lock:
            wait, headers = self._limits[endpoint].take(self.clock())
        if wait is not None:
            return self.rate_limited(wait), {}
        return None, headers

    # -- GET /api/segments/{id}/profiles ------------------------------------------------------
    def get_segment_profiles(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        denied, limit_headers = self._preflight(request, "segment_profiles")
        if denied is not None:
            return denied
        if self.store.get(SEGMENTS, segment_id) is None:
            return self.error(
                404, f"A segment with id {segment_id} does not exist.", source={"parameter": "id"}
            )
        params = request.url.params
        size_text = params.get("page[size]", "20")
        if not size_text.isdigit() or not 1 <= int(size_text) <= 100:
            return self.error(
                400,
                f"page[size] must be an integer between 1 and 100, not {size_text!r}.",
                source={"parameter": "page[size]"},
            )
        size = int(size_text)
        after = 0
        cursor = params.get("page[cursor]")
        if cursor is not None:
            decoded = _decode_cursor(cursor, segment_id)
            if decoded is None:
                return self.error(400, "Invalid page cursor.", source={"parameter": "page[cursor]"})
            after = decoded
        joined_after: datetime | None = None
        if "filter" in params:
            match = _FILTER.match(params["filter"])
            parsed = _parse_time(match.group(1)) if match else None
            if parsed is None:
                return self.error(
                    400,
                    f"Invalid filter {params['filter']!r}; the sandbox "
                    "supports greater-than(joined_group_at,<datetime>).",
                    source={"parameter": "filter"},
                )
            joined_after = parsed
        if "sort" in params:
            return self.error(
                400,
                "The sandbox does not support sort on this endpoint.",
                source={"parameter": "sort"},
            )
        fields, refused = self._profile_fields(params)
        if refused is not None:
            return refused

        rows, more = self._members(segment_id, after, size, joined_after)
        data = [_sparse(doc["resource"], fields) for _seq, doc in rows]
        next_url = None
        if more:
            token = _encode_cursor(rows[-1][0], segment_id)
            next_url = str(request.url.copy_set_param("page[cursor]", token))
        links = {"self": str(request.url), "next": next_url, "prev": None}
        return _jsonapi_response(200, {"data": data, "links": links}, limit_headers)

    def _members(
        self, segment_id: str, after: int, size: int, joined_after: datetime | None
    ) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """Up to ``size`` members after seq ``after`` that pass the filter, and whether more
        follow."""
        collection = segment_collection(segment_id)
        found: list[tuple[int, dict[str, Any]]] = []
        while True:
            rows = self.store.scan(collection, after_seq=after, limit=size + 1)
            for seq, _key, doc in rows:
                if joined_after is None or _joined_after(doc["resource"], joined_after):
                    if len(found) == size:
                        return found, True
                    found.append((seq, doc))
            if len(rows) < size + 1:
                return found, False
            after = rows[-1][0]

    # -- GET /api/profiles -----------------------------------------------------------------
    def get_profiles(self, request: httpx.Request) -> httpx.Response:
        denied, limit_headers = self._preflight(request, "profiles")
        if denied is not None:
            return denied
        params = request.url.params
        size_text = params.get("page[size]", "20")
        if not size_text.isdigit() or not 1 <= int(size_text) <= 100:
            return self.error(
                400,
                f"page[size] must be an integer between 1 and 100, not {size_text!r}.",
                source={"parameter": "page[size]"},
            )
        ids = _filter_ids(params.get("filter"))
        if ids is None:
            return self.error(
                400,
                'Invalid filter; the sandbox supports any(id,["<id>",...]) with at most '
                f"{_MAX_FILTER_IDS} ids.",
                source={"parameter": "filter"},
            )
        fields, refused = self._profile_fields(params)
        if refused is not None:
            return refused
        scope = "profiles:" + params["filter"]
        after = 0
        if "page[cursor]" in params:
            decoded = _decode_cursor(params["page[cursor]"], scope)
            if decoded is None:
                return self.error(400, "Invalid page cursor.", source={"parameter": "page[cursor]"})
            after = decoded
        found = [doc for doc in (self.store.get(PROFILES, i) for i in ids) if doc is not None]
        size = int(size_text)
        page = found[after : after + size]
        next_url = None
        if after + size < len(found):
            token = _encode_cursor(after + size, scope)
            next_url = str(request.url.copy_set_param("page[cursor]", token))
        data = [_sparse(_without_segment(doc["resource"]), fields) for doc in page]
        links = {"self": str(request.url), "next": next_url, "prev": None}
        return _jsonapi_response(200, {"data": data, "links": links}, limit_headers)

    # -- GET /api/accounts -----------------------------------------------------------------
    def get_accounts(self, request: httpx.Request) -> httpx.Response:
        denied, limit_headers = self._preflight(request, "accounts")
        if denied is not None:
            return denied
        account_id = SANDBOX_ACCOUNT["id"]
        resource = {
            "type": "account",
            "id": account_id,
            "attributes": {
                "test_account": False,
                "contact_information": {
                    "default_sender_name": SANDBOX_ACCOUNT["organization_name"],
                    "default_sender_email": "sandbox@example.com",
                    "website_url": "https://example.com",
                    "organization_name": SANDBOX_ACCOUNT["organization_name"],
                },
                "industry": None,
                "timezone": "America/New_York",
                "preferred_currency": "USD",
                "public_api_key": account_id,
                "locale": "en-US",
            },
            "links": {"self": f"https://a.klaviyo.com/api/accounts/{account_id}/"},
        }
        links = {"self": str(request.url), "next": None, "prev": None}
        return _jsonapi_response(200, {"data": [resource], "links": links}, limit_headers)

    # -- GET /api/segments/{id} -------------------------------------------------------------
    def get_segment(self, request: httpx.Request, segment_id: str) -> httpx.Response:
        denied, limit_headers = self._preflight(request, "segments")
        if denied is not None:
            return denied
        if self.store.get(SEGMENTS, segment_id) is None:
            return self.error(
                404, f"A segment with id {segment_id} does not exist.", source={"parameter": "id"}
            )
        resource = {
            "type": "segment",
            "id": segment_id,
            "attributes": {
                "name": segment_id,
                "created": "2026-01-01T00:00:00+00:00",
                "updated": "2026-01-01T00:00:00+00:00",
                "is_active": True,
                "is_processing": False,
                "is_starred": False,
            },
            "links": {"self": f"https://a.klaviyo.com/api/segments/{segment_id}/"},
        }
        return _jsonapi_response(
            200, {"data": resource, "links": {"self": str(request.url)}}, limit_headers
        )

    def _write_request(
        self, request: httpx.Request, endpoint: str
    ) -> tuple[Any, dict[str, str]] | httpx.Response:
        """A POST's JSON body and its rate-limit headers, or the refusal: the revision, the
        endpoint's limit, the media type, the JSON."""
        denied, limit_headers = self._preflight(request, endpoint)
        if denied is not None:
            return denied
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in (JSONAPI, "application/json"):
            return self.error(415, f"Unsupported media type {media!r}; send {JSONAPI}.")
        try:
            return json.loads(request.content or b"null"), limit_headers
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")

    # -- POST /api/events -------------------------------------------------------------------
    @atomic
    def create_event(self, request: httpx.Request) -> httpx.Response:
        read = self._write_request(request, "events")
        if isinstance(read, httpx.Response):
            return read
        body, limit_headers = read
        parsed = self._parse_event(body)
        if isinstance(parsed, httpx.Response):
            return parsed
        self.store.insert_if_absent(EVENTS, parsed.pop("_dedupe_key"), parsed)
        return httpx.Response(202, content=b"", headers=limit_headers)

    # -- POST /api/event-bulk-create-jobs ----------------------------------------------------
    @atomic
    def bulk_create_events(self, request: httpx.Request) -> httpx.Response:
        read = self._write_request(request, "bulk_events")
        if isinstance(read, httpx.Response):
            return read
        body, limit_headers = read
        root = "/data/attributes/events-bulk-create/data"
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != "event-bulk-create-job":
            return self.error(
                400,
                "The body must be {'data': {'type': 'event-bulk-create-job', ...}}.",
                source={"pointer": "/data"},
            )
        entries = _nested(data, "attributes", "events-bulk-create", "data")
        if not isinstance(entries, list) or not entries:
            return self.error(
                400, "events-bulk-create.data must be a list of entries.", source={"pointer": root}
            )
        recorded: list[dict[str, Any]] = []
        for n, entry in enumerate(entries):
            events = _nested(entry, "attributes", "events", "data")
            if (
                not isinstance(entry, dict)
                or entry.get("type") != "event-bulk-create"
                or not isinstance(events, list)
                or not events
            ):
                return self.error(
                    400,
                    "Each entry must be an event-bulk-create with a profile and a list of events.",
                    source={"pointer": f"{root}/{n}"},
                )
            for m, event in enumerate(events):
                attributes = event.get("attributes") if isinstance(event, dict) else None
                single = {
                    "data": {
                        "type": event.get("type") if isinstance(event, dict) else None,
                        "attributes": {
                            **(attributes if isinstance(attributes, dict) else {}),
                            "profile": _nested(entry, "attributes", "profile"),
                        },
                    }
                }
                parsed = self._parse_event(
                    single,
                    bulk_entry=f"{root}/{n}",
                    bulk_event=f"{root}/{n}/attributes/events/data/{m}",
                )
                if isinstance(parsed, httpx.Response):
                    return parsed
                recorded.append(parsed)
                if len(recorded) > _MAX_BULK_EVENTS:
                    return self.error(
                        400,
                        f"A job may hold at most {_MAX_BULK_EVENTS} events.",
                        source={"pointer": root},
                    )
        for parsed in recorded:
            self.store.insert_if_absent(EVENTS, parsed.pop("_dedupe_key"), parsed)
        return httpx.Response(202, content=b"", headers=limit_headers)

    def _parse_event(
        self, body: Any, bulk_entry: str = "", bulk_event: str = ""
    ) -> dict[str, Any] | httpx.Response:
        """The event to record (with its dedupe key), or Klaviyo's 400 naming the bad part
        (in a bulk job, the pointers name the event's entry, for its profile, and the event)."""

        def bad(detail: str, where: str) -> httpx.Response:
            if bulk_entry and where.startswith("/data/attributes/profile"):
                where = bulk_entry + where.removeprefix("/data")
            elif bulk_event:
                where = bulk_event + where.removeprefix("/data")
            return self.error(400, detail, source={"pointer": where})

        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != "event":
            return bad("The body must be {'data': {'type': 'event', ...}}.", "/data")
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            return bad("attributes must be an object.", "/data/attributes")
        properties = attributes.get("properties")
        if not isinstance(properties, dict):
            return bad(
                "properties is required and must be an object.", "/data/attributes/properties"
            )
        if len(properties) > _MAX_PROPERTIES:
            return bad(
                f"An event may have at most {_MAX_PROPERTIES} properties.",
                "/data/attributes/properties",
            )
        metric = _nested(attributes, "metric", "data", "attributes", "name")
        if not isinstance(metric, str) or not metric.strip():
            return bad("metric.data.attributes.name is required.", "/data/attributes/metric")
        profile = _nested(attributes, "profile", "data")
        if not isinstance(profile, dict) or profile.get("type") != "profile":
            return bad("profile.data must be a profile resource.", "/data/attributes/profile")
        profile_key = self._profile_key(profile)
        if profile_key is None:
            return bad(
                "The profile needs an id, email, phone_number, external_id or anonymous_id.",
                "/data/attributes/profile",
            )
        now = self.clock()
        when = datetime.fromtimestamp(now, UTC)
        if attributes.get("time") is not None:
            parsed_time = _parse_time(attributes["time"])
            if parsed_time is None:
                return bad("time must be an ISO-8601 datetime.", "/data/attributes/time")
            if parsed_time < _EARLIEST_EVENT or parsed_time.timestamp() > now + _YEAR:
                return bad(
                    "time must be after 1990 and at most one year in the future.",
                    "/data/attributes/time",
                )
            when = parsed_time
        value = attributes.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return bad("value must be a number.", "/data/attributes/value")
        unique_id = attributes.get("unique_id")
        if unique_id is not None and not isinstance(unique_id, str):
            return bad("unique_id must be a string.", "/data/attributes/unique_id")
        identity = unique_id if unique_id else f"time:{int(when.timestamp())}"
        return {
            "_dedupe_key": json.dumps([metric, profile_key, identity]),
            "metric": metric,
            "profile_key": profile_key,
            "profile": profile,
            "properties": properties,
            "time": when.isoformat(),
            "value": value,
            "value_currency": attributes.get("value_currency"),
            "unique_id": unique_id,
            "received_at": datetime.fromtimestamp(now, UTC).isoformat(),
        }

    def _profile_key(self, profile: dict[str, Any]) -> str | None:
        """Who the event is about: the profile id, found by email for seeded profiles."""
        if isinstance(profile.get("id"), str) and profile["id"]:
            return f"profile:{profile['id']}"
        attributes = profile.get("attributes")
        if not isinstance(attributes, dict):
            return None
        email = attributes.get("email")
        if isinstance(email, str) and email.strip():
            known = self.store.get(PROFILE_EMAILS, email.strip().lower())
            if known is not None:
                return f"profile:{known['profile_id']}"
            return f"email:{email.strip().lower()}"
        for field in ("phone_number", "external_id", "anonymous_id"):
            value = attributes.get(field)
            if isinstance(value, str) and value.strip():
                return f"{field}:{value.strip()}"
        return None


def _nested(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _filter_ids(text: str | None) -> list[str] | None:
    """The ids of ``any(id,["a","b"])`` in order, once each; ``None`` when malformed."""
    match = _ID_FILTER.match(text or "")
    if match is None:
        return None
    try:
        ids = json.loads("[" + match.group(1) + "]")
    except ValueError:
        return None
    if not ids or len(ids) > _MAX_FILTER_IDS or not all(isinstance(i, str) for i in ids):
        return None
    return list(dict.fromkeys(ids))


def _without_segment(resource: Any) -> Any:
    """A profile as ``GET /api/profiles`` serves it: no segment membership time."""
    if not isinstance(resource, dict) or not isinstance(resource.get("attributes"), dict):
        return resource
    attributes = {k: v for k, v in resource["attributes"].items() if k != "joined_group_at"}
    return {**resource, "attributes": attributes}


def _joined_after(resource: Any, moment: datetime) -> bool:
    joined = _nested(resource, "attributes", "joined_group_at")
    parsed = _parse_time(joined)
    return parsed is not None and parsed > moment


def _sparse(resource: Any, fields: list[str] | None) -> Any:
    """Apply ``fields[profile]``; malformed resources are served as they were seeded."""
    if fields is None or not isinstance(resource, dict):
        return resource
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        return resource
    kept: dict[str, Any] = {}
    for name in fields:
        top, _, sub = name.partition(".")
        if top not in attributes:
            continue
        if sub and isinstance(attributes[top], dict):
            kept.setdefault(top, {})[sub] = attributes[top].get(sub)
        else:
            kept[top] = attributes[top]
    return {**resource, "attributes": kept}


def _encode_cursor(after_seq: int, segment_id: str) -> str:
    raw = json.dumps({"a": after_seq, "s": segment_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str, segment_id: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("s") != segment_id:
        return None
    after = doc.get("a")
    return after if isinstance(after, int) and after >= 0 else None
