"""The real Klaviyo client against the Klaviyo sandbox (the vendor stand-in)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.klaviyo import KlaviyoClient
from mail_pipeline.integrations.klaviyo.sandbox import (
    SANDBOX_API_KEY,
    KlaviyoLimits,
    KlaviyoSandbox,
)
from mail_pipeline.integrations.klaviyo.sandbox_data import (
    KlaviyoSandboxData,
    demo_profiles,
    profile_resource,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

HEADERS = {"Authorization": f"Klaviyo-API-Key {SANDBOX_API_KEY}", "revision": "2026-07-15"}


class Clock:
    """Time that only moves when someone sleeps."""

    def __init__(self, now: float = 1_800_000_000.25) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def store() -> SandboxStore:
    return SandboxStore(":memory:")


@pytest.fixture
def data(store: SandboxStore) -> KlaviyoSandboxData:
    return KlaviyoSandboxData(store)


def no_sleep(seconds: float) -> None:
    return None


def make_client(
    sandbox: KlaviyoSandbox,
    key: str = SANDBOX_API_KEY,
    sleep: Callable[[float], None] = no_sleep,
    attempts: int = 4,
) -> KlaviyoClient:
    return KlaviyoClient(
        key,
        transport=sandbox,
        sleep=sleep,
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.01),
    )


def raw(sandbox: KlaviyoSandbox) -> httpx.Client:
    return httpx.Client(base_url="https://a.klaviyo.com", transport=sandbox)


def test_250_profiles_in_pages_of_100_are_each_read_exactly_once(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(250, seed=3))
    client = make_client(KlaviyoSandbox(store))

    pages = list(client.iter_segment_profiles("SEG1", page_size=100))

    assert [len(page.profiles) for page in pages] == [100, 100, 50]
    ids = [p.profile_id for page in pages for p in page.profiles]
    assert len(ids) == len(set(ids)) == 250
    assert ids == [r["id"] for r in demo_profiles(250, seed=3)]  # segment order kept
    assert pages[-1].next_url is None and all(not page.rejected for page in pages)
    cursor = httpx.URL(pages[0].next_url or "").params["page[cursor]"]
    assert base64.urlsafe_b64decode(cursor + "==")  # opaque base64, built by the vendor


def test_a_malformed_profile_is_reported_and_the_others_are_still_returned(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    profiles: list[object] = list(demo_profiles(5))
    profiles[2] = {"type": "profile", "id": "01BROKEN", "attributes": "oops"}
    data.put_segment_profiles("SEG1", profiles)

    (page,) = list(make_client(KlaviyoSandbox(store)).iter_segment_profiles("SEG1"))

    assert len(page.profiles) == 4
    assert "01BROKEN" not in {p.profile_id for p in page.profiles}
    assert [r.profile_id for r in page.rejected] == ["01BROKEN"]
    assert "attributes is str" in str(page.rejected[0])


def test_sparse_fieldsets_and_the_joined_after_filter(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    data.put_segment_profiles(
        "SEG1",
        [
            profile_resource(
                f"01J{n}",
                f"j{n}@example.com",
                "A",
                "B",
                joined_group_at=datetime(2026, 2, n + 1, tzinfo=UTC),
            )
            for n in range(5)
        ],
    )
    sandbox = KlaviyoSandbox(store)
    client = make_client(sandbox)

    pages = list(
        client.iter_segment_profiles(
            "SEG1", page_size=1, joined_after=datetime(2026, 2, 3, tzinfo=UTC)
        )
    )

    assert [p.profile_id for page in pages for p in page.profiles] == ["01J3", "01J4"]
    body = (
        raw(sandbox)
        .get(
            "/api/segments/SEG1/profiles",
            params={"fields[profile]": "email,location.city"},
            headers=HEADERS,
        )
        .json()
    )
    assert body["data"][0]["attributes"] == {"email": "j0@example.com", "location": {"city": None}}


def test_reseeding_replaces_the_segment(store: SandboxStore, data: KlaviyoSandboxData) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(30, seed=1))
    data.put_segment_profiles("SEG1", demo_profiles(4, seed=2))
    data.put_segment_profiles("SEG2", demo_profiles(1, seed=9))

    profiles, rejected = make_client(KlaviyoSandbox(store)).segment_profiles("SEG1")

    assert [p.profile_id for p in profiles] == [r["id"] for r in demo_profiles(4, seed=2)]
    assert rejected == []
    assert sorted(data.segment_ids()) == ["SEG1", "SEG2"]
    assert data.segment_size("SEG1") == 4


def test_unknown_segment_is_not_found(store: SandboxStore) -> None:
    with pytest.raises(NotFound, match="A segment with id NOPE does not exist"):
        list(make_client(KlaviyoSandbox(store)).iter_segment_profiles("NOPE"))


@pytest.mark.parametrize("size", ["0", "101", "ten"])
def test_page_size_outside_1_to_100_is_a_jsonapi_400(
    store: SandboxStore,
    data: KlaviyoSandboxData,
    size: str,
) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(1))
    response = raw(KlaviyoSandbox(store)).get(
        "/api/segments/SEG1/profiles", params={"page[size]": size}, headers=HEADERS
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/vnd.api+json"
    (error,) = response.json()["errors"]
    assert error["code"] == "invalid" and error["source"] == {"parameter": "page[size]"}
    assert "between 1 and 100" in error["detail"]


def test_a_forged_cursor_is_refused(store: SandboxStore, data: KlaviyoSandboxData) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(1))
    response = raw(KlaviyoSandbox(store)).get(
        "/api/segments/SEG1/profiles", params={"page[cursor]": "not-a-cursor"}, headers=HEADERS
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["detail"] == "Invalid page cursor."


def test_the_revision_header_is_required(store: SandboxStore, data: KlaviyoSandboxData) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(1))
    response = raw(KlaviyoSandbox(store)).get(
        "/api/segments/SEG1/profiles", headers={"Authorization": HEADERS["Authorization"]}
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"parameter": "revision"}


def test_a_wrong_api_key_is_authentication_failed(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(1))
    sandbox = KlaviyoSandbox(store)

    with pytest.raises(AuthenticationFailed) as info:
        list(make_client(sandbox, key="pk_wrong").iter_segment_profiles("SEG1"))
    assert info.value.status_code == 401 and info.value.code == "authentication_failed"
    missing = raw(sandbox).get("/api/segments/SEG1/profiles", headers={"revision": "2026-07-15"})
    assert missing.status_code == 401
    assert missing.json()["errors"][0]["code"] == "not_authenticated"


def test_burst_limit_answers_429_with_retry_after_only_then_the_client_succeeds(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(3))
    clock = Clock()
    sandbox = KlaviyoSandbox(store, limits=KlaviyoLimits(segment_profiles=(1, 100)), clock=clock)
    http = raw(sandbox)
    ok = http.get("/api/segments/SEG1/profiles", headers=HEADERS)
    throttled = http.get("/api/segments/SEG1/profiles", headers=HEADERS)

    assert ok.status_code == 200 and ok.headers["RateLimit-Remaining"] == "0"
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert not [h for h in throttled.headers if h.lower().startswith("ratelimit")]
    assert throttled.json()["errors"][0]["code"] == "throttled"

    client = make_client(sandbox, sleep=clock.sleep)
    pages = list(client.iter_segment_profiles("SEG1", page_size=1))

    assert sum(len(page.profiles) for page in pages) == 3
    assert clock.sleeps and all(s == 1.0 for s in clock.sleeps)  # waited as told, each time


def test_steady_limit_that_outlasts_the_retries_is_rate_limited(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    data.put_segment_profiles("SEG1", demo_profiles(1))
    clock = Clock()
    sandbox = KlaviyoSandbox(store, limits=KlaviyoLimits(segment_profiles=(10, 1)), clock=clock)
    client = make_client(sandbox, sleep=clock.sleep, attempts=1)
    list(client.iter_segment_profiles("SEG1"))

    with pytest.raises(RateLimited) as info:
        list(client.iter_segment_profiles("SEG1"))
    assert info.value.retry_after == 60.0  # the rest of the steady (per-minute) window


def test_events_are_accepted_with_202_and_deduplicated_by_unique_id_profile_and_metric(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    seeded = demo_profiles(1)[0]
    data.put_segment_profiles("SEG1", [seeded])
    sandbox = KlaviyoSandbox(store)
    client = make_client(sandbox)
    email = seeded["attributes"]["email"]

    client.create_event(
        "Postcard Sent", unique_id="r1:sent", email=email, properties={"attempt": 1}
    )
    # the same event again, naming the same profile by id: not recorded a second time
    client.create_event(
        "Postcard Sent", unique_id="r1:sent", profile_id=seeded["id"], properties={"attempt": 2}
    )
    client.create_event("Postcard Delivered", unique_id="r1:sent", email=email)
    client.create_event("Postcard Sent", unique_id="r1:sent", email="other@example.com")

    sent = data.events("Postcard Sent")
    assert [(e["profile_key"], e["properties"]) for e in sent] == [
        (f"profile:{seeded['id']}", {"attempt": 1}),  # first one wins
        ("email:other@example.com", {}),
    ]
    assert len(data.events()) == 3

    response = raw(sandbox).post(
        "/api/events",
        headers={**HEADERS, "Content-Type": "application/vnd.api+json"},
        content=json.dumps(
            {
                "data": {
                    "type": "event",
                    "attributes": {
                        "metric": {
                            "data": {"type": "metric", "attributes": {"name": "Postcard Sent"}}
                        },
                        "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
                        "properties": {},
                        "unique_id": "r2:sent",
                    },
                }
            }
        ),
    )
    assert response.status_code == 202 and response.content == b""


def test_events_without_unique_id_collapse_to_one_per_profile_metric_and_second(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    http = raw(KlaviyoSandbox(store))

    def post(when: str) -> int:
        body = {
            "data": {
                "type": "event",
                "attributes": {
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed"}}},
                    "profile": {
                        "data": {"type": "profile", "attributes": {"email": "a@example.com"}}
                    },
                    "properties": {},
                    "time": when,
                },
            }
        }
        return http.post("/api/events", json=body, headers=HEADERS).status_code

    assert [
        post("2026-05-01T12:00:00Z"),
        post("2026-05-01T12:00:00Z"),
        post("2026-05-01T12:00:01Z"),
    ] == [202, 202, 202]
    assert len(data.events("Viewed")) == 2


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"properties": {}}, "/data/attributes/metric"),
        (
            {"metric": {"data": {"type": "metric", "attributes": {"name": "M"}}}},
            "/data/attributes/properties",
        ),
        (
            {
                "metric": {"data": {"type": "metric", "attributes": {"name": "M"}}},
                "properties": {},
                "profile": {"data": {"type": "profile", "attributes": {}}},
            },
            "/data/attributes/profile",
        ),
        (
            {
                "metric": {"data": {"type": "metric", "attributes": {"name": "M"}}},
                "properties": {},
                "profile": {"data": {"type": "profile", "id": "01A"}},
                "time": "1980-01-01T00:00:00Z",
            },
            "/data/attributes/time",
        ),
    ],
)
def test_invalid_events_are_rejected_with_a_pointer(
    store: SandboxStore,
    attributes: dict[str, object],
    pointer: str,
) -> None:
    response = raw(KlaviyoSandbox(store)).post(
        "/api/events", json={"data": {"type": "event", "attributes": attributes}}, headers=HEADERS
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"pointer": pointer}


def test_a_lost_event_response_is_retried_and_recorded_once(
    store: SandboxStore,
    data: KlaviyoSandboxData,
) -> None:
    sandbox = KlaviyoSandbox(store, SandboxBehaviour(lost_response_rate=1.0))

    class LoseFirst(httpx.BaseTransport):
        calls = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            self.calls += 1
            if self.calls == 1:
                return sandbox.handle_request(request)  # processed, then the answer is lost
            return KlaviyoSandbox(store).handle_request(request)

    transport = LoseFirst()
    client = KlaviyoClient(SANDBOX_API_KEY, transport=transport, sleep=lambda s: None)

    client.create_event("Postcard Sent", unique_id="r7:sent", email="z@example.com")

    assert transport.calls == 2
    assert len(data.events("Postcard Sent")) == 1


def test_5xx_is_retried_until_the_budget_runs_out(store: SandboxStore) -> None:
    sandbox = KlaviyoSandbox(store, SandboxBehaviour(failure_rate=1.0))
    sleeps: list[float] = []
    client = make_client(sandbox, sleep=sleeps.append, attempts=3)

    with pytest.raises(VendorUnavailable) as info:
        client.create_event("Postcard Sent", unique_id="u", email="a@example.com")
    assert info.value.retryable and info.value.status_code == 503
    assert len(sleeps) == 2 and sandbox.request_count == 3


def test_wrong_content_type_is_415(store: SandboxStore) -> None:
    response = raw(KlaviyoSandbox(store)).post(
        "/api/events",
        content=b"a=b",
        headers={**HEADERS, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.json()["errors"][0]["code"] == "unsupported_media_type"


def test_unknown_endpoint_and_method_answer_in_klaviyos_error_shape(
    store: SandboxStore,
) -> None:
    http = raw(KlaviyoSandbox(store))
    missing = http.get("/api/lists", headers=HEADERS)
    wrong_method = http.get("/api/events", headers=HEADERS)

    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["errors"][0]["code"] == "method_not_allowed"
    with pytest.raises(RequestRejected, match="time must be after 1990"):
        make_client(KlaviyoSandbox(store)).create_event(
            "Postcard Sent",
            unique_id="u",
            email="a@example.com",
            time=datetime(1985, 1, 1, tzinfo=UTC),
        )
