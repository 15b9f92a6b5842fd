"""The Klaviyo client against Klaviyo's documented request/response shapes (respx)."""

from __future__ import annotations

import json
import logging
import pickle
from datetime import UTC, datetime

import httpx
import pytest
import respx

from mail_pipeline.domain.addresses import InvalidAddress
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.klaviyo import (
    CdpEvent,
    CdpProfile,
    KlaviyoClient,
    MalformedProfile,
    MalformedResponse,
    ProfilePage,
)
from mail_pipeline.integrations.klaviyo.sandbox_data import profile_resource

BASE = "https://a.klaviyo.com"
JSONAPI_TYPE = "application/vnd.api+json"
SEGMENT_URL = f"{BASE}/api/segments/SEG1/profiles"
# An opaque cursor with characters that must survive verbatim (+, /, =, %-escapes).
NEXT_URL = (
    f"{BASE}/api/segments/SEG1/profiles?page%5Bcursor%5D=bmV4dA%2B%2F%3D%3D"
    "&page%5Bsize%5D=100&fields%5Bprofile%5D=email"
)


def jsonapi(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status, json=body, headers={"content-type": "application/vnd.api+json", **(headers or {})}
    )


def resource(n: int) -> dict[str, object]:
    return profile_resource(
        f"01P{n:023d}",
        f"p{n}@example.com",
        "Jane",
        f"Doe{n}",
        {
            "address1": "12 North Main Street",
            "city": "New York",
            "region": "ny",
            "zip": "10017",
            "country": "United States",
        },
        {"tier": "gold"},
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> KlaviyoClient:
    return KlaviyoClient(
        "pk_live_key", sleep=sleeps.append, retry=RetryPolicy(max_attempts=3, base_delay=0.01)
    )


@respx.mock
def test_segment_paging_follows_links_next_verbatim_with_auth_and_revision(
    client: KlaviyoClient,
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return jsonapi(
                {
                    "data": [resource(1), resource(2)],
                    "links": {"self": str(request.url), "next": NEXT_URL, "prev": None},
                }
            )
        return jsonapi({"data": [resource(3)], "links": {"self": NEXT_URL, "next": None}})

    respx.get(url__startswith=SEGMENT_URL).mock(side_effect=answer)

    pages = list(client.iter_segment_profiles("SEG1", page_size=100))

    assert [[p.email for p in page.profiles] for page in pages] == [
        ["p1@example.com", "p2@example.com"],
        ["p3@example.com"],
    ]
    assert pages[0].next_url == NEXT_URL and pages[1].next_url is None
    first, second = seen
    assert first.method == "GET" and first.url.path == "/api/segments/SEG1/profiles"
    assert first.url.params["page[size]"] == "100"
    assert first.url.params["fields[profile]"].split(",") == [
        "email",
        "first_name",
        "last_name",
        "phone_number",
        "location",
        "properties",
        "joined_group_at",
    ]
    assert "page[cursor]" not in first.url.params
    assert str(second.url) == NEXT_URL  # the cursor link is followed byte for byte
    for request in seen:
        assert request.headers["authorization"] == "Klaviyo-API-Key pk_live_key"
        assert request.headers["revision"] == "2026-07-15"
        assert request.headers["accept"] == "application/vnd.api+json"


@respx.mock
def test_revision_is_configurable_and_joined_after_becomes_a_filter() -> None:
    route = respx.get(url__startswith=SEGMENT_URL).mock(
        return_value=jsonapi({"data": [], "links": {"next": None}})
    )
    client = KlaviyoClient("pk_x", revision="2025-10-15")

    list(
        client.iter_segment_profiles(
            "SEG1", 20, joined_after=datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
        )
    )

    request = route.calls.last.request
    assert request.headers["revision"] == "2025-10-15"
    assert request.url.params["page[size]"] == "20"
    assert request.url.params["filter"] == "greater-than(joined_group_at,2026-03-01T12:30:00Z)"


def test_page_size_outside_klaviyos_range_is_refused_before_any_request(
    client: KlaviyoClient,
) -> None:
    with pytest.raises(ValueError, match=r"1\.\.100"):
        next(client.iter_segment_profiles("SEG1", page_size=101))


@respx.mock
def test_malformed_profile_is_reported_and_the_rest_of_the_page_is_read(
    client: KlaviyoClient,
) -> None:
    broken = {"type": "profile", "id": "01BROKEN", "attributes": ["not", "an", "object"]}
    respx.get(url__startswith=SEGMENT_URL).mock(
        return_value=jsonapi(
            {
                "data": [resource(1), broken, {"type": "profile"}, resource(2)],
                "links": {"next": None},
            }
        )
    )

    (page,) = list(client.iter_segment_profiles("SEG1"))

    assert [p.profile_id for p in page.profiles] == [resource(1)["id"], resource(2)["id"]]
    assert [r.profile_id for r in page.rejected] == ["01BROKEN", None]
    assert "attributes is list" in str(page.rejected[0])
    assert "no id" in str(page.rejected[1])


@respx.mock
def test_a_next_link_to_another_host_is_not_followed(client: KlaviyoClient) -> None:
    respx.get(url__startswith=SEGMENT_URL).mock(
        return_value=jsonapi(
            {"data": [], "links": {"next": "https://evil.example/api/segments/SEG1/profiles"}}
        )
    )

    pages = client.iter_segment_profiles("SEG1")
    next(pages)
    with pytest.raises(MalformedResponse, match="another host"):
        next(pages)


@pytest.mark.parametrize(
    ("next_url", "says"),
    [
        ("http://a.klaviyo.com/api/segments/SEG1/profiles?page%5Bcursor%5D=x", "not https"),
        ("https://a.klaviyo.com:8443/api/segments/SEG1/profiles", "another host"),
        ("//evil.example/api/segments/SEG1/profiles", "another host"),
        ("https://a.klaviyo.com.evil.example/api/segments", "another host"),
        ("https://user:pw@a.klaviyo.com/api/segments/SEG1/profiles", "carries credentials"),
    ],
    ids=["http", "other-port", "scheme-relative", "look-alike-host", "userinfo"],
)
@respx.mock
def test_a_next_link_off_https_on_klaviyos_host_is_not_followed(
    client: KlaviyoClient, next_url: str, says: str
) -> None:
    route = respx.get(url__startswith=SEGMENT_URL).mock(
        return_value=jsonapi({"data": [], "links": {"next": next_url}})
    )
    elsewhere = respx.route(url__regex=r"^(?!https://a\.klaviyo\.com/api/segments).*").mock(
        return_value=jsonapi({"data": [], "links": {"next": None}})
    )

    pages = client.iter_segment_profiles("SEG1")
    next(pages)
    with pytest.raises(MalformedResponse, match=says):
        next(pages)
    assert route.call_count == 1 and elsewhere.call_count == 0


@respx.mock
def test_a_relative_next_link_stays_on_klaviyo(client: KlaviyoClient) -> None:
    relative = "/api/segments/SEG1/profiles?page%5Bcursor%5D=bmV4dA"

    def answer(request: httpx.Request) -> httpx.Response:
        if "page%5Bcursor%5D" in str(request.url) or "page[cursor]" in str(request.url):
            return jsonapi({"data": [resource(2)], "links": {"next": None}})
        return jsonapi({"data": [resource(1)], "links": {"next": relative}})

    respx.get(url__startswith=SEGMENT_URL).mock(side_effect=answer)

    pages = list(client.iter_segment_profiles("SEG1"))

    assert [len(page.profiles) for page in pages] == [1, 1]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nests deeper"),
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"\xff\xfe{", "not JSON"),
        (b'{"data": [], "links": "next"}', "links is a str"),
        (b'{"data": [], "links": {"next": 7}}', "links.next is a int"),
    ],
    ids=["deep-nesting", "html", "not-utf8", "links-text", "next-number"],
)
@respx.mock
def test_a_page_that_cannot_be_read_is_a_typed_error(
    client: KlaviyoClient, body: bytes, says: str
) -> None:
    respx.get(url__startswith=SEGMENT_URL).mock(
        return_value=httpx.Response(200, content=body, headers={"content-type": JSONAPI_TYPE})
    )

    with pytest.raises(MalformedResponse, match=says):
        list(client.iter_segment_profiles("SEG1"))


@respx.mock
def test_a_malformed_profile_is_logged_by_id_and_field_never_by_value(
    client: KlaviyoClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "ann.private@example.com"
    respx.get(url__startswith=SEGMENT_URL).mock(
        return_value=jsonapi(
            {
                "data": [
                    {"type": "profile", "id": "01BAD", "attributes": {"email": [secret]}},
                    {"type": secret, "id": "01ODD", "attributes": {}},
                    {
                        "type": "profile",
                        "id": "01WHEN",
                        "attributes": {"joined_group_at": secret},
                    },
                    {"type": "profile", "id": secret * 10, "attributes": {}},
                ],
                "links": {"next": None},
            }
        )
    )

    with caplog.at_level(logging.WARNING, logger="mail_pipeline.integrations.klaviyo.client"):
        (page,) = list(client.iter_segment_profiles("SEG1"))

    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Klaviyo profile 01BAD is malformed: email is a list, not text",
        "Klaviyo profile 01ODD is malformed: the resource type is not 'profile'",
        "Klaviyo profile 01WHEN is malformed: joined_group_at is not an ISO-8601 date",
        "Klaviyo profile (no id) is malformed: the profile id is 230 characters long; "
        "at most 128 fit",
    ]
    assert all(secret not in str(r) for r in page.rejected)


@respx.mock
def test_a_page_without_a_data_list_is_a_malformed_response(client: KlaviyoClient) -> None:
    respx.get(url__startswith=SEGMENT_URL).mock(return_value=jsonapi({"data": {"id": "x"}}))

    with pytest.raises(MalformedResponse, match="no data list"):
        list(client.iter_segment_profiles("SEG1"))


@respx.mock
def test_create_event_posts_the_jsonapi_body_with_unique_id(client: KlaviyoClient) -> None:
    route = respx.post(f"{BASE}/api/events").mock(return_value=httpx.Response(202))

    client.create_event(
        "Postcard Delivered",
        unique_id="psc_123:delivered",
        email="jane@example.com",
        properties={"campaign_id": "c9", "carrier": "USPS"},
        time=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        value=0.65,
        value_currency="USD",
    )

    request = route.calls.last.request
    assert request.headers["content-type"] == "application/vnd.api+json"
    assert request.headers["authorization"] == "Klaviyo-API-Key pk_live_key"
    assert request.headers["revision"] == "2026-07-15"
    assert json.loads(request.content) == {
        "data": {
            "type": "event",
            "attributes": {
                "metric": {
                    "data": {"type": "metric", "attributes": {"name": "Postcard Delivered"}}
                },
                "profile": {
                    "data": {"type": "profile", "attributes": {"email": "jane@example.com"}}
                },
                "properties": {"campaign_id": "c9", "carrier": "USPS"},
                "time": "2026-05-01T12:00:00Z",
                "value": 0.65,
                "value_currency": "USD",
                "unique_id": "psc_123:delivered",
            },
        }
    }


@respx.mock
def test_event_by_profile_id_names_the_profile_resource(client: KlaviyoClient) -> None:
    route = respx.post(f"{BASE}/api/events").mock(return_value=httpx.Response(202))

    client.create_event("Postcard Sent", unique_id="r1:sent", profile_id="01ABC")

    body = json.loads(route.calls.last.request.content)
    assert body["data"]["attributes"]["profile"] == {
        "data": {"type": "profile", "id": "01ABC", "attributes": {}}
    }
    assert body["data"]["attributes"]["properties"] == {}
    assert "time" not in body["data"]["attributes"]


def test_event_needs_a_profile_and_an_aware_time() -> None:
    with pytest.raises(ValueError, match="email or id"):
        CdpEvent(metric_name="Postcard Sent", unique_id="u")
    with pytest.raises(ValueError, match="timezone-aware"):
        CdpEvent(
            metric_name="Postcard Sent", unique_id="u", email="a@b.c", time=datetime(2026, 1, 1)
        )


@respx.mock
def test_429_with_retry_after_is_waited_out_then_succeeds(
    client: KlaviyoClient,
    sleeps: list[float],
) -> None:
    throttled = jsonapi(
        {
            "errors": [
                {
                    "id": "e1",
                    "status": 429,
                    "code": "throttled",
                    "title": "Request was throttled.",
                    "detail": "Request was throttled. Expected available in 7 seconds.",
                    "source": {},
                }
            ]
        },
        429,
        {"Retry-After": "7"},
    )
    route = respx.post(f"{BASE}/api/events").mock(side_effect=[throttled, httpx.Response(202)])

    client.create_event("Postcard Sent", unique_id="r1:sent", email="a@example.com")

    assert route.call_count == 2
    assert sleeps == [7.0]
    first, second = (json.loads(c.request.content) for c in route.calls)
    assert first == second  # the retry carries the same unique_id


@respx.mock
def test_429_that_outlasts_the_retries_is_rate_limited(client: KlaviyoClient) -> None:
    respx.post(f"{BASE}/api/events").mock(
        return_value=jsonapi(
            {"errors": [{"code": "throttled", "detail": "Request was throttled."}]},
            429,
            {"Retry-After": "2"},
        )
    )

    with pytest.raises(RateLimited) as info:
        client.create_event("Postcard Sent", unique_id="u", email="a@example.com")
    assert info.value.retry_after == 2.0 and info.value.retryable


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid", RequestRejected),
        (401, "not_authenticated", AuthenticationFailed),
        (403, "permission_denied", AuthenticationFailed),
        (404, "not_found", NotFound),
    ],
)
@respx.mock
def test_klaviyo_error_bodies_become_typed_errors(
    client: KlaviyoClient,
    status: int,
    code: str,
    kind: type[Exception],
) -> None:
    respx.post(f"{BASE}/api/events").mock(
        return_value=jsonapi(
            {
                "errors": [
                    {
                        "id": "e1",
                        "status": status,
                        "code": code,
                        "title": "Bad.",
                        "detail": "metric name is required",
                        "source": {"pointer": "/data/attributes/metric"},
                    },
                    {
                        "id": "e2",
                        "status": status,
                        "code": code,
                        "title": "Bad.",
                        "detail": "second",
                    },
                ]
            },
            status,
        )
    )

    with pytest.raises(kind) as info:
        client.create_event("Postcard Sent", unique_id="u", email="a@example.com")
    error = info.value
    assert type(error) is kind
    assert str(error) == (
        f"klaviyo: metric name is required (at /data/attributes/metric); "
        f"and 1 more error(s) (HTTP {status}, {code})"
    )


def test_profile_from_jsonapi_reads_location_and_normalizes_an_address() -> None:
    profile = CdpProfile.from_jsonapi(resource(7))

    assert profile.profile_id == "01P00000000000000000000007"
    assert (profile.first_name, profile.last_name, profile.email) == (
        "Jane",
        "Doe7",
        "p7@example.com",
    )
    assert (profile.address1, profile.city, profile.region, profile.zip, profile.country) == (
        "12 North Main Street",
        "New York",
        "ny",
        "10017",
        "United States",
    )
    assert profile.properties == {"tier": "gold"}
    assert profile.joined_group_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert profile.has_address
    address = profile.to_address()
    assert (address.country, address.region, address.name) == ("US", "NY", "Jane Doe7")


def test_profile_without_location_has_no_address() -> None:
    profile = CdpProfile.from_jsonapi(
        {
            "type": "profile",
            "id": "01X",
            "attributes": {"email": "x@example.com", "location": None, "zip": 123},
        }
    )
    assert not profile.has_address
    with pytest.raises(InvalidAddress, match="missing"):
        profile.to_address()


@pytest.mark.parametrize(
    ("resource_", "reason"),
    [
        ("just text", "the resource is a str"),
        ({"type": "profile", "attributes": {}}, "no id"),
        ({"type": "event", "id": "01A", "attributes": {}}, "not 'profile'"),
        ({"type": "profile", "id": "01A", "attributes": None}, "attributes is NoneType"),
        ({"type": "profile", "id": "01A", "attributes": {"location": "NYC"}}, "location is str"),
        ({"type": "profile", "id": "01A", "attributes": {"properties": [1]}}, "properties is list"),
        ({"type": "profile", "id": "01A", "attributes": {"email": {"a": 1}}}, "email is a dict"),
        (
            {"type": "profile", "id": "01A", "attributes": {"joined_group_at": "yesterday"}},
            "not an ISO-8601 date",
        ),
    ],
)
def test_malformed_profiles_say_what_is_wrong(resource_: object, reason: str) -> None:
    with pytest.raises(MalformedProfile) as info:
        CdpProfile.from_jsonapi(resource_)
    assert reason in str(info.value)
    assert str(info.value).startswith("Klaviyo ")


def test_a_page_with_rejects_survives_pickling() -> None:
    rejected = MalformedProfile("01A", "attributes is list, not an object")
    page = ProfilePage((CdpProfile.from_jsonapi(resource(1)),), (rejected,), None)

    copy = pickle.loads(pickle.dumps(page))

    assert copy.profiles == page.profiles
    assert (copy.rejected[0].profile_id, str(copy.rejected[0])) == ("01A", str(rejected))
