"""The mailing runs-in-flight limit is one number: the sensor, both Dagster instances' run
queues and the printers' fallback share of their rate limits (without the shared database)
agree on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter
from mail_pipeline.limits import MAILING_RUNS_IN_FLIGHT, PROOFING_RUNS_IN_FLIGHT
from mail_pipeline.resources.printing import PUBLISHED_RATE_LIMITS, SandboxPrinters

ROOT = Path(__file__).resolve().parents[2]


def _stage_limits(path: Path) -> dict[str, int]:
    config = yaml.safe_load(path.read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    return {
        entry["value"]: entry["limit"]
        for entry in limits
        if entry["key"] == "mail_pipeline/stage" and isinstance(entry.get("value"), str)
    }


@pytest.mark.parametrize("instance", ["dagster.yaml", "deploy/dagster.production.yaml"])
def test_the_run_queue_caps_mailing_runs_at_the_shared_limit(instance: str) -> None:
    assert _stage_limits(ROOT / instance)["mailing"] == MAILING_RUNS_IN_FLIGHT


def test_the_local_run_queue_caps_proofing_runs_at_the_sensors_limit() -> None:
    assert _stage_limits(ROOT / "dagster.yaml")["proofing"] == PROOFING_RUNS_IN_FLIGHT
    # production may queue more (runs by hand, recovery), never fewer than the sensor starts
    production = _stage_limits(ROOT / "deploy/dagster.production.yaml")["proofing"]
    assert production >= PROOFING_RUNS_IN_FLIGHT


def test_printers_without_the_shared_database_split_their_limit_among_that_many_runs(
    tmp_path: Path,
) -> None:
    printers = SandboxPrinters(sandbox_path=str(tmp_path / "s.sqlite"), rate_limits="")
    for name, printer in printers.printers().items():
        calls = PUBLISHED_RATE_LIMITS[name][0]
        limiter = printer.limiter
        assert isinstance(limiter, SlidingWindowLimiter)
        assert limiter.capacity == max(1, int(calls * 0.95 / MAILING_RUNS_IN_FLIGHT))


@pytest.mark.parametrize("instance", ["dagster.yaml", "deploy/dagster.production.yaml"])
def test_lifecycle_runs_go_one_at_a_time(instance: str) -> None:
    """A night's runs caught up together must not do their steps side by side."""
    from mail_pipeline.jobs.lifecycle import STAGE

    assert _stage_limits(ROOT / instance)[STAGE] == 1
