"""The vendor circuit breaker (``integrations.circuit``) and how ``HttpApi`` passes it: opens
after consecutive failed calls, fails fast with a readable retryable error, lets one trial
through after the cool-off, ignores refusals, stops retry loops when it opens, opens at once
on a vendor's long wait, is shared per account and safe across threads."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from mail_pipeline.integrations.circuit import (
    CircuitBreaker,
    CircuitOpen,
    CircuitPolicy,
    CircuitState,
    Permit,
    breaker_for,
    isolated_registry,
    not_called,
)
from mail_pipeline.integrations.errors import (
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import HttpApi, RetryPolicy

#: Callers do not wait for a trial here (``trial_wait_seconds=0``), except where a test says.
POLICY = CircuitPolicy(
    failure_threshold=3,
    cool_off_seconds=30.0,
    trial_timeout_seconds=60.0,
    trial_wait_seconds=0.0,
)
#: 2026-11-30 14:00:00 UTC on the wall clock.
WALL = datetime(2026, 11, 30, 14, 0, tzinfo=UTC).timestamp()
DOWN = VendorUnavailable("lob", "service temporarily unavailable", status_code=503)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL + (self.now - 1000.0)


def breaker(clock: Clock, policy: CircuitPolicy = POLICY) -> CircuitBreaker:
    return CircuitBreaker("lob", policy, clock=clock, wall_clock=clock.wall)


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.failed(b.admit(), DOWN)


def test_it_opens_after_the_threshold_of_consecutive_failures_and_says_so() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    assert b.state is CircuitState.CLOSED and b.consecutive_failures == 2
    fail(b)

    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as refused:
        b.admit()
    error = refused.value
    assert error.retryable and isinstance(error, VendorUnavailable)
    assert error.vendor == "lob" and error.retry_after == pytest.approx(30.0)
    assert str(error) == (
        "lob: not called: circuit open after 3 consecutive failures, retrying after "
        "14:00:30 UTC; last failure: service temporarily unavailable (HTTP 503)"
    )
    assert not_called(error)


def test_an_answer_in_between_resets_the_count() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    b.succeeded(b.admit())
    fail(b, 2)
    assert b.state is CircuitState.CLOSED and b.consecutive_failures == 2


def test_after_the_cool_off_one_trial_goes_out_and_its_answer_closes_the_circuit() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 29.9
    with pytest.raises(CircuitOpen):
        b.admit()
    clock.now += 0.2
    assert b.state is CircuitState.HALF_OPEN

    trial = b.admit()
    assert trial.trial
    with pytest.raises(CircuitOpen, match=r"a trial call is under way"):
        b.admit()  # only one trial at a time
    b.succeeded(trial)

    assert b.state is CircuitState.CLOSED and b.consecutive_failures == 0
    assert not b.admit().trial


@pytest.mark.parametrize("trial_answered", [True, False])
def test_callers_arriving_while_the_trial_is_out_wait_for_its_outcome(
    trial_answered: bool,
) -> None:
    clock = Clock()
    b = breaker(clock, replace(POLICY, trial_wait_seconds=60.0))
    fail(b, 3)
    clock.now += 31
    trial = b.admit()
    outcomes: list[object] = []
    waiting = threading.Event()

    def caller() -> None:
        waiting.set()
        try:
            outcomes.append(b.admit())
        except CircuitOpen as exc:
            outcomes.append(exc)

    others = [threading.Thread(target=caller) for _ in range(3)]
    for t in others:
        t.start()
    waiting.wait(timeout=30)
    time.sleep(0.05)  # let them reach the wait; the outcome is the same if they come later
    assert outcomes == [], "nobody goes out or gives up while the trial is out"
    if trial_answered:
        b.succeeded(trial)
    else:
        b.failed(trial, DOWN)
    for t in others:
        t.join(timeout=30)

    assert len(outcomes) == 3
    if trial_answered:
        assert all(o == Permit() for o in outcomes), "the vendor is back: everyone goes"
    else:
        assert all(isinstance(o, CircuitOpen) for o in outcomes), "still down: all fail fast"


def test_a_caller_waits_for_a_trial_no_longer_than_the_policy_says() -> None:
    clock = Clock()
    b = breaker(clock, replace(POLICY, trial_wait_seconds=0.2))
    fail(b, 3)
    clock.now += 31
    b.admit()
    started = time.monotonic()
    with pytest.raises(CircuitOpen, match="a trial call is under way"):
        b.admit()
    assert time.monotonic() - started >= 0.2


def test_a_failed_trial_opens_it_for_another_cool_off() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 31
    trial = b.admit()
    b.failed(trial, VendorUnavailable("lob", "still down", status_code=502))

    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen, match=r"after the trial call failed, .*last failure: still"):
        b.admit()
    clock.now += 31
    assert b.admit().trial


def test_an_abandoned_or_silent_trial_lets_the_next_caller_try() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 31
    b.abandoned(b.admit())
    assert b.admit().trial  # abandoned: the next caller is the trial

    with pytest.raises(CircuitOpen):
        b.admit()
    clock.now += POLICY.trial_timeout_seconds
    assert b.admit().trial  # the silent one is given up


def test_a_vendor_asking_for_a_long_wait_opens_it_at_once_for_that_long() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failed(b.admit(), RateLimited("cloudflare_images", "locked out"), hold_for=300.0)

    with pytest.raises(CircuitOpen) as refused:
        b.admit()
    assert refused.value.retry_after == pytest.approx(300.0)
    assert "the vendor asked to wait 300 s" in str(refused.value)
    clock.now += 299
    with pytest.raises(CircuitOpen):
        b.admit()

    capped = breaker(clock)
    capped.failed(capped.admit(), DOWN, hold_for=10_000.0)
    with pytest.raises(CircuitOpen) as refused:
        capped.admit()
    assert refused.value.retry_after == pytest.approx(POLICY.max_open_seconds)


def test_failures_from_many_threads_open_it_once_and_count_every_one() -> None:
    clock = Clock()
    b = breaker(clock, CircuitPolicy(failure_threshold=50))
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(10):
            with contextlib.suppress(CircuitOpen):
                b.failed(b.admit(), DOWN)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert b.state is CircuitState.OPEN
    assert b.consecutive_failures == 50  # the rest were refused without a call


def test_a_policy_refuses_values_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="at least one failed call"):
        CircuitPolicy(failure_threshold=0)
    with pytest.raises(ValueError, match="positive"):
        CircuitPolicy(cool_off_seconds=0)
    with pytest.raises(ValueError, match="max_open_seconds"):
        CircuitPolicy(cool_off_seconds=60, max_open_seconds=30)
    with pytest.raises(ValueError, match="negative"):
        CircuitPolicy(trial_wait_seconds=-1)


# -- the registry ---------------------------------------------------------------------------


def test_one_breaker_per_account_per_transport() -> None:
    sandbox_a, sandbox_b = httpx.MockTransport(_ok), httpx.MockTransport(_ok)
    with isolated_registry():
        lob = breaker_for("lob", "https://api.lob.com/v1", {"Lob-Version": "x"}, ("test_k", ""))
        assert lob is breaker_for("lob", "https://api.lob.com/v1/", {}, ("test_k", ""))
        assert lob is not breaker_for("lob", "https://api.lob.com/v1", {}, ("test_other", ""))
        bearer = {"Authorization": "Bearer a"}
        assert breaker_for("klaviyo", "https://a.klaviyo.com", bearer) is not breaker_for(
            "klaviyo", "https://a.klaviyo.com", {"Authorization": "Bearer b"}
        )
        on_a = breaker_for("lob", "https://api.lob.com/v1", {}, ("test_k", ""), sandbox_a)
        assert on_a is not lob
        assert on_a is breaker_for("lob", "https://api.lob.com/v1", {}, ("test_k", ""), sandbox_a)
        assert on_a is not breaker_for(
            "lob", "https://api.lob.com/v1", {}, ("test_k", ""), sandbox_b
        )
    with isolated_registry():
        assert breaker_for("lob", "https://api.lob.com/v1", {}, ("test_k", "")) is not lob


def test_the_clients_of_one_account_share_a_breaker() -> None:
    transport = httpx.MockTransport(_ok)
    with isolated_registry():
        first = _api(transport)
        second = HttpApi(
            vendor="lob",
            base_url="https://api.lob.com/v1",
            headers={"Lob-Version": "2020-02-11"},
            auth=("test_key", ""),
            transport=transport,
        )
        other_key = HttpApi(
            vendor="lob", base_url="https://api.lob.com/v1", auth=("k2", ""), transport=transport
        )
        assert first.breaker is second.breaker
        assert first.breaker is not other_key.breaker


# -- HttpApi with its breaker ---------------------------------------------------------------


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


def _api(
    transport: httpx.BaseTransport,
    *,
    circuit: CircuitBreaker | None = None,
    retry: RetryPolicy | None = None,
) -> HttpApi:
    return HttpApi(
        vendor="lob",
        base_url="https://api.lob.com/v1",
        auth=("test_key", ""),
        transport=transport,
        retry=retry or RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0),
        sleep=lambda _s: None,
        circuit=circuit,
    )


class Vendor:
    """A vendor answering ``answer(n)`` to its n-th request (1-based)."""

    def __init__(self, answer: Callable[[int], httpx.Response]) -> None:
        self.answer = answer
        self.calls = 0
        self._lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls += 1
            n = self.calls
        return self.answer(n)


def test_a_call_fails_fast_without_a_request_while_the_circuit_is_open() -> None:
    clock = Clock()
    vendor = Vendor(lambda _n: httpx.Response(503, text="down"))
    api = _api(httpx.MockTransport(vendor.handle), circuit=breaker(clock))

    for _ in range(3):
        with pytest.raises(VendorUnavailable) as failed:
            api.request("GET", "/postcards")
        assert not isinstance(failed.value, CircuitOpen)
    assert vendor.calls == 9  # 3 calls x 3 attempts

    with pytest.raises(CircuitOpen):
        api.request("GET", "/postcards")
    assert vendor.calls == 9


def test_the_trial_makes_one_attempt_and_an_answer_closes_the_circuit() -> None:
    clock = Clock()
    answers = {"status": 503}
    vendor = Vendor(lambda _n: httpx.Response(answers["status"], json={}))
    b = breaker(clock)
    api = _api(httpx.MockTransport(vendor.handle), circuit=b)
    for _ in range(3):
        with pytest.raises(VendorUnavailable):
            api.request("GET", "/postcards")
    clock.now += 31

    with pytest.raises(VendorUnavailable) as trial:
        api.request("GET", "/postcards")
    assert not isinstance(trial.value, CircuitOpen) and vendor.calls == 10  # one attempt
    assert b.state is CircuitState.OPEN

    clock.now += 31
    answers["status"] = 200
    assert api.request("GET", "/postcards").status_code == 200
    assert b.state is CircuitState.CLOSED and vendor.calls == 11


def test_a_refusal_proves_the_vendor_up_and_never_opens_the_circuit() -> None:
    clock = Clock()
    vendor = Vendor(lambda _n: httpx.Response(422, text="address_line1 is required"))
    b = breaker(clock)
    api = _api(httpx.MockTransport(vendor.handle), circuit=b)
    for _ in range(10):
        with pytest.raises(RequestRejected):
            api.request("POST", "/postcards")
    assert b.state is CircuitState.CLOSED and vendor.calls == 10

    fail(b, 2)
    with pytest.raises(RequestRejected):
        api.request("POST", "/postcards")
    assert b.consecutive_failures == 0


def test_a_call_in_its_retry_loop_stops_once_another_call_opened_the_circuit() -> None:
    clock = Clock()
    b = breaker(clock)

    def answer(n: int) -> httpx.Response:
        if n == 1:
            fail(b, 3)  # meanwhile, other calls of the run exhausted their budgets
        return httpx.Response(503, json={})

    vendor = Vendor(answer)
    api = _api(httpx.MockTransport(vendor.handle), circuit=b)
    with pytest.raises(CircuitOpen):
        api.request("GET", "/postcards")
    assert vendor.calls == 1  # not the 3 attempts of its budget


def test_a_wait_longer_than_a_call_may_wait_opens_the_circuit_at_once() -> None:
    clock = Clock()
    b = breaker(clock)
    vendor = Vendor(lambda _n: httpx.Response(429, headers={"retry-after": "300"}, json={}))
    api = _api(httpx.MockTransport(vendor.handle), circuit=b)

    with pytest.raises(RateLimited) as limited:
        api.request("GET", "/postcards")
    assert limited.value.retry_after == pytest.approx(300, abs=1)
    with pytest.raises(CircuitOpen, match="asked to wait 300 s"):
        api.request("GET", "/postcards")
    assert vendor.calls == 1


def test_an_unexpected_error_in_a_trial_hands_the_trial_on() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 31

    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in a transport")

    with pytest.raises(RuntimeError):
        _api(httpx.MockTransport(explode), circuit=b).request("GET", "/postcards")
    assert b.admit().trial


class Unprintable(str):
    """A credential as configuration hands it over before it is resolved: printing refuses."""

    def __str__(self) -> str:
        raise RuntimeError("resolve me first")


def test_a_credential_is_keyed_without_printing_it_and_only_when_a_call_is_made() -> None:
    api = HttpApi(vendor="lob", base_url="https://api.lob.com/v1", auth=(Unprintable("k1"), ""))
    assert api._circuit_key is None, "building a client works out nothing"
    with isolated_registry():
        first = breaker_for("lob", "https://api.lob.com/v1", {}, (Unprintable("k1"), ""))
        assert first is breaker_for("lob", "https://api.lob.com/v1", {}, ("k1", ""))
        assert first is not breaker_for(
            "lob", "https://api.lob.com/v1", {}, (Unprintable("k2"), "")
        )
        assert api.breaker is first


def test_a_trial_met_with_a_long_wait_keeps_the_circuit_open_for_that_wait() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 31
    vendor = Vendor(lambda _n: httpx.Response(429, headers={"retry-after": "240"}, json={}))
    api = _api(httpx.MockTransport(vendor.handle), circuit=b)

    with pytest.raises(RateLimited):
        api.request("GET", "/postcards")  # the trial
    clock.now += 200  # past the cool-off, not past the vendor's wait
    with pytest.raises(CircuitOpen, match="asked to wait 240 s"):
        api.request("GET", "/postcards")
    assert vendor.calls == 1
