"""The Klaviyo client: read a segment's profiles page by page, profiles' properties by id,
and record events.

Thin on purpose (integrations.md §3 recommends raw httpx over the urllib3 SDK): two endpoints,
the ``revision`` header under our control, JSON:API in and out. Everything HTTP - timeouts,
retries on 429/5xx honouring Klaviyo's ``Retry-After``, the sandbox hook - is
:class:`~mail_pipeline.integrations.http.HttpApi`.

Paging follows ``links.next`` exactly as Klaviyo sends it (the cursor is opaque; we never build
one), but only over https to Klaviyo's own host and port: the API key travels with every
request. A page that is not the documented JSON:API document - not JSON, nested deeper than
the parser can follow, a wrong shape - is a :class:`MalformedResponse` (a typed integration
error, so the sync fails that campaign only). Reading is side-effect free, so a sync that dies
mid-segment simply reads again. Log lines about a malformed profile name its id and the
field, never a value.
Creating an event is idempotent through ``unique_id``: a retried or repeated POST records one
event, so the client may retry it freely. Events go one per call (``POST /api/events``) or,
for a mailing chunk's, many per call (``POST /api/event-bulk-create-jobs``, 10 calls a second
and 150 a minute instead of 350 and 3,500, up to 1,000 events each).
Audits make two harmless reads: the key's account (``GET /api/accounts``, proof that the key
works) and one segment without its members (``GET /api/segments/{id}``, 404 when it is gone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from time import sleep as _sleep
from typing import Any
from urllib.parse import quote

import httpx

from mail_pipeline.integrations.errors import IntegrationError, RequestRejected
from mail_pipeline.integrations.http import HttpApi, RetryPolicy, default_error
from mail_pipeline.integrations.klaviyo.models import (
    CdpEvent,
    CdpProfile,
    KlaviyoAccount,
    KlaviyoSegment,
    MalformedProfile,
    ProfilePage,
)
from mail_pipeline.integrations.ratelimit import Limiter

log = logging.getLogger(__name__)

VENDOR = "klaviyo"
BASE_URL = "https://a.klaviyo.com"
#: The API revision we were written against; each revision is supported for two years.
DEFAULT_REVISION = "2026-07-15"
JSONAPI = "application/vnd.api+json"
#: Sparse fieldset for segment members: what the sync reads, nothing else.
PROFILE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone_number",
    "location",
    "properties",
    "joined_group_at",
)
MAX_PAGE_SIZE = 100
#: Bulk Create Events takes at most 1,000 events and 5 MB per request (integrations.md §3);
#: a margin of 64 KiB under the 5 MB is left for the envelope.
BULK_EVENTS_MAX = 1000
BULK_BYTES_MAX = 5 * 1000 * 1000 - 64 * 1024
#: A full page of 100 profiles with properties can take a few seconds to come back.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class MalformedResponse(RequestRejected):
    """Klaviyo answered 2xx with a body that is not the documented JSON:API document."""


def klaviyo_error(response: httpx.Response) -> IntegrationError:
    """Map Klaviyo's ``{"errors": [{"id", "code", "title", "detail", "source"}]}`` to a typed
    error whose message is the first error's detail (plus where it points, and how many more)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        text = response.text[:300] or response.reason_phrase
        return default_error(VENDOR, response, text)
    first = errors[0]
    message = str(first.get("detail") or first.get("title") or response.reason_phrase)
    source = first.get("source")
    if isinstance(source, dict):
        where = source.get("pointer") or source.get("parameter")
        if where:
            message += f" (at {where})"
    if len(errors) > 1:
        message += f"; and {len(errors) - 1} more error(s)"
    code = first.get("code")
    return default_error(VENDOR, response, message, code if isinstance(code, str) else None)


class KlaviyoClient:
    """One Klaviyo account (one private API key)."""

    def __init__(
        self,
        api_key: str,
        *,
        revision: str = DEFAULT_REVISION,
        base_url: str = BASE_URL,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        limiter: Limiter | None = None,
        sleep: Callable[[float], None] = _sleep,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Klaviyo client needs a private API key")
        self.revision = revision
        self.api = HttpApi(
            vendor=VENDOR,
            base_url=base_url,
            headers={
                "Authorization": f"Klaviyo-API-Key {api_key}",
                "revision": revision,
                "Accept": JSONAPI,
            },
            retry=retry or RetryPolicy(),
            transport=transport,
            limiter=limiter,
            error_mapper=klaviyo_error,
            sleep=sleep,
            timeout=timeout or DEFAULT_TIMEOUT,
        )
        self._base = httpx.URL(base_url)

    # -- segments -------------------------------------------------------------------------
    def iter_segment_profiles(
        self,
        segment_id: str,
        page_size: int = MAX_PAGE_SIZE,
        *,
        joined_after: datetime | None = None,
    ) -> Iterator[ProfilePage]:
        """Every page of a segment's members, first to last.

        ``joined_after`` asks only for members who joined the segment after that moment
        (Klaviyo's ``greater-than(joined_group_at, ...)`` filter). Malformed profiles are
        reported in each page's ``rejected``; they never stop the iteration.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        params: dict[str, str] = {
            "page[size]": str(page_size),
            "fields[profile]": ",".join(PROFILE_FIELDS),
        }
        if joined_after is not None:
            if joined_after.tzinfo is None:
                raise ValueError("joined_after must be timezone-aware")
            stamp = joined_after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            params["filter"] = f"greater-than(joined_group_at,{stamp})"
        path = f"/api/segments/{quote(segment_id, safe='')}/profiles"
        for body in self.documents(path, params, what="a segment page"):
            yield self._read_page(body)

    def documents(
        self, path: str, params: Mapping[str, str], *, what: str
    ) -> Iterator[dict[str, Any]]:
        """Every JSON:API document of a collection, first page to last, following
        ``links.next`` as Klaviyo sends it (see :meth:`_check_next_url`).

        Each document is a JSON object with a ``data`` list; anything else is a
        :class:`MalformedResponse` that names ``what`` was being read ("a segment page")."""
        response = self.api.request("GET", path, params=dict(params))
        while True:
            body = self._document(response, what)
            yield body
            next_url = _next_url(body)
            if next_url is None:
                return
            if next_url == str(response.request.url):
                raise MalformedResponse(
                    VENDOR, f"links.next repeats the page it is on ({next_url}); stopping"
                )
            self._check_next_url(next_url)
            response = self.api.request("GET", next_url)

    def segment_profiles(
        self, segment_id: str, page_size: int = MAX_PAGE_SIZE
    ) -> tuple[list[CdpProfile], list[MalformedProfile]]:
        """The whole segment at once: ``(profiles, rejected)``. For small segments and tools."""
        profiles: list[CdpProfile] = []
        rejected: list[MalformedProfile] = []
        for page in self.iter_segment_profiles(segment_id, page_size):
            profiles.extend(page.profiles)
            rejected.extend(page.rejected)
        return profiles, rejected

    @staticmethod
    def _document(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise MalformedResponse(VENDOR, f"{what} is not JSON") from None
        except RecursionError:
            raise MalformedResponse(
                VENDOR, f"{what} nests deeper than its JSON can be read"
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise MalformedResponse(VENDOR, f"{what} has no data list")
        _next_url(body)  # a malformed links object fails here, before the page is used
        return body

    def _read_page(self, body: dict[str, Any]) -> ProfilePage:
        profiles: list[CdpProfile] = []
        rejected: list[MalformedProfile] = []
        for resource in body["data"]:
            try:
                profiles.append(CdpProfile.from_jsonapi(resource))
            except MalformedProfile as exc:
                log.warning(
                    "Klaviyo profile %s is malformed: %s", exc.profile_id or "(no id)", exc.reason
                )
                rejected.append(exc)
        return ProfilePage(tuple(profiles), tuple(rejected), _next_url(body))

    def _check_next_url(self, url: str) -> None:
        """Follow ``links.next`` only if it stays on https at Klaviyo's host and port (the API
        key travels with every request); else :class:`MalformedResponse`."""
        try:
            target = self._base.join(url)
        except httpx.InvalidURL:
            raise MalformedResponse(VENDOR, "links.next is not a URL") from None
        if target.userinfo:
            raise MalformedResponse(VENDOR, "links.next carries credentials; not followed")
        if target.host != self._base.host or target.port != self._base.port:
            raise MalformedResponse(
                VENDOR,
                f"links.next points at another host ({target.host}); "
                "refusing to send the API key there",
            )
        if target.scheme != "https" and not target.scheme == self._base.scheme == "http":
            # Plain http only where the key already travels so: a base URL of http, which
            # only the sandbox server (``integrations.sandbox.server``) is reached by.
            raise MalformedResponse(
                VENDOR,
                f"links.next is not https ({target.scheme}); refusing to send the API key there",
            )

    # -- profiles by id: their properties (profile enrichment) -----------------------------
    def profiles_properties(
        self, profile_ids: Sequence[str], page_size: int = MAX_PAGE_SIZE
    ) -> dict[str, dict[str, Any]]:
        """``GET /api/profiles?filter=any(id,[...])&fields[profile]=properties``: each found
        profile's custom properties, by profile id, asked ``page_size`` (at most 100) ids at a
        time. A profile Klaviyo does not return (deleted, merged) is absent from the answer;
        a resource without an id or with properties that are not an object is logged (by id)
        and left out. Side-effect free: a retried or repeated call is harmless."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        wanted = list(dict.fromkeys(p for p in profile_ids if p))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), page_size):
            chunk = wanted[start : start + page_size]
            params = {
                "filter": "any(id,[" + ",".join(json.dumps(i) for i in chunk) + "])",
                "fields[profile]": "properties",
                "page[size]": str(page_size),
            }
            for body in self.documents("/api/profiles", params, what="a profiles page"):
                for resource in body["data"]:
                    read = _profile_properties(resource)
                    if read is None:
                        who = resource.get("id") if isinstance(resource, dict) else None
                        log.warning(
                            "Klaviyo profile %s is malformed: no properties object",
                            who if isinstance(who, str) else "(no id)",
                        )
                        continue
                    found[read[0]] = read[1]
        return found

    # -- the account and one segment: harmless reads (audits) -----------------------------
    def account(self) -> KlaviyoAccount:
        """``GET /api/accounts``: the account this key belongs to. One small read (scope
        ``accounts:read``) that proves the key works: a refused key is
        :class:`~mail_pipeline.integrations.errors.AuthenticationFailed`."""
        response = self.api.request("GET", "/api/accounts")
        body = self._document(response, "the accounts page")
        first = body["data"][0] if body["data"] else None
        if not isinstance(first, dict) or not isinstance(first.get("id"), str):
            raise MalformedResponse(VENDOR, "the accounts page holds no account")
        attributes = first.get("attributes")
        attributes = attributes if isinstance(attributes, dict) else {}
        contact = attributes.get("contact_information")
        name = contact.get("organization_name") if isinstance(contact, dict) else None
        return KlaviyoAccount(
            id=first["id"],
            name=name if isinstance(name, str) and name.strip() else first["id"],
            test_account=attributes.get("test_account") is True,
        )

    def segment(self, segment_id: str) -> KlaviyoSegment:
        """``GET /api/segments/{id}``: the segment, without its members; a segment the
        account does not have is :class:`~mail_pipeline.integrations.errors.NotFound`."""
        response = self.api.request("GET", f"/api/segments/{quote(segment_id, safe='')}")
        try:
            body = response.json()
        except (ValueError, RecursionError):
            raise MalformedResponse(VENDOR, "a segment is not JSON") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise MalformedResponse(VENDOR, "a segment answer has no segment in data")
        attributes = data.get("attributes")
        name = attributes.get("name") if isinstance(attributes, dict) else None
        return KlaviyoSegment(
            id=data["id"], name=name if isinstance(name, str) and name else data["id"]
        )

    # -- events ---------------------------------------------------------------------------
    def create_event(
        self,
        metric_name: str,
        *,
        unique_id: str,
        email: str | None = None,
        profile_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        time: datetime | None = None,
        value: float | None = None,
        value_currency: str | None = None,
    ) -> None:
        """Record an event for a profile (e.g. "Postcard Sent"); see :meth:`send_event`."""
        self.send_event(
            CdpEvent(
                metric_name=metric_name,
                unique_id=unique_id,
                email=email,
                profile_id=profile_id,
                properties=dict(properties or {}),
                time=time,
                value=value,
                value_currency=value_currency,
            )
        )

    def send_event(self, event: CdpEvent) -> None:
        """``POST /api/events``; Klaviyo answers 202 (accepted for processing, empty body).

        Idempotent: Klaviyo keeps only the first event per ``unique_id``, profile and metric,
        so a retry after a timeout or a crash does not record the event twice.
        """
        self.api.request(
            "POST", "/api/events", json=event.to_jsonapi(), headers={"Content-Type": JSONAPI}
        )

    def send_events(self, events: Sequence[CdpEvent]) -> None:
        """``POST /api/event-bulk-create-jobs``: many events in one call (Klaviyo answers 202:
        a job accepted for processing), at most :data:`BULK_EVENTS_MAX` events and
        :data:`BULK_BYTES_MAX` bytes per call, so a long list takes several calls.

        Idempotent as :meth:`send_event` is (each event keeps its ``unique_id``), so a retried
        call, or one of its events sent again alone, records each event once. Klaviyo
        validates the whole job before accepting it: one invalid event refuses them all with a
        400 whose ``source.pointer`` names the entry (``/data/attributes/events-bulk-create/
        data/<n>/...``); the caller sends the events one by one to learn which.
        """
        for part in _bulk_parts([event.to_bulk_entry() for event in events]):
            body = {
                "data": {
                    "type": "event-bulk-create-job",
                    "attributes": {"events-bulk-create": {"data": part}},
                }
            }
            self.api.request(
                "POST", "/api/event-bulk-create-jobs", json=body, headers={"Content-Type": JSONAPI}
            )

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> KlaviyoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _bulk_parts(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``entries`` in order, cut into calls of at most :data:`BULK_EVENTS_MAX` entries and
    :data:`BULK_BYTES_MAX` bytes of JSON (an entry larger than that alone is a call of its
    own, for Klaviyo to refuse with its reason)."""
    part: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        entry_size = len(json.dumps(entry, separators=(",", ":")).encode()) + 1
        if part and (len(part) >= BULK_EVENTS_MAX or size + entry_size > BULK_BYTES_MAX):
            yield part
            part, size = [], 0
        part.append(entry)
        size += entry_size
    if part:
        yield part


def _next_url(body: dict[str, Any]) -> str | None:
    """``links.next`` of a JSON:API document (``None`` on the last page); a links object of
    the wrong shape is a :class:`MalformedResponse`."""
    links = body.get("links") or {}
    if not isinstance(links, dict):
        raise MalformedResponse(VENDOR, f"links is a {type(links).__name__}, not an object")
    next_url = links.get("next")
    if next_url is not None and not isinstance(next_url, str):
        raise MalformedResponse(VENDOR, f"links.next is a {type(next_url).__name__}, not a URL")
    return next_url or None


def _profile_properties(resource: Any) -> tuple[str, dict[str, Any]] | None:
    """``(id, properties)`` of a profile resource; ``None`` when it has no id or its
    properties are not an object (a profile without properties has ``{}``)."""
    if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
        return None
    attributes = resource.get("attributes")
    properties = attributes.get("properties") if isinstance(attributes, dict) else None
    if properties is None:
        return resource["id"], {}
    if not isinstance(properties, dict):
        return None
    return resource["id"], dict(properties)
