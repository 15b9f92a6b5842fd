"""The production instance (deploy/dagster.production.yaml) is valid for Dagster's own config
schemas, resolves from its environment variables, and agrees with the code: the run queue's
limits, the run launcher's task definition and the compose stack's copy of it."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config, storage_config_schema
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes.config_class import ConfigurableClassData, class_from_code_pointer
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from moto import mock_aws

from mail_pipeline.jobs.tags import RUN_SIZES
from mail_pipeline.limits import MAILING_RUNS_IN_FLIGHT, PROOFING_RUNS_IN_FLIGHT
from tests.deploy.files import (
    COMPOSE_INSTANCE,
    PRODUCTION_INSTANCE,
    env_references,
    load_yaml,
    task_definition,
)

#: The environment of a process that loads the instance (deploy/ecs/*.json sets these).
INSTANCE_ENV = {
    "DAGSTER_PG_URL": "postgresql+psycopg2://dagster:pw@dagster-db.internal:5432/dagster",
    "DAGSTER_RUN_TASK_DEFINITION": "mail-pipeline-run",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "mail-pipeline-dagster-logs",
    "DAGSTER_COMPUTE_LOGS_PREFIX": "production",
    "MAIL_PIPELINE_DEPLOYMENT": "production",
    "AWS_REGION": "us-east-1",
}
CONFIGURABLE = {
    "run_launcher": EcsRunLauncher,
    "compute_logs": S3ComputeLogManager,
    "run_coordinator": QueuedRunCoordinator,
}


@pytest.fixture
def instance_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return INSTANCE_ENV


def _production() -> dict[str, Any]:
    return load_yaml(PRODUCTION_INSTANCE)


def _validate_instance(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Dagster's own loading of a dagster.yaml: the instance schema, then each configurable
    class's config schema (with ``env:`` values resolved from the environment)."""
    (tmp_path / "dagster.yaml").write_text(_dump(config))
    validated, _ = dagster_instance_config(str(tmp_path))
    resolved: dict[str, Any] = {}
    for key, cls in CONFIGURABLE.items():
        entry = validated[key]
        named = ConfigurableClassData(entry["module"], entry["class"], "{}")
        assert class_from_code_pointer(named.module_name, named.class_name) is cls
        result = process_config(cls.config_type(), entry.get("config") or {})
        if not result.success:
            raise DagsterInvalidConfigError(f"{key} config", result.errors, entry.get("config"))
        resolved[key] = result.value
    storage = process_config(storage_config_schema().config_type, validated["storage"])
    if not storage.success:
        raise DagsterInvalidConfigError("storage config", storage.errors, validated["storage"])
    resolved["storage"] = storage.value
    return resolved


def _register_run_task() -> dict[str, Any]:
    """deploy/ecs/run.json, rendered and registered on the (mocked) ECS."""
    ecs = boto3.client("ecs", region_name="us-east-1")
    return ecs.register_task_definition(**task_definition("run"))["taskDefinition"]


def _dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def test_the_instance_is_valid_for_dagster_and_resolves_from_its_environment(
    instance_env: dict[str, str], tmp_path: Path
) -> None:
    resolved = _validate_instance(_production(), tmp_path)

    assert resolved["storage"]["postgres"]["postgres_url"] == instance_env["DAGSTER_PG_URL"]
    launcher = resolved["run_launcher"]
    # dagster-aws reads this variable itself when the launcher starts (tested below)
    assert launcher["task_definition"] == {"env": "DAGSTER_RUN_TASK_DEFINITION"}
    assert launcher["container_name"] == "run"
    assert launcher["use_current_ecs_task_config"] is True
    assert launcher["secrets_tag"] is None
    assert launcher["run_ecs_tags"] == [{"key": "mail_pipeline/deployment", "value": "production"}]
    logs = resolved["compute_logs"]
    assert (logs["bucket"], logs["prefix"], logs["region"]) == (
        "mail-pipeline-dagster-logs",
        "production",
        "us-east-1",
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("run_launcher", "config", "task_definiton"), "mail-pipeline-run"),
        (("compute_logs", "config", "bucket_name"), "logs"),
        (("run_monitoring", "max_resume_attempts"), 0),
        (("run_retries", "max_retries"), "none"),
        (("run_coordinator", "config", "dequeue_interval"), 2),
    ],
)
def test_a_wrong_key_or_value_is_refused(
    instance_env: dict[str, str], tmp_path: Path, path: tuple[str, ...], value: object
) -> None:
    config = copy.deepcopy(_production())
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(DagsterInvalidConfigError):
        _validate_instance(config, tmp_path)


@pytest.mark.parametrize("missing", sorted(INSTANCE_ENV))
def test_every_variable_the_instance_names_is_required(
    instance_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    if missing not in set(env_references(_production())):
        pytest.fail(f"{missing} is not used by the production instance: drop it from INSTANCE_ENV")
    monkeypatch.delenv(missing)
    with pytest.raises(Exception, match=missing):  # the refusal names it
        config = _validate_instance(_production(), tmp_path)
        with mock_aws():
            _register_run_task()
            EcsRunLauncher(inst_data=None, **config["run_launcher"])


def test_the_instance_names_no_variable_the_tests_do_not_set() -> None:
    assert set(env_references(_production())) == set(INSTANCE_ENV)


def _stage_limits(config: dict[str, Any]) -> dict[str, int]:
    return {
        entry["value"]: entry["limit"]
        for entry in config["concurrency"]["runs"]["tag_concurrency_limits"]
        if entry["key"] == "mail_pipeline/stage"
    }


def test_the_run_queue_agrees_with_the_code() -> None:
    limits = _stage_limits(_production())
    assert limits["mailing"] == MAILING_RUNS_IN_FLIGHT
    assert limits["proofing"] >= PROOFING_RUNS_IN_FLIGHT
    # every stage a job can be tagged with has its own share of the queue
    assert set(limits) == set(RUN_SIZES)
    total = _production()["concurrency"]["runs"]["max_concurrent_runs"]
    assert all(limit <= total for limit in limits.values())


def test_run_monitoring_and_retries_are_as_documented() -> None:
    config = _production()
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    # a lost run worker is failed, never resumed: leases bring its batches back
    assert monitoring["max_resume_run_attempts"] == 0
    assert monitoring["cancel_timeout_seconds"] >= 120  # ECS's longest stopTimeout
    assert monitoring["max_runtime_seconds"] > 0
    retries = config["run_retries"]
    assert retries == {"enabled": True, "max_retries": 0, "retry_on_asset_or_op_failure": False}


def test_the_compose_instance_is_production_but_for_the_run_launcher() -> None:
    production = _production()
    compose = load_yaml(COMPOSE_INSTANCE)
    assert "run_launcher" not in compose  # Dagster's default: runs in the code server's container
    del production["run_launcher"]
    assert compose == production


def test_the_run_launcher_finds_its_container_in_the_run_task_definition(
    instance_env: dict[str, str], tmp_path: Path
) -> None:
    """Built for real (dagster-aws describes the task definition when it starts), against the
    rendered deploy/ecs/run.json registered on a mocked ECS."""
    config = _validate_instance(_production(), tmp_path)["run_launcher"]
    with mock_aws():
        registered = _register_run_task()
        launcher = EcsRunLauncher(inst_data=None, **config)
        assert launcher.task_definition == registered["taskDefinitionArn"]

        with pytest.raises(Exception, match="Cannot override container 'runner'"):
            EcsRunLauncher(inst_data=None, **{**config, "container_name": "runner"})


def test_the_whole_instance_loads_with_these_classes(
    instance_env: dict[str, str], tmp_path: Path
) -> None:
    """The instance as the daemon builds it (its storage swapped for SQLite here, so no
    database is needed): the classes and settings the YAML asks for."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")
    ref = InstanceRef.from_dir(
        str(home), overrides={"storage": {"sqlite": {"base_dir": str(tmp_path / "storage")}}}
    )
    with mock_aws():
        _register_run_task()
        instance = dg.DagsterInstance.from_ref(ref)
        try:
            assert isinstance(instance.run_launcher, EcsRunLauncher)
            assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
            assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
            assert instance.run_monitoring_enabled
            assert instance.run_monitoring_max_resume_run_attempts == 0
            assert instance.run_retries_enabled
            assert instance.run_retries_max_retries == 0
            assert instance.run_retries_retry_on_asset_or_op_failure is False
            queue = instance.get_concurrency_config().run_queue_config
            assert queue is not None
            assert queue.max_concurrent_runs == 24
        finally:
            instance.dispose()
