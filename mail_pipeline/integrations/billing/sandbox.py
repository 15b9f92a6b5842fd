"""A stand-in for Stripe's meter-event endpoints that the real SDK talks to unchanged.

``POST /v1/billing/meter_events`` (form-encoded) is answered as Stripe does (integrations.md §6):

- 200 with the ``billing.meter_event`` object;
- validation errors as ``400 {"error": {"type": "invalid_request_error", "code", "message",
  "param"}}``: required fields, unknown parameters, the timestamp window (past 35 days, at
  most 5 minutes ahead), a whole-number ``value`` of at most 15 digits;
- ``identifier`` unique for a rolling 24 h: a repeat is rejected with 400 "An event already
  exists with identifier ..." and ``Stripe-Should-Retry: false``, and nothing is recorded;
- the ``Idempotency-Key`` header: a repeat of a successful request within 24 h gets the
  original response (``Idempotent-Replayed: true``); the same key with other parameters is a
  400 ``idempotency_error``;
- 401 for a missing or wrong secret key; 429 in Stripe's shape (``Stripe-Should-Retry:
  true``) when ``behaviour.rate_limit`` is set (:data:`TEST_MODE_RATE_LIMIT` is Stripe's
  test-mode basic limit).

The v2 meter event stream, on the same transport (the SDK's ``api`` and ``meter_events`` base
addresses may both point here; routes tell the two apart):

- ``POST /v2/billing/meter_event_session`` (secret key) answers a
  ``v2.billing.meter_event_session`` with a token valid :data:`SESSION_LIFETIME`;
- ``POST /v2/billing/meter_event_stream`` (``Authorization: Bearer <session token>``, JSON
  ``{"events": [...]}``, 1..100 events) answers ``{}``. A malformed request (no events, more
  than 100, a field missing or of the wrong type, an unknown field, a bad ISO timestamp) is a
  400 and records nothing. Each well-formed event is then validated as Stripe does later,
  asynchronously: a valid one is stored in :data:`METER_EVENTS` exactly like a v1 event
  (unless its identifier is taken: dropped, as Stripe does), an invalid one in
  :data:`METER_EVENT_ERRORS` with the error-report code Stripe would send;
- an expired token is a 401 ``billing_meter_event_session_expired``; an unknown one (or a
  secret key on the stream) a 401 too. The rate limit counts stream calls like any other.

Recorded events, identifiers, sessions and idempotent results live in the shared store;
:class:`StripeSandboxData` lists them for tests and operators. The sandbox knows no meters or
customers: any ``event_name`` and any customer id is accepted (Stripe reports unknown ones
asynchronously, through ``v1.billing.meter.error_report_triggered``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour, SandboxTransport, atomic

SANDBOX_API_KEY = "sk_test_sandbox_stripe"
#: Stripe's basic rate limit in test mode, as ``SandboxBehaviour.rate_limit``.
TEST_MODE_RATE_LIMIT = (25, 1.0)

METER_EVENTS = "stripe.meter_events"
IDENTIFIERS = "stripe.meter_event_identifiers"
IDEMPOTENCY = "stripe.idempotency"
SESSIONS = "stripe.meter_event_sessions"
#: Stream events Stripe would report asynchronously instead of recording.
METER_EVENT_ERRORS = "stripe.meter_event_errors"

IDENTIFIER_WINDOW = 24 * 3600.0
IDEMPOTENCY_WINDOW = 24 * 3600.0
PAST_WINDOW = 35 * 24 * 3600
FUTURE_WINDOW = 5 * 60
SESSION_LIFETIME = 15 * 60
MAX_STREAM_EVENTS = 100
STREAM_PATH = "/v2/billing/meter_event_stream"
_STREAM_FIELDS = {"event_name", "identifier", "payload", "timestamp"}
_WHOLE = re.compile(r"^\d+$")
_MAX_DIGITS = 15
_ALLOWED = re.compile(r"^(event_name|identifier|timestamp|payload\[[^\]]+\]|expand\[\d*\])$")
_DOC = "https://stripe.com/docs/error-codes"


class StripeSandbox(SandboxTransport):
    vendor = "stripe"
    routes = [
        ("POST", r"/v1/billing/meter_events", "create_meter_event"),
        ("POST", r"/v2/billing/meter_event_session", "create_meter_event_session"),
        ("POST", STREAM_PATH, "create_meter_event_stream"),
    ]

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        api_key: str = SANDBOX_API_KEY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.api_key = api_key

    # -- Stripe's answers ---------------------------------------------------------------------
    def error(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        param: str | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """``{"error": {"type", "code", "message", "param"}}``; the base's generic codes are
        not Stripe's, so only Stripe codes are kept."""
        code = {"rate_limit_exceeded": "rate_limit"}.get(code or "", code)
        if code in ("not_found", "not_allowed", "service_unavailable"):
            code = None
        body: dict[str, Any] = {
            "type": kind or ("api_error" if status >= 500 else "invalid_request_error"),
            "message": message,
        }
        if code:
            body["code"] = code
            body["doc_url"] = f"{_DOC}/{code.replace('_', '-')}"
        if param:
            body["param"] = param
        return self._respond(status, {"error": body}, headers)

    def rate_limited(self, retry_after: float) -> httpx.Response:
        return self.error(
            429,
            "Request rate limit exceeded. You can learn more about rate "
            "limits here https://stripe.com/docs/rate-limits.",
            "rate_limit",
            headers={"stripe-should-retry": "true"},
        )

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        key = _api_key(request.headers.get("authorization", ""))
        path = request.url.path.removeprefix(self.mount_path).rstrip("/")
        if path == STREAM_PATH:
            return self._authenticate_session(key)
        if not key:
            return self.error(
                401,
                "You did not provide an API key. You need to provide your "
                "API key in the Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if key != self.api_key:
            masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
            return self.error(401, f"Invalid API Key provided: {masked}")
        return None

    def _respond(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.Response(
            status,
            content=json.dumps(body).encode(),
            headers={
                "content-type": "application/json",
                "request-id": "req_" + secrets.token_hex(7),
                **(headers or {}),
            },
        )

    # -- POST /v1/billing/meter_events -------------------------------------------------------
    @atomic
    def create_meter_event(self, request: httpx.Request) -> httpx.Response:
        now = self.clock()
        form = parse_qsl(request.content.decode(), keep_blank_values=True)
        fingerprint = hashlib.sha256(json.dumps(sorted(form)).encode()).hexdigest()
        key = request.headers.get("idempotency-key")
        if key:
            replay = self._idempotent_replay(key, fingerprint, now)
            if replay is not None:
                return replay
        checked = self._validate(form, now)
        if isinstance(checked, httpx.Response):
            return checked
        event = checked
        taken, new = self.store.insert_if_absent(IDENTIFIERS, event["identifier"], {"created": now})
        if not new and now - float(taken["created"]) < IDENTIFIER_WINDOW:
            return self.error(
                400,
                f"An event already exists with identifier {event['identifier']}.",
                param="identifier",
                headers={"stripe-should-retry": "false"},
            )
        if not new:  # the earlier use left the uniqueness window: Stripe records it again
            self.store.put(IDENTIFIERS, event["identifier"], {"created": now})
        self.store.put(METER_EVENTS, f"{event['identifier']}@{now:.6f}", event)
        if key:
            self.store.put(
                IDEMPOTENCY, key, {"fingerprint": fingerprint, "created": now, "body": event}
            )
        return self._respond(200, event, {"idempotency-key": key} if key else None)

    def _idempotent_replay(self, key: str, fingerprint: str, now: float) -> httpx.Response | None:
        """The stored answer to an earlier request with this key, or a 400 for other params."""
        # Keys are per account; the sandbox has one account (one API key).
        saved = self.store.get(IDEMPOTENCY, key)
        if saved is None or now - float(saved["created"]) >= IDEMPOTENCY_WINDOW:
            return None
        if saved["fingerprint"] != fingerprint:
            return self.error(
                400,
                "Keys for idempotent requests can only be used with the "
                "same parameters they were first used with. Try using a "
                f"key other than '{key}' if you meant to execute a "
                "different request.",
                kind="idempotency_error",
            )
        return self._respond(
            200, saved["body"], {"idempotency-key": key, "idempotent-replayed": "true"}
        )

    def _validate(self, form: list[tuple[str, str]], now: float) -> dict[str, Any] | httpx.Response:
        """The meter event object Stripe would create, or Stripe's 400 for the first fault."""
        for name, _value in form:
            if not _ALLOWED.match(name):
                return self.error(
                    400, f"Received unknown parameter: {name}", "parameter_unknown", param=name
                )
        fields = dict(form)
        payload = {
            name[len("payload[") : -1]: value for name, value in form if name.startswith("payload[")
        }
        for required, present in (
            ("event_name", bool(fields.get("event_name"))),
            ("payload", bool(payload)),
        ):
            if not present:
                return self.error(
                    400, f"Missing required param: {required}.", "parameter_missing", param=required
                )
        for name in ("event_name", "identifier"):
            if len(fields.get(name, "")) > 100:
                return self.error(
                    400,
                    f"Invalid string: {fields[name][:20]}...; must be at most 100 characters",
                    "string_too_long",
                    param=name,
                )
        timestamp = int(now)
        if "timestamp" in fields:
            text = fields["timestamp"]
            if not re.fullmatch(r"-?\d+", text):
                return self.error(
                    400, f"Invalid integer: {text}", "parameter_invalid_integer", param="timestamp"
                )
            timestamp = int(text)
            if timestamp < now - PAST_WINDOW or timestamp > now + FUTURE_WINDOW:
                return self.error(
                    400,
                    f"Timestamp {timestamp} is outside the allowed window: a meter event "
                    "must be within the past 35 days and no more than 5 minutes in the "
                    "future.",
                    param="timestamp",
                )
        for needed in ("stripe_customer_id", "value"):
            if not payload.get(needed):
                return self.error(
                    400,
                    f"The event payload is missing the required key '{needed}'.",
                    "parameter_missing",
                    param=f"payload[{needed}]",
                )
        value = payload["value"]
        if not _WHOLE.match(value):
            return self.error(
                400,
                f"The value in the event payload must be a whole number. Received {value}.",
                param="payload[value]",
            )
        if len(value.lstrip("0")) > _MAX_DIGITS:
            return self.error(
                400,
                f"The value in the event payload can have at most "
                f"{_MAX_DIGITS} digits. Received {value}.",
                param="payload[value]",
            )
        return {
            "object": "billing.meter_event",
            "created": int(now),
            "event_name": fields["event_name"],
            "identifier": fields.get("identifier") or "mev_" + secrets.token_hex(12),
            "livemode": False,
            "payload": payload,
            "timestamp": timestamp,
        }

    # -- the v2 meter event stream ---------------------------------------------------------------
    def _authenticate_session(self, token: str | None) -> httpx.Response | None:
        if not token:
            return self.error(
                401,
                "You did not provide a meter event session token. Create one with "
                "POST /v2/billing/meter_event_session and send it as 'Authorization: Bearer "
                "<authentication_token>'.",
            )
        session = self.store.get(SESSIONS, token)
        if session is None:
            return self.error(401, "Invalid meter event session token provided.")
        if self.clock() >= float(session["expires_at"]):
            return self.error(
                401,
                "The meter event session has expired. Create a new meter event session.",
                "billing_meter_event_session_expired",
            )
        return None

    @atomic
    def create_meter_event_session(self, request: httpx.Request) -> httpx.Response:
        now = self.clock()
        token = "mes_token_" + secrets.token_hex(16)
        expires_at = now + SESSION_LIFETIME
        self.store.put(SESSIONS, token, {"created": now, "expires_at": expires_at})
        return self._respond(
            200,
            {
                "id": "mes_" + secrets.token_hex(12),
                "object": "v2.billing.meter_event_session",
                "authentication_token": token,
                "created": _iso(now),
                "expires_at": _iso(expires_at),
                "livemode": False,
            },
        )

    @atomic
    def create_meter_event_stream(self, request: httpx.Request) -> httpx.Response:
        now = self.clock()
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            return self.error(400, "The request body is not valid JSON.", "parameter_invalid")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events:
            return self.error(
                400, "Missing required param: events.", "parameter_missing", param="events"
            )
        if len(events) > MAX_STREAM_EVENTS:
            return self.error(
                400,
                f"Too many events: {len(events)}; a request takes at most {MAX_STREAM_EVENTS}.",
                "parameter_invalid",
                param="events",
            )
        parsed: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            checked = self._stream_event(index, event, now)
            if isinstance(checked, httpx.Response):
                return checked
            parsed.append(checked)
        for event in parsed:
            self._record_stream_event(event, now)
        return self._respond(200, {})

    def _stream_event(self, index: int, event: Any, now: float) -> dict[str, Any] | httpx.Response:
        """The request-level checks Stripe makes before answering: the shape of one event."""
        where = f"events[{index}]"
        if not isinstance(event, dict):
            return self.error(400, f"{where} must be an object.", "parameter_invalid", param=where)
        for name in event:
            if name not in _STREAM_FIELDS:
                return self.error(
                    400,
                    f"Received unknown parameter: {where}.{name}",
                    "parameter_unknown",
                    param=f"{where}.{name}",
                )
        for required in ("event_name", "payload"):
            if not event.get(required):
                return self.error(
                    400,
                    f"Missing required param: {where}.{required}.",
                    "parameter_missing",
                    param=f"{where}.{required}",
                )
        payload = event["payload"]
        strings = isinstance(payload, dict) and all(isinstance(v, str) for v in payload.values())
        texts = all(isinstance(event.get(n, ""), str) for n in ("event_name", "identifier"))
        if not strings or not texts:
            return self.error(
                400,
                f"{where}: event_name and identifier must be strings, payload an object of "
                "strings.",
                "parameter_invalid",
                param=where,
            )
        for name in ("event_name", "identifier"):
            if len(event.get(name, "")) > 100:
                return self.error(
                    400,
                    f"Invalid string: {event[name][:20]}...; must be at most 100 characters",
                    "string_too_long",
                    param=f"{where}.{name}",
                )
        timestamp = int(now)
        if "timestamp" in event:
            stamp = _parse_iso(event["timestamp"])
            if stamp is None:
                return self.error(
                    400,
                    f"Invalid timestamp: {event['timestamp']!r}; expected ISO 8601 with an offset.",
                    "parameter_invalid",
                    param=f"{where}.timestamp",
                )
            timestamp = stamp
        return {
            "object": "billing.meter_event",
            "created": int(now),
            "event_name": event["event_name"],
            "identifier": event.get("identifier") or "mev_" + secrets.token_hex(12),
            "livemode": False,
            "payload": dict(payload),
            "timestamp": timestamp,
        }

    def _record_stream_event(self, event: dict[str, Any], now: float) -> None:
        """What Stripe does with an accepted stream event, later: record it once per
        identifier, or report it (:data:`METER_EVENT_ERRORS`)."""
        problem = _async_problem(event, now)
        if problem is not None:
            code, message = problem
            self.store.put(
                METER_EVENT_ERRORS,
                f"{event['identifier']}@{now:.6f}#{secrets.token_hex(4)}",
                {
                    "identifier": event["identifier"],
                    "code": code,
                    "message": message,
                    "event": event,
                    "created": now,
                },
            )
            return
        taken, new = self.store.insert_if_absent(IDENTIFIERS, event["identifier"], {"created": now})
        if not new and now - float(taken["created"]) < IDENTIFIER_WINDOW:
            return  # a duplicate: Stripe keeps the first and drops this one
        if not new:
            self.store.put(IDENTIFIERS, event["identifier"], {"created": now})
        self.store.put(METER_EVENTS, f"{event['identifier']}@{now:.6f}", event)


def _async_problem(event: dict[str, Any], now: float) -> tuple[str, str] | None:
    """``(error code, message)`` Stripe's error report would give a stream event, or None."""
    timestamp = int(event["timestamp"])
    if timestamp < now - PAST_WINDOW:
        return "timestamp_too_far_in_past", f"Timestamp {timestamp} is more than 35 days ago."
    if timestamp > now + FUTURE_WINDOW:
        return "timestamp_in_future", f"Timestamp {timestamp} is more than 5 minutes ahead."
    payload = event["payload"]
    if not payload.get("stripe_customer_id"):
        return "meter_event_no_customer_defined", "The payload has no stripe_customer_id."
    value = payload.get("value", "")
    if not _WHOLE.match(value) or len(value.lstrip("0")) > _MAX_DIGITS:
        return (
            "meter_event_invalid_value",
            f"The value must be a whole number of at most {_MAX_DIGITS} digits, not {value!r}.",
        )
    return None


def _parse_iso(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return None if stamp.tzinfo is None else int(stamp.timestamp())


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _api_key(header: str) -> str | None:
    """The secret key from ``Bearer <key>`` or HTTP basic auth with the key as user name."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip()).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return None
        return user or None
    return None


class StripeSandboxData:
    """What the sandbox Stripe account holds: the meter events it recorded (v1 and stream
    alike) and the stream events it would have reported as errors."""

    def __init__(self, store: SandboxStore) -> None:
        self.store = store

    def meter_events(
        self, event_name: str | None = None, customer_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Recorded meter events, oldest first (rejected duplicates are not among them)."""
        return [
            doc
            for doc in self._all()
            if (event_name is None or doc["event_name"] == event_name)
            and (customer_id is None or doc["payload"].get("stripe_customer_id") == customer_id)
        ]

    def total_usage(self, customer_id: str, event_name: str | None = None) -> int:
        """The sum of recorded values for a customer, as a ``sum`` meter would aggregate."""
        return sum(
            int(doc["payload"]["value"]) for doc in self.meter_events(event_name, customer_id)
        )

    def meter_event_errors(self) -> list[dict[str, Any]]:
        """Stream events Stripe would have reported instead of recording (``identifier``,
        ``code``, ``message``, ``event``), oldest first."""
        return list(self._all(METER_EVENT_ERRORS))

    def _all(self, collection: str = METER_EVENTS) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            rows = self.store.scan(collection, after_seq=after, limit=500)
            for _seq, _key, doc in rows:
                yield doc
            if len(rows) < 500:
                return
            after = rows[-1][0]
