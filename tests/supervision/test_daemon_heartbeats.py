"""Counting live daemons from their heartbeats.

Dagster keeps one heartbeat row per daemon type, which every daemon overwrites: two daemons
show as a type's row changing hands back and forth, a restart as one hand-over. The rules are
tested on sequences of writes, then on an instance's real heartbeat storage written as daemon
threads write it (``DaemonHeartbeat``, ``add_daemon_heartbeat``), with a heartbeat interval
shortened from 30 s to a fraction of a second; ``test_real_daemon.py`` watches a real one.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._daemon.types import DaemonHeartbeat  # what daemon threads write

from mail_pipeline.services.daemon_heartbeats import (
    STALE_AFTER,
    DaemonReport,
    LastHeartbeat,
    Verdict,
    Write,
    judge,
    watch,
)
from tests.supervision.conftest import BIN, STARTUP, environment

TYPES = ("SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR")


def _writes(*seen_ids: tuple[int, str, str]) -> list[Write]:
    return [
        Write(seen, daemon_type, daemon_id, float(seen))
        for seen, daemon_type, daemon_id in seen_ids
    ]


@pytest.mark.parametrize(
    ("writes", "verdict", "writers"),
    [
        ([], Verdict.NONE_ALIVE, ()),
        (
            _writes((1, "SENSOR", "a"), (3, "SCHEDULER", "a"), (31, "SENSOR", "a")),
            Verdict.ONE_ALIVE,
            ("a",),
        ),
        # b overwrote a's rows, then a wrote again: both run.
        (
            _writes(
                (1, "SENSOR", "a"), (12, "SENSOR", "b"), (31, "SENSOR", "a"), (42, "SENSOR", "b")
            ),
            Verdict.SEVERAL_ALIVE,
            ("a", "b"),
        ),
        # Seen once only, but between two writes of the other one: both run.
        (
            _writes((1, "SENSOR", "b"), (20, "SCHEDULER", "a"), (31, "SENSOR", "b")),
            Verdict.SEVERAL_ALIVE,
            ("a", "b"),
        ),
        # A restart: every write of a before the first of b, even within one read.
        (
            _writes(
                (1, "SENSOR", "a"), (5, "SCHEDULER", "a"), (5, "SENSOR", "b"), (9, "SCHEDULER", "b")
            ),
            Verdict.ONE_ALIVE,
            ("a", "b"),
        ),
    ],
)
def test_judge(writes: list[Write], verdict: Verdict, writers: tuple[str, ...]) -> None:
    report = judge(writes, 65)
    assert report.verdict is verdict
    assert report.writers == writers
    assert (
        report.exit_status
        == {Verdict.ONE_ALIVE: 0, Verdict.NONE_ALIVE: 1, Verdict.SEVERAL_ALIVE: 3}[verdict]
    )


def test_judge_names_required_types_without_recent_heartbeat() -> None:
    last = [LastHeartbeat("SENSOR", "a", 3), LastHeartbeat("BACKFILL", "a", STALE_AFTER + 60)]
    report = judge(
        _writes((1, "SENSOR", "a")), 65, last=last, required_types=["SENSOR", "BACKFILL", "ASSET"]
    )
    assert report.quiet_types == ("BACKFILL", "ASSET")
    assert "warning: no recent heartbeat for BACKFILL, ASSET" in "\n".join(report.lines())


@dataclass(frozen=True)
class Beat:
    timestamp: float
    daemon_type: str
    daemon_id: str | None


def test_watch_counts_changed_rows_only() -> None:
    """The rows as first read are old news; a row counts when it changes."""
    reads: list[Mapping[str, Beat]] = [
        {"SENSOR": Beat(1.0, "SENSOR", "old")},
        {"SENSOR": Beat(1.0, "SENSOR", "old")},
        {"SENSOR": Beat(5.0, "SENSOR", "new")},
        {"SENSOR": Beat(5.0, "SENSOR", "new"), "SCHEDULER": Beat(6.0, "SCHEDULER", "new")},
    ]
    now = [0.0]
    report = watch(
        lambda: reads.pop(0),
        window=3,
        poll=1,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert report.verdict is Verdict.ONE_ALIVE
    assert report.writers == ("new",)
    assert [(w.seen, w.daemon_type) for w in report.writes] == [(2, "SENSOR"), (3, "SCHEDULER")]


@contextmanager
def _daemons(
    home: Path,
    plan: Mapping[str, tuple[float, float]],
    interval: float,
    go: threading.Event | None = None,
) -> Iterator[None]:
    """Daemons writing heartbeats of every type in ``TYPES`` each ``interval``, as Dagster's
    threads do: ``plan`` gives each daemon id its (start, stop) in seconds from ``go`` (from
    now without one), and daemons are spread over the interval. One thread writes for all."""
    stop = threading.Event()
    instance = dg.DagsterInstance.from_config(str(home))

    def write() -> None:
        while go is not None and not go.wait(0.05):
            if stop.is_set():
                return
        begin = time.monotonic()
        spread = interval / max(len(plan), 1)
        while not stop.is_set():
            for n, (daemon_id, (start, end)) in enumerate(plan.items()):
                stop.wait(spread if n else 0)
                elapsed = time.monotonic() - begin
                if start <= elapsed < end:
                    for daemon_type in TYPES:
                        instance.add_daemon_heartbeat(
                            DaemonHeartbeat(time.time(), daemon_type, daemon_id)
                        )
            stop.wait(max(0.0, interval - spread * (len(plan) - 1)))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()
        instance.dispose()


def _watch(home: Path, window: float, go: threading.Event | None = None) -> DaemonReport:
    """Watch the heartbeats; ``go`` is set once the first read is done (the plan starts)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:

        def read() -> Mapping[str, object]:
            heartbeats = instance.get_daemon_heartbeats()
            if go is not None:
                go.set()
            return heartbeats

        return watch(
            read,  # type: ignore[arg-type]
            required_types=instance.get_required_daemon_types(),
            window=window,
            poll=0.05,
        )


FOREVER = 1e9


def test_one_daemon_writing_is_one_alive(dagster_home: Path) -> None:
    with _daemons(dagster_home, {"a" * 8: (0, FOREVER)}, interval=0.3):
        report = _watch(dagster_home, window=1.5)
    assert report.verdict is Verdict.ONE_ALIVE
    assert report.lines()[0].startswith("one dagster-daemon is alive: aaaaaaaa wrote")


def test_two_daemons_writing_are_several_alive(dagster_home: Path) -> None:
    with _daemons(dagster_home, {"a" * 8: (0, FOREVER), "b" * 8: (0, FOREVER)}, interval=0.3):
        report = _watch(dagster_home, window=3)
    assert report.verdict is Verdict.SEVERAL_ALIVE
    assert report.writers == ("a" * 8, "b" * 8)
    text = "\n".join(report.lines())
    assert "2 dagster-daemons are alive for this instance" in text
    assert "aaaaaaaa and bbbbbbbb, both writing QUEUED_RUN_COORDINATOR, SCHEDULER, SENSOR" in text


def test_a_restart_during_the_watch_is_one_alive(dagster_home: Path) -> None:
    go = threading.Event()
    with _daemons(dagster_home, {"old": (0, 0.6), "new": (0.9, FOREVER)}, 0.2, go):
        report = _watch(dagster_home, window=1.8, go=go)
    assert report.verdict is Verdict.ONE_ALIVE
    assert report.writers[-1] == "new"
    assert "it replaced old during the check" in "\n".join(report.lines())


def test_heartbeats_that_stopped_are_no_daemon_alive(dagster_home: Path) -> None:
    with _daemons(dagster_home, {"gone": (0, 0.3)}, interval=0.1):
        time.sleep(0.5)
    report = _watch(dagster_home, window=0.5)
    assert report.verdict is Verdict.NONE_ALIVE
    assert "the last one:" in "\n".join(report.lines()) and "daemon gone" in "\n".join(
        report.lines()
    )


def test_an_instance_without_heartbeats_has_no_daemon_alive(dagster_home: Path) -> None:
    report = _watch(dagster_home, window=0.2)
    assert report.verdict is Verdict.NONE_ALIVE
    assert report.lines() == [
        "no dagster-daemon is alive: no heartbeat was written in 0.2 s",
        "this instance has no daemon heartbeat at all",
    ]


def test_daemon_check_command_exits_3_on_two_daemons(dagster_home: Path) -> None:
    with _daemons(dagster_home, {"a" * 8: (0, FOREVER), "b" * 8: (0, FOREVER)}, interval=0.3):
        done = subprocess.run(
            [str(BIN / "mail-pipeline"), "daemon-check", "--window", "2", "--poll", "0.05"],
            env=environment(dagster_home),
            capture_output=True,
            text=True,
            timeout=STARTUP,
        )
    assert done.returncode == 3, done.stderr
    assert "2 dagster-daemons are alive for this instance" in done.stderr
    assert "only one may run" in done.stderr
