"""Faraday address append: the client against its sandbox (matches, no matches, error, a
target that never finishes, idempotent re-submits after a crash at every step, lost answers)
and against Faraday's error shapes and malformed exports (respx)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from mail_pipeline.domain.addresses import US_STATES
from mail_pipeline.integrations.enrichment import (
    AddressEnricher,
    AppendedAddress,
    BatchState,
    IdentityRow,
)
from mail_pipeline.integrations.enrichment.faraday import (
    BatchMismatch,
    FaradayEnricher,
    MalformedResponse,
    batch_names,
    read_matches,
)
from mail_pipeline.integrations.enrichment.sandbox import (
    ERROR_MARKER,
    SANDBOX_API_KEY,
    STUCK_MARKER,
    FaradaySandbox,
    sandbox_matches,
)
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from tests.integration.test_orders_klaviyo import Clock

KINDS = ("uploads", "datasets", "cohorts", "scopes", "targets")
BASE = "https://api.faraday.ai/v1"


def people(count: int, *, prefix: str = "p") -> list[IdentityRow]:
    return [
        IdentityRow(
            reference=f"ref-{prefix}{n:03d}",
            email=f"{prefix}{n}@example.com",
            first_name="Avery",
            last_name=f"Quinn{n}",
            postcode="94107" if n % 3 == 0 else None,
        )
        for n in range(count)
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> SandboxStore:
    return SandboxStore(":memory:")


def make(
    store: SandboxStore,
    clock: Clock,
    *,
    sandbox: FaradaySandbox | None = None,
    key: str = SANDBOX_API_KEY,
    **options: Any,
) -> tuple[FaradayEnricher, FaradaySandbox]:
    sandbox = sandbox or FaradaySandbox(store, clock=clock, sleep=clock.sleep, **options)
    client = FaradayEnricher(
        key,
        transport=sandbox,
        retry=RetryPolicy(max_attempts=4, base_delay=0.5),
        sleep=clock.sleep,
        monotonic=clock,
    )
    return client, sandbox


def counts(sandbox: FaradaySandbox) -> dict[str, int]:
    return {kind: sandbox.count(kind) for kind in KINDS}


ONE_OF_EACH = dict.fromkeys(KINDS, 1)


# -- against the sandbox ------------------------------------------------------------------


def test_a_batch_runs_then_matches_some_people(store: SandboxStore, clock: Clock) -> None:
    client, sandbox = make(store, clock)
    batch = [*people(200), IdentityRow("ref-no-email", None, "Sam", "Lee", "10001")]
    enricher: AddressEnricher = client

    target_id = enricher.submit("2026-11-20 organization-3 #1", batch)

    statuses = []
    for seconds in (0, 10, 100):
        clock.sleep(seconds)
        statuses.append(sandbox.resources("targets")[0]["status"])
        assert enricher.poll(target_id).state is BatchState.RUNNING
    assert statuses == ["new", "running", "running"]
    clock.sleep(10)  # 120 s after creation: ready_after_seconds (the default) have passed
    result = enricher.poll(target_id)

    assert result.state is BatchState.READY and result.skipped == 0 and result.reason is None
    expected = {p.reference for p in batch if sandbox_matches(p.email)}
    assert {m.reference for m in result.matches} == expected
    assert "ref-no-email" not in expected
    assert 0.55 < len(expected) / 200 < 0.85
    for match in result.matches:
        assert match.country == "US" and match.state in US_STATES
        assert re.fullmatch(r"\d{5}", match.postcode)
        assert re.fullmatch(r"\d+ \w+ \w+( Apt \d+)?", match.line1) and match.city
    assert enricher.poll(target_id) == result  # a ready batch answers the same again
    assert counts(sandbox) == ONE_OF_EACH


def test_the_upload_and_resources_are_what_faraday_documents(
    store: SandboxStore, clock: Clock
) -> None:
    client, sandbox = make(store, clock)
    client.submit("b1", [IdentityRow("r1", "a@example.com", "Ann", "Bee", "10001")])
    names = batch_names("b1")
    (upload,) = sandbox.resources("uploads")
    assert upload["subpath"] == f"{names.directory}/people.csv"
    (dataset,) = sandbox.resources("datasets")
    assert dataset["name"] == "address-append b1"
    assert dataset["options"] == {"type": "hosted_csv", "upload_directory": names.directory}
    assert dataset["identity_sets"]["person"]["email"] == "email"
    assert dataset["reference_key_columns"] == ["reference"]
    (scope,) = sandbox.resources("scopes")
    assert scope["preview"] is False
    (target,) = sandbox.resources("targets")
    assert target["representation"] == {
        "mode": "identified",
        "aggregate": "person",
        "transform_preset": "address_only",
    }
    assert target["options"] == {"type": "hosted_csv"}


def test_a_batch_that_matches_nobody_is_ready_and_empty(store: SandboxStore, clock: Clock) -> None:
    client, _ = make(store, clock, ready_after_seconds=0, match_rate=0.0)
    target_id = client.submit("nobody", people(20))
    assert client.poll(target_id).state is BatchState.READY
    assert client.poll(target_id).matches == ()


def test_people_without_an_email_never_match(store: SandboxStore, clock: Clock) -> None:
    client, _ = make(store, clock, ready_after_seconds=0, match_rate=1.0)
    batch = [IdentityRow(f"r{n}", None, "Ann", "Bee", "10001") for n in range(10)]
    result = client.poll(client.submit("no-emails", batch))
    assert result.state is BatchState.READY and result.matches == ()


def test_the_error_marker_fails_the_batch(store: SandboxStore, clock: Clock) -> None:
    client, _ = make(store, clock)
    target_id = client.submit(f"demo {ERROR_MARKER}", people(5))
    assert client.poll(target_id).state is BatchState.RUNNING
    clock.sleep(120)
    result = client.poll(target_id)
    assert result.state is BatchState.FAILED and result.matches == ()
    assert result.reason is not None and ERROR_MARKER in result.reason


def test_the_stuck_marker_never_finishes_while_waiting(store: SandboxStore, clock: Clock) -> None:
    client, sandbox = make(store, clock, ready_after_seconds=0)
    target_id = client.submit(f"demo {STUCK_MARKER.upper()}", people(5))
    start = clock()
    result = client.wait(target_id, timeout=3600, interval=60)
    assert result.state is BatchState.RUNNING
    assert clock() - start == pytest.approx(3600)
    assert clock.sleeps.count(60) == 60
    assert sandbox.resources("targets")[0]["status"] == "running"


def test_wait_returns_once_the_target_is_ready(store: SandboxStore, clock: Clock) -> None:
    client, _ = make(store, clock)
    target_id = client.submit("waited", people(30))
    start = clock()
    result = client.wait(target_id, timeout=3600, interval=30)
    assert result.state is BatchState.READY and result.matches
    assert 120 <= clock() - start <= 150


class SimulatedCrash(Exception):
    """The caller's process dies right after the vendor answered."""


class CrashingSandbox(FaradaySandbox):
    """Processes the first successful POST under ``crash_after``, then crashes the caller."""

    def __init__(self, *args: Any, crash_after: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crash_after = crash_after
        self.crashed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if (
            not self.crashed
            and request.method == "POST"
            and request.url.path.startswith(self.crash_after)
            and response.is_success
        ):
            self.crashed = True
            raise SimulatedCrash(request.url.path)
        return response


@pytest.mark.parametrize(
    "step", ["/v1/uploads/", "/v1/datasets", "/v1/cohorts", "/v1/scopes", "/v1/targets"]
)
def test_a_resubmit_after_a_crash_after_any_step_makes_one_target(
    store: SandboxStore, clock: Clock, step: str
) -> None:
    batch = people(40)
    crashing = CrashingSandbox(store, clock=clock, crash_after=step, ready_after_seconds=0)
    first, _ = make(store, clock, sandbox=crashing)
    with pytest.raises(SimulatedCrash):
        first.submit("crashy", batch)
    first.close()

    again, sandbox = make(store, clock, ready_after_seconds=0)  # a new process, same vendor
    target_id = again.submit("crashy", batch)

    assert counts(sandbox) == ONE_OF_EACH
    assert again.submit("crashy", batch) == target_id
    assert counts(sandbox) == ONE_OF_EACH
    expected = {p.reference for p in batch if sandbox_matches(p.email)}
    assert {m.reference for m in again.poll(target_id).matches} == expected


class LosingSandbox(FaradaySandbox):
    """Processes every POST under ``lose``, but its first answer never arrives."""

    def __init__(self, *args: Any, lose: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lose = lose
        self.lost = 0
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.startswith(self.lose):
            self.posts += 1
            if self.lost == 0:
                self.lost += 1
                raise httpx.ReadTimeout("answer lost", request=request)
        return response


@pytest.mark.parametrize("step", ["/v1/datasets", "/v1/scopes", "/v1/targets"])
def test_a_create_whose_answer_was_lost_is_found_not_repeated(
    store: SandboxStore, clock: Clock, step: str
) -> None:
    sandbox = LosingSandbox(store, clock=clock, lose=step, ready_after_seconds=0)
    client, _ = make(store, clock, sandbox=sandbox)
    target_id = client.submit("lossy", people(10))
    assert sandbox.lost == 1 and sandbox.posts == 1
    assert counts(sandbox) == ONE_OF_EACH
    assert client.poll(target_id).state is BatchState.READY


def test_a_batch_name_reused_for_other_people_is_refused(store: SandboxStore, clock: Clock) -> None:
    crashing = CrashingSandbox(store, clock=clock, crash_after="/v1/uploads/")
    first, _ = make(store, clock, sandbox=crashing)
    with pytest.raises(SimulatedCrash):
        first.submit("reused", people(5))
    client, sandbox = make(store, clock)
    with pytest.raises(BatchMismatch, match="different list"):
        client.submit("reused", people(6))
    assert counts(sandbox) == {**dict.fromkeys(KINDS, 0), "uploads": 1}


def test_separate_processes_share_the_vendor(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "sandbox.sqlite"
    submitter, _ = make(SandboxStore(path), clock, ready_after_seconds=0)
    target_id = submitter.submit("shared", people(10))
    poller, _ = make(SandboxStore(path), clock, ready_after_seconds=0)
    assert poller.poll(target_id).state is BatchState.READY
    assert poller.submit("shared", people(10)) == target_id


def test_a_rate_limited_sandbox_is_waited_out(store: SandboxStore, clock: Clock) -> None:
    client, sandbox = make(
        store,
        clock,
        behaviour=SandboxBehaviour(rate_limit=(3, 10.0)),
        ready_after_seconds=0,
    )
    target_id = client.submit("patient", people(10))
    assert client.poll(target_id).state is BatchState.READY
    assert counts(sandbox) == ONE_OF_EACH
    assert clock.sleeps and all(s >= 1 for s in clock.sleeps)


def test_a_wrong_key_is_refused(store: SandboxStore, clock: Clock) -> None:
    client, sandbox = make(store, clock, key="not-the-key")
    with pytest.raises(AuthenticationFailed, match="not valid"):
        client.submit("denied", people(3))
    assert counts(sandbox) == dict.fromkeys(KINDS, 0)


@pytest.mark.parametrize(
    ("name", "batch", "problem"),
    [
        ("", people(1), "batch name"),
        (" padded", people(1), "batch name"),
        ("x" * 101, people(1), "batch name"),
        ("ok", [], "at least one person"),
        ("ok", [IdentityRow("same"), IdentityRow("same")], "twice"),
        ("ok", [IdentityRow("")], "reference"),
    ],
)
def test_bad_batches_are_refused_before_any_request(
    store: SandboxStore, clock: Clock, name: str, batch: list[IdentityRow], problem: str
) -> None:
    client, sandbox = make(store, clock)
    with pytest.raises(ValueError, match=problem):
        client.submit(name, batch)
    assert sandbox.request_count == 0


def test_the_sandbox_answers_like_faraday(store: SandboxStore, clock: Clock) -> None:
    client, sandbox = make(store, clock)
    with pytest.raises(NotFound, match="not found"):
        client.poll("no-such-target")
    target_id = client.submit("early", people(3))
    raw = httpx.Client(
        base_url=BASE, transport=sandbox, headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}
    )
    early = raw.get(f"/targets/{target_id}/download.csv")
    assert early.status_code == 404 and early.json()["error"] == "NOT_FOUND"
    scope = sandbox.resources("scopes")[0]
    again = raw.post(
        "/scopes",
        json={
            "name": scope["name"],
            "population": scope["population"],
            "payload": {},
            "preview": False,
        },
    )
    assert again.status_code == 409 and again.json()["error"] == "CONFLICT"
    invalid = raw.post("/targets", json={"name": "x", "scope_id": scope["id"]})
    assert invalid.status_code == 400
    assert invalid.json()["validationErrors"][0]["path"] == "/options/type"
    anonymous = httpx.Client(base_url=BASE, transport=sandbox).get("/targets")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "MISSING_API_KEY"
    assert counts(sandbox) == ONE_OF_EACH


def test_no_email_reaches_the_logs(
    store: SandboxStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make(store, clock, ready_after_seconds=0)
    client.poll(client.submit("quiet", people(20)))
    assert caplog.records and "@example.com" not in caplog.text


# -- Faraday's answers (respx) ------------------------------------------------------------


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def live(sleeps: list[float]) -> FaradayEnricher:
    return FaradayEnricher(
        "live-key", sleep=sleeps.append, retry=RetryPolicy(max_attempts=3, base_delay=0.01)
    )


def faraday_body(code: str, note: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "id": "err-123", "note": note, **extra}


@respx.mock
@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (401, faraday_body("INVALID_AUTHORIZATION", "bad key"), AuthenticationFailed, "bad key"),
        (403, faraday_body("FORBIDDEN", "not your target"), AuthenticationFailed, "not your"),
        (
            400,
            faraday_body(
                "VALIDATION_FAILED",
                "failed validation",
                validationErrors=[{"path": "/name", "message": "required"}, {"path": "/x"}],
            ),
            RequestRejected,
            r"failed validation \(/name: required\); and 1 more \[error id err-123\]",
        ),
        (404, {"unexpected": True}, RequestRejected, "unexpected"),
    ],
)
def test_errors_are_typed_with_faradays_note(
    live: FaradayEnricher, status: int, body: Any, kind: type[Exception], message: str
) -> None:
    route = respx.get(f"{BASE}/targets/t1").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(kind, match=message):
        live.poll("t1")
    assert route.calls.last.request.headers["authorization"] == "Bearer live-key"


@respx.mock
def test_429_honours_retry_after_and_a_lasting_one_is_rate_limited(
    live: FaradayEnricher, sleeps: list[float]
) -> None:
    respx.get(f"{BASE}/targets/t1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json={"id": "t1", "status": "running"}),
        ]
    )
    assert live.poll("t1").state is BatchState.RUNNING
    assert sleeps == [3.0]

    respx.get(f"{BASE}/targets/t2").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"})
    )
    with pytest.raises(RateLimited) as caught:
        live.poll("t2")
    assert caught.value.retry_after == 3600 and sleeps == [3.0]


@respx.mock
def test_a_5xx_storm_is_vendor_unavailable(live: FaradayEnricher) -> None:
    route = respx.get(f"{BASE}/targets/t1").mock(
        return_value=httpx.Response(500, json=faraday_body("INTERNAL_SERVER_ERROR", "oops"))
    )
    with pytest.raises(VendorUnavailable, match="oops"):
        live.poll("t1")
    assert route.call_count == 3


@respx.mock
def test_a_failed_create_is_checked_before_it_is_retried(
    live: FaradayEnricher, sleeps: list[float]
) -> None:
    names = batch_names("b")
    created = {"id": "tgt-1", "name": names.name, "created_at": "2026-11-20T12:00:00Z"}
    respx.get(f"{BASE}/uploads").mock(return_value=httpx.Response(200, json=[]))
    respx.post(url__regex=rf"{BASE}/uploads/.+").mock(return_value=httpx.Response(200))
    for kind in ("datasets", "cohorts", "scopes"):
        respx.get(f"{BASE}/{kind}").mock(return_value=httpx.Response(200, json=[]))
        respx.post(f"{BASE}/{kind}").mock(return_value=httpx.Response(201, json={"id": kind}))
    # The target POST fails with a 500 although Faraday created it: the lookup finds it.
    respx.get(f"{BASE}/targets").mock(
        side_effect=[
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[]),
            httpx.Response(200, json=[created]),
        ]
    )
    post = respx.post(f"{BASE}/targets").mock(return_value=httpx.Response(502, text="gateway"))
    assert live.submit("b", people(3)) == "tgt-1"
    assert post.call_count == 1 and len(sleeps) == 1


@respx.mock
def test_a_target_error_is_a_failed_batch(live: FaradayEnricher) -> None:
    respx.get(f"{BASE}/targets/t1").mock(
        return_value=httpx.Response(
            200, json={"id": "t1", "status": "error", "status_error": "no identities"}
        )
    )
    result = live.poll("t1")
    assert result.state is BatchState.FAILED and result.reason == "faraday: no identities"


@respx.mock
def test_an_unknown_status_is_malformed(live: FaradayEnricher) -> None:
    respx.get(f"{BASE}/targets/t1").mock(
        return_value=httpx.Response(200, json={"id": "t1", "status": "exploded"})
    )
    with pytest.raises(MalformedResponse, match="unknown status"):
        live.poll("t1")


EXPORT = (
    "reference,email,house_number_and_street,address_line_2,city,state,postcode\r\n"
    "r-good,good@example.com,12 Main St,Apt 4,Sacramento,CA,95814\r\n"
    "r-zip4,zip4@example.com,1 Elm Ave,,Austin,Texas,78701 1234\r\n"
    "r-zero,zero@example.com,9 Oak Rd,,Hartford,ct,6103\r\n"
    "r-nocity,nocity@example.com,3 Pine Ln,,,CA,95814\r\n"
    "r-state,state@example.com,3 Pine Ln,,Somewhere,ZZ,95814\r\n"
    "r-zip,zip@example.com,3 Pine Ln,,Boise,ID,ABCDE\r\n"
    ",noref@example.com,3 Pine Ln,,Boise,ID,83702\r\n"
    "r-wide,wide@example.com,3 Pine Ln,,Boise,ID,83702,extra\r\n"
    'r-quote,quote@example.com,"3 Pine" Ln,,Boise,ID,83702\r\n'
    "r-good,dup@example.com,5 Elm St,,Denver,CO,80202\r\n"
    "r-unmatched,unmatched@example.com,,,,,\r\n"
    "r-ctl,ctl@example.com,3 Pine\x07Ln,,Boise,ID,83702\r\n"
    "\r\n"
    "r-last,last@example.com,77 Lake Dr,,Denver,CO,80202\r\n"
)


@respx.mock
def test_malformed_rows_are_skipped_counted_and_logged_without_values(
    live: FaradayEnricher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    respx.get(f"{BASE}/targets/t1").mock(
        return_value=httpx.Response(200, json={"id": "t1", "status": "ready"})
    )
    respx.get(f"{BASE}/targets/t1/download.csv").mock(
        return_value=httpx.Response(200, content=("\ufeff" + EXPORT).encode())
    )
    result = live.poll("t1")
    assert result.state is BatchState.READY
    assert result.matches == (
        AppendedAddress("r-good", "12 Main St", "Apt 4", "Sacramento", "CA", "95814", "US"),
        AppendedAddress("r-zip4", "1 Elm Ave", None, "Austin", "TX", "78701-1234", "US"),
        AppendedAddress("r-zero", "9 Oak Rd", None, "Hartford", "CT", "06103", "US"),
        AppendedAddress("r-last", "77 Lake Dr", None, "Denver", "CO", "80202", "US"),
    )
    assert result.skipped == 8
    assert "@example.com" not in caplog.text and "Pine" not in caplog.text
    for reason in ("without city", "no US state", "no US ZIP", "no reference", "8 fields"):
        assert reason in caplog.text
    assert "repeats a reference" in caplog.text and "unreadable" in caplog.text


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"name,city\r\nx,y\r\n", "no column for reference, line1, state, postcode"),
        (b"reference,city\xff\r\n", "not UTF-8"),
    ],
)
def test_an_export_without_our_columns_is_malformed(content: bytes, match: str) -> None:
    with pytest.raises(MalformedResponse, match=match):
        read_matches(content, where="test")


def test_an_empty_export_has_no_matches() -> None:
    assert read_matches(b"", where="test") == ((), 0)
    header = b"reference,house_number_and_street,city,state,postcode\r\n"
    assert read_matches(header, where="test") == ((), 0)
