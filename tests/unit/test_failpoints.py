"""Crash points: off without the variable, one-shot SIGKILL when armed, every one placed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mail_pipeline import failpoints
from mail_pipeline.failpoints import FAILPOINTS_VAR, POINTS, arm, disarm, failpoint, hits

PACKAGE = Path(failpoints.__file__).parent

CALLER = """
import sys
from mail_pipeline.failpoints import failpoint
print("before", flush=True)
failpoint(sys.argv[1])
print("after", flush=True)
"""


def _run(point: str, folder: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != FAILPOINTS_VAR}
    if folder is not None:
        env[FAILPOINTS_VAR] = str(folder)
    return subprocess.run(
        [sys.executable, "-c", CALLER, point],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_armed_point_kills_the_first_process_that_reaches_it_and_only_that_one(
    tmp_path: Path,
) -> None:
    arm(tmp_path, "mailing.printed")

    first = _run("mailing.printed", tmp_path)
    second = _run("mailing.printed", tmp_path)

    assert first.returncode == -signal.SIGKILL
    assert first.stdout.split() == ["before"]
    assert second.returncode == 0, "the point is one-shot: the next process passes"
    assert second.stdout.split() == ["before", "after"]
    [(pid, _at)] = hits(tmp_path, "mailing.printed")
    assert pid > 0
    assert not (tmp_path / "mailing.printed").exists()


def test_points_do_nothing_without_the_variable_or_when_another_point_is_armed(
    tmp_path: Path,
) -> None:
    arm(tmp_path, "mailing.printed")

    assert _run("mailing.printed", None).returncode == 0
    assert _run("status.applied", tmp_path).returncode == 0
    assert (tmp_path / "mailing.printed").exists()
    assert hits(tmp_path, "status.applied") == []


def test_in_process_an_unarmed_point_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAILPOINTS_VAR, str(tmp_path))
    failpoint("mailing.printed")  # not armed: this process survives
    monkeypatch.delenv(FAILPOINTS_VAR)
    arm(tmp_path, "mailing.printed")
    failpoint("mailing.printed")  # armed, but the variable is unset: production
    assert (tmp_path / "mailing.printed").exists()


def test_disarm_removes_what_no_process_reached(tmp_path: Path) -> None:
    arm(tmp_path, "sync.locked")
    arm(tmp_path, "status.applying")
    disarm(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_arming_an_unknown_point_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown failpoint 'mailing\.typo'"):
        arm(tmp_path, "mailing.typo")


def test_every_listed_point_is_placed_in_the_code_exactly_once() -> None:
    placed: dict[str, int] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "failpoints.py":
            continue
        for name in re.findall(r'failpoint\("([^"]+)"\)', path.read_text()):
            placed[name] = placed.get(name, 0) + 1
    assert placed == dict.fromkeys(POINTS, 1)
