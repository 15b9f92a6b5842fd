"""supervisord's health-check listener: which programs it checks, when it restarts one, and
its side of supervisord's event listener protocol."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mail_pipeline.services.supervisor_health import (
    CheckResult,
    HealthListener,
    ProgramCheck,
    parse_check,
    run_check,
)


class FakeSupervisor:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.restarted: list[str] = []

    def state(self, program: str) -> str:
        return self.states[program]

    def restart(self, program: str) -> str:
        self.restarted.append(program)
        return "restarted"


class Checks:
    """Check results by program, and the checks that ran."""

    def __init__(self, results: dict[str, list[bool]]) -> None:
        self.results = results
        self.ran: list[str] = []

    def __call__(self, check: Sequence[str], timeout: float) -> CheckResult:
        program = check[0]
        self.ran.append(program)
        return CheckResult(self.results[program].pop(0), f"{program} says no")


def _listener(
    states: dict[str, str], results: dict[str, list[bool]]
) -> tuple[HealthListener, FakeSupervisor, Checks, list[str]]:
    supervisor, checks, messages = FakeSupervisor(states), Checks(results), []
    listener = HealthListener(
        [ProgramCheck(name, [name]) for name in states],
        supervisor,
        failures=2,
        run=checks,
        report=messages.append,
    )
    return listener, supervisor, checks, messages


def test_a_program_is_restarted_after_two_failed_checks_in_a_row() -> None:
    listener, supervisor, _, messages = _listener(
        {"webserver": "RUNNING"}, {"webserver": [False, True, False, False, False]}
    )
    assert [listener.tick() for _ in range(4)] == [[], [], [], ["webserver"]]
    assert supervisor.restarted == ["webserver"]
    assert messages[-2:] == [
        "webserver: health check failed (2 of 2 before a restart): webserver says no",
        "webserver: restarted",
    ]
    assert listener.tick() == []  # counting starts again after a restart


def test_only_running_programs_are_checked() -> None:
    listener, supervisor, checks, _ = _listener(
        {"code-server": "STARTING", "daemon": "BACKOFF", "webserver": "RUNNING"},
        {"webserver": [True, True]},
    )
    listener.tick()
    listener.tick()
    assert checks.ran == ["webserver", "webserver"]
    assert supervisor.restarted == []


def test_the_listener_speaks_supervisords_protocol() -> None:
    listener, supervisor, checks, _ = _listener({"daemon": "RUNNING"}, {"daemon": [False, False]})
    tick = b"when:1700000000"
    state = b"processname:daemon groupname:daemon from_state:STARTING pid:1"
    stdin = io.BytesIO(
        b"ver:3.0 server:supervisor serial:1 pool:health poolserial:1 eventname:TICK_60 len:%d\n%s"
        b"ver:3.0 server:supervisor serial:2 pool:health poolserial:2 "
        b"eventname:PROCESS_STATE_RUNNING len:%d\n%s"
        b"ver:3.0 server:supervisor serial:3 pool:health poolserial:3 eventname:TICK_60 len:%d\n%s"
        % (len(tick), tick, len(state), state, len(tick), tick)
    )
    stdout = io.BytesIO()
    listener.serve(stdin, stdout)
    assert stdout.getvalue() == b"READY\n" + b"RESULT 2\nOKREADY\n" * 3
    assert checks.ran == ["daemon", "daemon"]  # on ticks only
    assert supervisor.restarted == ["daemon"]


def test_parse_check() -> None:
    assert parse_check("webserver=http://127.0.0.1:3000/server_info") == (
        "webserver",
        "http://127.0.0.1:3000/server_info",
    )
    assert parse_check("daemon = dagster-daemon liveness-check") == (
        "daemon",
        "dagster-daemon liveness-check",
    )
    with pytest.raises(ValueError, match="PROGRAM=CHECK"):
        parse_check("webserver")


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/server_info" else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_run_check_gets_urls(http_server: str) -> None:
    assert run_check([f"{http_server}/server_info"], 5) == CheckResult(True, "HTTP 200")
    failed = run_check([f"{http_server}/other"], 5)
    assert not failed.ok and "HTTP 503" in failed.output
    assert not run_check(["http://127.0.0.1:1/server_info"], 5).ok


def test_run_check_runs_commands() -> None:
    assert run_check([sys.executable, "-c", "print('fine')"], 10) == CheckResult(True, "fine")
    failed = run_check([sys.executable, "-c", "import sys; sys.exit('not serving')"], 10)
    assert failed == CheckResult(False, "not serving")
    slow = run_check([sys.executable, "-c", "import time; time.sleep(5)"], 0.5)
    assert slow == CheckResult(False, "no answer in 0.5 s")
    assert not run_check(["/no/such/check"], 1).ok
