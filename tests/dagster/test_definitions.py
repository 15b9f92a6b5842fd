"""The code location loads, validates, and touches nothing while loading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mail_pipeline.definitions import build_definitions, defs
from mail_pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("environment", ["local", "test", "production"])
def test_definitions_load_and_validate_without_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("MAIL_PIPELINE_ENV", environment)
    monkeypatch.setenv("MAIL_PIPELINE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MAIL_PIPELINE_DATABASE_URL", raising=False)
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    assert not data_dir.exists(), "loading Definitions must not create files"
    assert "database" in (loaded.resources or {})


def test_demo_job_exists_only_outside_production(tmp_path: Path) -> None:
    local = build_definitions(load_settings({"MAIL_PIPELINE_DATA_DIR": str(tmp_path)}))
    prod = build_definitions(load_settings({"MAIL_PIPELINE_ENV": "production"}))
    assert local.resolve_job_def("demo_data_job").name == "demo_data_job"
    assert not any(job.name == "demo_data_job" for job in prod.jobs or [])


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MAIL_PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mail_pipeline" in result.stdout + result.stderr
