from __future__ import annotations

from pathlib import Path

import dagster as dg

from mail_pipeline.jobs.demo import demo_data_job
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.sandbox import SandboxState


def test_demo_job_seeds_and_reports_counts(db_url: str, tmp_path: Path) -> None:
    resources = {
        "database": Database(url=db_url),
        "sandbox": SandboxState(path=str(tmp_path / "sandbox.sqlite")),
    }
    result = demo_data_job.execute_in_process(
        resources=resources, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    (materialization,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.step_output_data.metadata
    assert metadata["organizations"].value == 2
    assert metadata["campaigns"].value == 5
    assert metadata["sandbox_profiles"].value >= 300
