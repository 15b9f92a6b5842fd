"""The code location loads, validates, and touches nothing while loading; production refuses
to load an unsafe or incomplete configuration, listing every problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mail_pipeline.definitions import (
    DEPLOYMENT_TAG,
    JOBS,
    STAGING_NOTICE,
    build_definitions,
    defs,
    staging_job,
)
from mail_pipeline.resources.billing import StripeBilling
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.resources.notifications import OutboxNotifications, SlackNotifications
from mail_pipeline.resources.printing import LivePrinters
from mail_pipeline.resources.queues import SqsQueues
from mail_pipeline.settings import ProductionConfigError, load_settings
from tests.environments import PRODUCTION, TEST_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _set_environment(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> None:
    for name in {*PRODUCTION, *TEST_SETTINGS, "MAIL_PIPELINE_STAGING"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("environment", ["local", "test", "production"])
def test_definitions_load_and_validate_without_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    data_dir = tmp_path / "data"
    _set_environment(monkeypatch, PRODUCTION if environment == "production" else {})
    monkeypatch.setenv("MAIL_PIPELINE_ENV", environment)
    monkeypatch.setenv("MAIL_PIPELINE_DATA_DIR", str(data_dir))
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    assert not data_dir.exists(), "loading Definitions must not create files"
    assert "database" in (loaded.resources or {})


def test_demo_job_exists_only_outside_production(tmp_path: Path) -> None:
    local = build_definitions(load_settings({"MAIL_PIPELINE_DATA_DIR": str(tmp_path)}))
    prod = build_definitions(load_settings(PRODUCTION))
    assert local.resolve_job_def("demo_data_job").name == "demo_data_job"
    assert not any(job.name == "demo_data_job" for job in prod.jobs or [])


def test_production_refuses_to_load_and_names_every_problem() -> None:
    environ = {**PRODUCTION, **TEST_SETTINGS}
    del environ["STANNP_WEBHOOK_SECRET"], environ["CLOUDFLARE_ACCOUNT_HASH"]
    with pytest.raises(ProductionConfigError) as refused:
        build_definitions(load_settings(environ))
    assert refused.value.problems == [
        "MAIL_PIPELINE_DATABASE_URL is an SQLite database (allowed only with "
        "MAIL_PIPELINE_STAGING=1)",
        "LOB_API_KEY is a test key (allowed only with MAIL_PIPELINE_STAGING=1)",
        "stannp: STANNP_API_KEY is set but STANNP_WEBHOOK_SECRET is not: its status webhooks "
        "could not be verified",
        "MAIL_PIPELINE_PRINTERS_TEST_MODE is on (allowed only with MAIL_PIPELINE_STAGING=1)",
        "STRIPE_API_KEY is a test key (allowed only with MAIL_PIPELINE_STAGING=1)",
        "CLOUDFLARE_ACCOUNT_HASH is not set",
    ]
    assert str(refused.value).startswith(
        "refusing to load the production definitions (MAIL_PIPELINE_ENV=production), 6 problems:"
    )


def test_a_staging_deployment_says_so_on_every_job() -> None:
    staging = build_definitions(
        load_settings({**PRODUCTION, **TEST_SETTINGS, "MAIL_PIPELINE_STAGING": "1"})
    )
    dg.Definitions.validate_loadable(staging)
    repository = staging.get_repository_def()
    for job in repository.get_all_jobs():
        if job.name.startswith("__"):
            continue  # Dagster's implicit asset job (see staging_job)
        assert job.description and job.description.startswith("STAGING deployment")
        assert job.tags[DEPLOYMENT_TAG] == "staging"
        assert job.run_tags[DEPLOYMENT_TAG] == "staging"  # so every run shows it
    for sensor in repository.sensor_defs:
        for job in sensor.jobs if sensor.has_jobs else []:
            assert job.tags[DEPLOYMENT_TAG] == "staging", sensor.name
    for schedule in repository.schedule_defs:
        assert schedule.job.tags[DEPLOYMENT_TAG] == "staging"
    printers = (staging.resources or {})["printers"]
    assert printers.test_mode is True

    live = build_definitions(load_settings(PRODUCTION)).get_repository_def()
    assert all(DEPLOYMENT_TAG not in job.tags for job in live.get_all_jobs())


def test_a_staging_deployment_on_a_sandbox_server_keeps_the_live_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {
        **PRODUCTION,
        **TEST_SETTINGS,
        "MAIL_PIPELINE_STAGING": "1",
        "MAIL_PIPELINE_SANDBOX_URL": "http://127.0.0.1:8700/",
    }
    for name in [n for n in environ if "SLACK" in n or "ALERT_EMAIL" in n]:
        del environ[name]  # its alerts go to the outbox: no channel needed
    staging = build_definitions(load_settings(environ))
    dg.Definitions.validate_loadable(staging)
    resources = staging.resources or {}
    assert isinstance(resources["printers"], LivePrinters)
    assert resources["printers"].api_base_url == "http://127.0.0.1:8700"
    lob = resources["printers"].model_copy(update={"database_url": None}).printers()["lob"]
    assert lob._postcards.base_url == "http://127.0.0.1:8700/lob/v1"  # type: ignore[attr-defined]
    assert isinstance(resources["billing"], StripeBilling)
    assert resources["billing"].api_base == "http://127.0.0.1:8700/stripe"
    assert isinstance(resources["queues"], SqsQueues)
    assert isinstance(resources["cdp"], SandboxCdp)
    assert resources["cdp"].sandbox_url == "http://127.0.0.1:8700"
    assert isinstance(resources["notifications"], OutboxNotifications)
    # As a run worker builds them, from the job's resource definitions and the environment.
    _set_environment(monkeypatch, environ)
    mailing = staging.get_repository_def().get_job("mailing_job")
    with dg.build_resources(
        {k: mailing.resource_defs[k] for k in ("printers", "billing")}
    ) as built:
        assert built.printers.api_base_url == "http://127.0.0.1:8700"
        assert built.billing.api_base == "http://127.0.0.1:8700/stripe"


def test_a_sandbox_server_is_refused_outside_staging() -> None:
    environ = {**PRODUCTION, "MAIL_PIPELINE_SANDBOX_URL": "http://127.0.0.1:8700"}
    with pytest.raises(ProductionConfigError) as refused:
        build_definitions(load_settings(environ))
    assert refused.value.problems == [
        "MAIL_PIPELINE_SANDBOX_URL is set: the vendors would be a sandbox server (allowed "
        "only with MAIL_PIPELINE_STAGING=1)"
    ]


@pytest.mark.parametrize(
    "job", [j for j in JOBS if isinstance(j, dg.JobDefinition)], ids=lambda job: job.name
)
def test_a_staging_job_is_its_job_but_for_the_label(job: dg.JobDefinition) -> None:
    relabelled = staging_job(job)
    original, staged = job.get_job_snapshot(), relabelled.get_job_snapshot()
    assert staged.description == f"{STAGING_NOTICE} {job.description}"
    assert {k: v for k, v in staged.tags.items() if k != DEPLOYMENT_TAG} == dict(original.tags)
    for field in ("config_schema_snapshot", "dep_structure_snapshot", "node_defs_snapshot"):
        assert getattr(staged, field) == getattr(original, field), field
    assert staged.mode_def_snaps == original.mode_def_snaps
    assert relabelled.op_retry_policy == job.op_retry_policy
    assert relabelled.run_config_schema.config_type.key == job.run_config_schema.config_type.key


@pytest.mark.parametrize(
    "job", [j for j in JOBS if not isinstance(j, dg.JobDefinition)], ids=lambda job: job.name
)
def test_a_staging_asset_job_is_its_job_but_for_the_label(job: Any) -> None:
    relabelled = staging_job(job)
    assert relabelled.name == job.name and relabelled.selection == job.selection
    assert relabelled.description == f"{STAGING_NOTICE} {job.description}"
    assert relabelled.tags == {**job.tags, DEPLOYMENT_TAG: "staging"}
    assert relabelled.run_tags[DEPLOYMENT_TAG] == "staging"


def _validate(environ: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {*PRODUCTION, *TEST_SETTINGS}},
        "MAIL_PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        **environ,
    }
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    result = _validate({"MAIL_PIPELINE_ENV": "local"}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mail_pipeline" in result.stdout + result.stderr


def test_dagster_cli_refuses_an_unsafe_production_workspace(tmp_path: Path) -> None:
    environ = {**PRODUCTION, "LOB_API_KEY": "test_abc"}
    del environ["LOB_WEBHOOK_SECRET"]
    result = _validate(environ, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "refusing to load the production definitions" in output
    assert "LOB_API_KEY is set but LOB_WEBHOOK_SECRET is not" in output
    assert "LOB_API_KEY is a test key" in output


def test_run_failure_alerts_go_to_slack_in_production_and_to_the_outbox_locally(
    tmp_path: Path,
) -> None:
    prod = build_definitions(load_settings(PRODUCTION)).resources or {}
    local = build_definitions(load_settings({"MAIL_PIPELINE_DATA_DIR": str(tmp_path)}))
    slack = prod["notifications"]
    assert isinstance(slack, SlackNotifications)
    assert "hooks.slack.com" not in repr(slack), "the webhook URL is a secret"
    outbox = (local.resources or {})["notifications"]
    assert isinstance(outbox, OutboxNotifications)
    assert outbox.folder == str(tmp_path.resolve() / "outbox")
