"""A failing test does not take the next Dagster instance tests down with it.

``failure_then_instance.py`` runs in a child pytest (one process, no xdist): a test fails
while holding a Dagster instance, then further tests create instances and run a job. The
child must end as a run with one failure does (exit code 1, the other tests passed), never
killed by a signal, and the failed test's objects must be gone before the next test starts
(``pytest_runtest_protocol`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD = "tests/dagster/failure_then_instance.py"


@pytest.mark.slow
def test_a_failed_test_followed_by_dagster_instance_tests_ends_as_a_normal_failure(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--basetemp={tmp_path / 'child'}",
            CHILD,
        ],
        cwd=ROOT,
        env={**os.environ, "MAIL_PIPELINE_FAILURE_CHILD": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode != -signal.SIGSEGV, f"the child segfaulted:\n{output}"
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("1 failed, 2 passed"), output
    assert f"FAILED {CHILD}::test_fails_holding_an_instance" in result.stdout
