"""A failed Dagster test followed by other Dagster instance tests, in one process.

Not collected by the suite (the name does not match ``test_*.py``):
``test_failure_isolation.py`` runs it in a child pytest with ``MAIL_PIPELINE_FAILURE_CHILD=1``
and checks that the child ends like any run with one failed test. Run by hand, without
that variable, its tests skip.

1. ``test_fails_holding_an_instance`` fails on purpose while its Dagster instance (closed by
   its fixture at teardown) and a marker object are locals of its frame, which the failure's
   traceback references;
2. ``test_the_failed_tests_objects_are_gone`` checks that they were released before the
   next test's fixtures run (which create engines and Dagster storages);
3. ``test_a_dagster_instance_runs_a_job`` creates an instance and runs a job on it, as
   ``test_full_flow`` does after ``test_sensors``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator

import dagster as dg
import pytest


class Marker:
    """An object only the failed test's frame refers to."""


_markers: list[weakref.ref[Marker]] = []


@pytest.fixture(autouse=True)
def _child_only() -> None:
    if os.environ.get("MAIL_PIPELINE_FAILURE_CHILD") != "1":
        pytest.skip("run by test_failure_isolation.py in a child pytest")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def markers_alive_at_setup() -> int:
    return sum(1 for ref in _markers if ref() is not None)


@dg.op
def count_to_three() -> int:
    return 3


@dg.job
def small_job() -> None:
    count_to_three()


def test_fails_holding_an_instance(instance: dg.DagsterInstance) -> None:
    marker = Marker()
    _markers.append(weakref.ref(marker))
    result = small_job.execute_in_process(instance=instance)
    assert result.output_for_node("count_to_three") == 4, "fails on purpose"


def test_the_failed_tests_objects_are_gone(markers_alive_at_setup: int) -> None:
    assert _markers, "the failing test ran first"
    assert markers_alive_at_setup == 0


def test_a_dagster_instance_runs_a_job(instance: dg.DagsterInstance) -> None:
    for _ in range(3):
        result = small_job.execute_in_process(instance=instance)
        assert result.output_for_node("count_to_three") == 3
