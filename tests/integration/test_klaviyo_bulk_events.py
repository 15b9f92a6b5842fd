"""Klaviyo's Bulk Create Events (``POST /api/event-bulk-create-jobs``): the client's calls,
the sandbox's answers, and how mailing sends a chunk's "Postcard Sent" events through it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
import respx

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.klaviyo import CdpEvent, KlaviyoClient
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY, KlaviyoSandbox
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.services.mailing import _send_cdp_events

BULK = "https://a.klaviyo.com/api/event-bulk-create-jobs"
WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def event(n: int, **changes: Any) -> CdpEvent:
    fields: dict[str, Any] = {
        "metric_name": "Postcard Sent",
        "unique_id": f"r{n}:cdp",
        "email": f"p{n}@example.com",
        "properties": {"campaign_id": 7},
        "time": WHEN,
    }
    fields.update(changes)
    return CdpEvent(**fields)


def client_for(transport: httpx.BaseTransport, key: str = SANDBOX_API_KEY) -> KlaviyoClient:
    return KlaviyoClient(
        key,
        transport=transport,
        sleep=lambda _s: None,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01),
    )


@pytest.fixture
def store() -> SandboxStore:
    return SandboxStore(":memory:")


@respx.mock
def test_the_events_go_as_one_job_of_one_entry_per_event() -> None:
    route = respx.post(BULK).mock(return_value=httpx.Response(202))

    KlaviyoClient("pk_live_key").send_events([event(1), event(2, email=None, profile_id="01ABC")])

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/vnd.api+json"
    assert request.headers["revision"] == "2026-07-15"
    job = json.loads(request.content)["data"]
    assert job["type"] == "event-bulk-create-job"
    entries = job["attributes"]["events-bulk-create"]["data"]
    assert [e["attributes"]["profile"]["data"] for e in entries] == [
        {"type": "profile", "attributes": {"email": "p1@example.com"}},
        {"type": "profile", "id": "01ABC", "attributes": {}},
    ]
    assert entries[0]["type"] == "event-bulk-create"
    assert entries[0]["attributes"]["events"]["data"] == [
        {
            "type": "event",
            "attributes": {
                "metric": {"data": {"type": "metric", "attributes": {"name": "Postcard Sent"}}},
                "properties": {"campaign_id": 7},
                "unique_id": "r1:cdp",
                "time": "2026-05-01T12:00:00Z",
            },
        }
    ]


@respx.mock
def test_more_than_a_thousand_events_take_several_calls() -> None:
    route = respx.post(BULK).mock(return_value=httpx.Response(202))

    KlaviyoClient("pk_live_key").send_events([event(n) for n in range(2_001)])

    sizes = [
        len(json.loads(c.request.content)["data"]["attributes"]["events-bulk-create"]["data"])
        for c in route.calls
    ]
    assert sizes == [1_000, 1_000, 1]


@respx.mock
def test_large_events_are_cut_under_five_megabytes_a_call() -> None:
    route = respx.post(BULK).mock(return_value=httpx.Response(202))
    big = {"note": "x" * 90_000}  # under Klaviyo's 100 KB a string

    KlaviyoClient("pk_live_key").send_events([event(n, properties=big) for n in range(120)])

    assert route.call_count == 3
    assert all(len(c.request.content) <= 5_000_000 for c in route.calls)


def test_the_sandbox_records_each_event_once_by_unique_id(store: SandboxStore) -> None:
    client = client_for(KlaviyoSandbox(store))

    client.send_events([event(n) for n in range(30)])
    client.send_events([event(n) for n in range(25, 35)])  # 5 again, 5 new
    client.send_event(event(3))  # the same event one by one

    recorded = KlaviyoSandboxData(store).events("Postcard Sent")
    assert sorted(e["unique_id"] for e in recorded) == sorted(f"r{n}:cdp" for n in range(35))


def test_an_invalid_event_refuses_the_whole_job_naming_it(store: SandboxStore) -> None:
    client = client_for(KlaviyoSandbox(store))
    too_many = {str(n): n for n in range(401)}

    with pytest.raises(RequestRejected) as refused:
        client.send_events([event(1), event(2, properties=too_many), event(3)])

    assert refused.value.status_code == 400
    assert "/events-bulk-create/data/1/attributes/events/data/0/attributes/properties" in str(
        refused.value
    )
    assert KlaviyoSandboxData(store).events() == []


def test_the_sandbox_limits_bulk_jobs_to_ten_a_second(store: SandboxStore) -> None:
    sandbox = KlaviyoSandbox(store, clock=lambda: 1_800_000_000.25)
    http = httpx.Client(
        base_url="https://a.klaviyo.com",
        transport=sandbox,
        headers={"Authorization": f"Klaviyo-API-Key {SANDBOX_API_KEY}", "revision": "2026-07-15"},
    )
    body = {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": [event(1).to_bulk_entry()]}},
        }
    }

    answers = [http.post("/api/event-bulk-create-jobs", json=body) for _ in range(11)]

    assert [a.status_code for a in answers] == [202] * 10 + [429]
    assert answers[-1].headers["Retry-After"] == "1"
    assert "ratelimit-limit" in answers[0].headers


# -- mailing: a chunk's events for one account -------------------------------------------


class Clients:
    def __init__(self, client: KlaviyoClient) -> None:
        self.client = client
        self.asked = 0

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        self.asked += 1
        return self.client


class Counting(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)


REF = cast(IntegrationRef, object())


def test_a_chunk_takes_one_call_for_its_events(store: SandboxStore) -> None:
    transport = Counting(KlaviyoSandbox(store))
    events = {f"k{n}": event(n, unique_id=f"k{n}") for n in range(25)}

    refused = _send_cdp_events(Clients(client_for(transport)), REF, events)

    assert refused == {}
    assert transport.paths == ["/api/event-bulk-create-jobs"]
    assert len(KlaviyoSandboxData(store).events()) == 25


def test_an_invalid_event_is_refused_alone_and_the_others_recorded(store: SandboxStore) -> None:
    transport = Counting(KlaviyoSandbox(store))
    events = {f"k{n}": event(n, unique_id=f"k{n}") for n in range(4)}
    events["k2"] = event(2, unique_id="k2", properties={str(n): n for n in range(401)})

    refused = _send_cdp_events(Clients(client_for(transport)), REF, events)

    assert list(refused) == ["k2"]
    assert "at most 400 properties" in str(refused["k2"])
    assert sorted(e["unique_id"] for e in KlaviyoSandboxData(store).events()) == [
        "k0",
        "k1",
        "k3",
    ]
    assert transport.paths == ["/api/event-bulk-create-jobs"] + ["/api/events"] * 4


def test_a_revoked_key_refuses_every_event_without_asking_one_by_one(
    store: SandboxStore,
) -> None:
    transport = Counting(KlaviyoSandbox(store))
    events = {f"k{n}": event(n, unique_id=f"k{n}") for n in range(3)}

    refused = _send_cdp_events(Clients(client_for(transport, key="pk_revoked")), REF, events)

    assert set(refused) == {"k0", "k1", "k2"}
    assert all(isinstance(error, AuthenticationFailed) for error in refused.values())
    assert transport.paths == ["/api/event-bulk-create-jobs"]


def test_an_outage_is_raised_for_the_whole_chunk_to_be_retried(store: SandboxStore) -> None:
    sandbox = KlaviyoSandbox(store)
    sandbox.inject("server_error", times=None)
    events = {f"k{n}": event(n, unique_id=f"k{n}") for n in range(3)}

    with pytest.raises(VendorUnavailable):
        _send_cdp_events(Clients(client_for(sandbox)), REF, events)
    assert KlaviyoSandboxData(store).events() == []


def test_no_events_no_call(store: SandboxStore) -> None:
    clients = Clients(client_for(Counting(KlaviyoSandbox(store))))

    assert _send_cdp_events(clients, REF, {}) == {}
    assert clients.asked == 0
