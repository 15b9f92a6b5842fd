"""Health checks under supervisord: restart a program that runs but no longer answers.

supervisord restarts a program that exits (``autorestart``), not one that hangs. This is an
event listener (``[eventlistener:health]`` in ``deploy/supervisord.conf``) subscribed to
``TICK_60``: at each tick it checks every program supervisord reports RUNNING - the
webserver's ``GET /server_info``, the code server's ``dagster api grpc-health-check``,
``dagster-daemon liveness-check`` - and after ``failures`` failed checks in a row it restarts
the program through supervisord's XML-RPC interface. A program that is starting, stopped or
backing off is supervisord's business and is not checked.

A check is a command (it passes when it exits 0 within the timeout) or an ``http(s)://`` URL
(it passes when a GET answers 2xx). supervisord's listener protocol (``READY``, a header
line, a payload, ``RESULT 2\\nOK``) runs over standard input and output, so everything else -
the checks' failures, the restarts - goes to standard error, the listener's log.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    output: str


def run_check(check: Sequence[str], timeout: float) -> CheckResult:
    """Run a check: a URL to GET, or a command to run."""
    if len(check) == 1 and check[0].startswith(("http://", "https://")):
        return _get(check[0], timeout)
    try:
        done = subprocess.run(
            list(check),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return CheckResult(False, f"no answer in {timeout:g} s")
    except OSError as exc:
        return CheckResult(False, str(exc))
    output = " ".join((done.stdout + done.stderr).split())[:300]
    return CheckResult(done.returncode == 0, output or f"exit status {done.returncode}")


def _get(url: str, timeout: float) -> CheckResult:
    # Straight to the program: no proxy from the environment stands in between.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return CheckResult(True, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return CheckResult(False, f"HTTP {exc.code} from {url}")
    except (urllib.error.URLError, OSError) as exc:
        return CheckResult(False, f"{url}: {getattr(exc, 'reason', exc)}")


class Supervisor(Protocol):
    def state(self, program: str) -> str: ...

    def restart(self, program: str) -> str: ...


class SupervisorRPC:
    """supervisord's XML-RPC interface, at ``unix:///path/to/supervisor.sock`` (its
    ``[unix_http_server]``) or ``http://host:port`` (its ``[inet_http_server]``)."""

    def __init__(self, server_url: str, timeout: float = 300.0) -> None:
        # A restart waits for the program to stop (up to its stopwaitsecs) and start again.
        if server_url.startswith("unix://"):
            transport: xmlrpc.client.Transport = _UnixTransport(server_url[7:], timeout)
            endpoint = "http://localhost/RPC2"
        else:
            transport = _TimeoutTransport(timeout)
            endpoint = server_url.rstrip("/") + "/RPC2"
        self.proxy: Any = xmlrpc.client.ServerProxy(endpoint, transport=transport)

    def state(self, program: str) -> str:
        try:
            return str(self.proxy.supervisor.getProcessInfo(program)["statename"])
        except xmlrpc.client.Fault as fault:
            return f"UNKNOWN ({fault.faultString})"
        except OSError as exc:
            return f"UNKNOWN (supervisord does not answer: {exc})"

    def restart(self, program: str) -> str:
        try:
            self.proxy.supervisor.stopProcess(program, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                return f"could not stop it: {fault.faultString}"
        except OSError as exc:
            return f"could not stop it, supervisord does not answer: {exc}"
        try:
            self.proxy.supervisor.startProcess(program, True)
        except xmlrpc.client.Fault as fault:
            return f"could not start it again: {fault.faultString}"
        except OSError as exc:
            return f"could not start it again, supervisord does not answer: {exc}"
        return "restarted"


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.path = path
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.path, self.timeout)


@dataclass
class ProgramCheck:
    program: str
    check: Sequence[str]
    failed: int = 0


def parse_check(spec: str) -> tuple[str, str]:
    """``PROGRAM=CHECK`` (CHECK: a URL, or a command in shell words) as ``(program, check)``."""
    program, separator, check = spec.partition("=")
    if not separator or not program.strip() or not check.strip():
        raise ValueError(f"expected PROGRAM=CHECK, got {spec!r}")
    return program.strip(), check.strip()


class HealthListener:
    def __init__(
        self,
        checks: Sequence[ProgramCheck],
        supervisor: Supervisor,
        *,
        failures: int = 2,
        timeout: float = 30.0,
        run: Callable[[Sequence[str], float], CheckResult] = run_check,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.checks = list(checks)
        self.supervisor = supervisor
        self.failures = failures
        self.timeout = timeout
        self.run = run
        self.report = report or _stderr

    def tick(self) -> list[str]:
        """Check every RUNNING program once; returns the programs restarted."""
        restarted = []
        for check in self.checks:
            if self.supervisor.state(check.program) != "RUNNING":
                check.failed = 0
                continue
            result = self.run(check.check, self.timeout)
            if result.ok:
                check.failed = 0
                continue
            check.failed += 1
            self.report(
                f"{check.program}: health check failed ({check.failed} of {self.failures} "
                f"before a restart): {result.output}"
            )
            if check.failed >= self.failures:
                check.failed = 0
                self.report(f"{check.program}: {self.supervisor.restart(check.program)}")
                restarted.append(check.program)
        return restarted

    def serve(self, stdin: BinaryIO, stdout: BinaryIO) -> None:
        """Answer supervisord's events until standard input closes; checks run on ticks."""
        while True:
            stdout.write(b"READY\n")
            stdout.flush()
            header = stdin.readline()
            if not header:
                return
            fields = dict(field.split(":", 1) for field in header.decode().split() if ":" in field)
            stdin.read(int(fields.get("len", "0")))
            if fields.get("eventname", "").startswith("TICK_"):
                self.tick()
            stdout.write(b"RESULT 2\nOK")
            stdout.flush()


def _stderr(message: str) -> None:
    print(f"health: {message}", file=sys.stderr, flush=True)
