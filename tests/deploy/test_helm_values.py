"""deploy/helm/values.yaml: the run launcher's part is valid for dagster-k8s's K8sRunLauncher,
the rest uses the official chart's structure, and the instance the chart writes from it has
the production instance's limits, monitoring, retries and retention. With `helm` installed,
the chart itself lints and renders the values."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher

from tests.deploy.files import (
    HELM_VALUES,
    PRODUCTION_INSTANCE,
    ROOT,
    WORKSPACE,
    camel_to_snake,
    load_yaml,
)

CHART_VERSION = "1.13.27"

#: The chart's top-level values and the daemon's, user deployment's and run monitoring's keys
#: (the chart's values schema, dagster/dagster 1.13): a key outside these is ignored by the
#: chart or refused by its schema.
CHART_KEYS = {
    "global",
    "dagsterWebserver",
    "dagster-user-deployments",
    "postgresql",
    "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret",
    "rabbitmq",
    "redis",
    "flower",
    "ingress",
    "imagePullSecrets",
    "computeLogManager",
    "scheduler",
    "runLauncher",
    "pythonLogs",
    "dagsterDaemon",
    "busybox",
    "migrate",
    "telemetry",
    "serviceAccount",
    "retention",
    "additionalInstanceConfig",
    "concurrency",
}
DAEMON_KEYS = {
    "enabled",
    "image",
    "runCoordinator",
    "heartbeatTolerance",
    "env",
    "envConfigMaps",
    "envSecrets",
    "deploymentLabels",
    "labels",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "annotations",
    "runMonitoring",
    "runRetries",
    "sensors",
    "schedules",
    "schedulerName",
    "volumeMounts",
    "volumes",
}
USER_DEPLOYMENT_KEYS = {
    "name",
    "image",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "port",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
}
#: What the chart writes into the instance's run_monitoring, and from which value.
RUN_MONITORING = {
    "enabled": "enabled",
    "startTimeoutSeconds": "start_timeout_seconds",
    "cancelTimeoutSeconds": "cancel_timeout_seconds",
    "maxResumeRunAttempts": "max_resume_run_attempts",
    "pollIntervalSeconds": "poll_interval_seconds",
    "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
}
#: The chart's k8sRunLauncher values and the K8sRunLauncher config keys it writes them to.
K8S_RUN_LAUNCHER = {
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "imagePullPolicy": "image_pull_policy",
    "envConfigMaps": "env_config_maps",
    "envSecrets": "env_secrets",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "resources": "resources",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
}
#: The variables the chart sets on its pods for the run launcher's config.
CHART_ENV = {
    "DAGSTER_HOME": "/opt/dagster/dagster_home",
    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "mail-pipeline-instance",
    "DAGSTER_K8S_PG_PASSWORD_SECRET": "mail-pipeline-postgresql",
    "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": "mail-pipeline-pipeline-env",
}


def _values() -> dict[str, Any]:
    return load_yaml(HELM_VALUES)


def _production() -> dict[str, Any]:
    return load_yaml(PRODUCTION_INSTANCE)


def _k8s_run_launcher_config(values: dict[str, Any]) -> dict[str, Any]:
    """The run launcher's config as the chart writes it into the instance."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    unknown = set(k8s) - set(K8S_RUN_LAUNCHER)
    assert not unknown, f"k8sRunLauncher values the chart does not write: {sorted(unknown)}"
    config: dict[str, Any] = {
        K8S_RUN_LAUNCHER[key]: value
        for key, value in k8s.items()
        if value not in (None, [], {}) or key == "loadInclusterConfig"
    }
    for key in ("env_config_maps", "env_secrets"):
        if key in config:
            config[key] = [entry["name"] for entry in config[key]]
    config["env_config_maps"] = [
        {"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"},
        *config.get("env_config_maps", []),
    ]
    config["job_namespace"] = config.get("job_namespace") or "mail-pipeline"
    config["service_account_name"] = "mail-pipeline"
    config["dagster_home"] = {"env": "DAGSTER_HOME"}
    config["instance_config_map"] = {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"}
    config["postgres_password_secret"] = {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"}
    return config


@pytest.fixture
def chart_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CHART_ENV.items():
        monkeypatch.setenv(name, value)


def test_the_run_launcher_values_are_valid_for_k8s_run_launcher(chart_env: None) -> None:
    values = _values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    result = process_config(K8sRunLauncher.config_type(), _k8s_run_launcher_config(values))
    assert result.success, result.errors
    config = result.value
    assert config["load_incluster_config"] is True
    assert config["fail_pod_on_run_failure"] is True
    assert config["env_vars"] == ["DAGSTER_EVENT_BATCH_SIZE=1000"]


def test_a_wrong_run_launcher_value_is_refused(chart_env: None) -> None:
    values = _values()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher["loadInclusterConfig"] = "yes please"
    result = process_config(K8sRunLauncher.config_type(), _k8s_run_launcher_config(values))
    assert not result.success

    values = _values()
    values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespaces"] = "x"
    with pytest.raises(AssertionError, match="jobNamespaces"):
        _k8s_run_launcher_config(values)


def test_the_values_use_the_charts_structure() -> None:
    values = _values()
    assert set(values) <= CHART_KEYS
    assert set(values["dagsterDaemon"]) <= DAEMON_KEYS
    assert set(values["dagsterDaemon"]["runMonitoring"]) <= set(RUN_MONITORING)
    assert set(values["dagsterDaemon"]["runRetries"]) <= {"enabled", "maxRetries"}
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert set(deployment) <= USER_DEPLOYMENT_KEYS
    sensor_retention = values["retention"]["sensor"]["purgeAfterDays"]
    # the chart's schema wants every tick status when they are given one by one
    assert set(sensor_retention) == {"skipped", "success", "failure", "started"}


def test_the_code_server_is_the_image_serving_the_code_location() -> None:
    values = _values()
    users = values["dagster-user-deployments"]
    assert users["enabled"] and users["enableSubchart"]
    (deployment,) = users["deployments"]
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert deployment["codeServerArgs"] == ["-m", module]
    (server,) = load_yaml(WORKSPACE)["load_from"]
    assert deployment["port"] == server["grpc_server"]["port"]
    # runs get the code server's environment (the Secret and the ConfigMap)
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert deployment["envSecrets"] and deployment["envConfigMaps"]


def test_the_chart_writes_the_production_instances_run_queue() -> None:
    values = _values()
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    production = _production()
    runs = production["concurrency"]["runs"]
    assert queued["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    # the chart's template writes only the dequeue settings (not the user-code retries)
    dequeue = {
        k: v for k, v in production["run_coordinator"]["config"].items() if k.startswith("dequeue")
    }
    assert {camel_to_snake(k): v for k, v in queued.items() if k.startswith("dequeue")} == dequeue


def test_the_chart_writes_the_production_instances_monitoring_and_retries() -> None:
    daemon = _values()["dagsterDaemon"]
    production = _production()
    written = {RUN_MONITORING[k]: v for k, v in daemon["runMonitoring"].items()}
    # no value of the chart sets max_runtime_seconds: every job has its own dagster/max_runtime
    expected = {k: v for k, v in production["run_monitoring"].items() if k != "max_runtime_seconds"}
    expected.setdefault("free_slots_after_run_end_seconds", 0)  # 0 and absent: off
    assert written == expected
    retries = production["run_retries"]
    assert daemon["runRetries"] == {
        "enabled": retries["enabled"],
        "maxRetries": retries["max_retries"],
    }
    for kind in ("sensors", "schedules"):
        assert {camel_to_snake(k): v for k, v in daemon[kind].items()} == production[kind]


def test_the_chart_writes_the_production_instances_retention_and_step_logs() -> None:
    values = _values()
    production = _production()
    retention = values["retention"]
    assert retention["enabled"] is True
    assert {
        kind: {"purge_after_days": retention[kind]["purgeAfterDays"]}
        for kind in ("schedule", "sensor")
    } == production["retention"]
    assert values["telemetry"] == production["telemetry"]

    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    s3 = {camel_to_snake(k): v for k, v in logs["config"]["s3ComputeLogManager"].items()}
    result = process_config(S3ComputeLogManager.config_type(), s3)
    assert result.success, result.errors
    options = production["compute_logs"]["config"]
    assert (s3["skip_empty_files"], s3["upload_interval"]) == (
        options["skip_empty_files"],
        options["upload_interval"],
    )


def _helm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["helm", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("helm") is None:
        pytest.skip("helm is not installed: `helm lint` and `helm template` were not run")
    where = tmp_path_factory.mktemp("chart")
    pulled = _helm(
        "pull",
        "dagster",
        "--repo",
        "https://dagster-io.github.io/helm",
        "--version",
        CHART_VERSION,
        "--untar",
        cwd=where,
    )
    if pulled.returncode != 0:
        pytest.skip(f"the dagster chart {CHART_VERSION} could not be fetched: {pulled.stderr}")
    return where / "dagster"


def test_helm_lints_the_values(chart: Path) -> None:
    linted = _helm("lint", str(chart), "-f", str(HELM_VALUES), cwd=chart)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_helm_renders_an_instance_dagster_accepts(chart: Path, tmp_path: Path) -> None:
    rendered = _helm("template", "mail-pipeline", str(chart), "-f", str(HELM_VALUES), cwd=chart)
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (instance_map,) = [
        d for d in documents if d["kind"] == "ConfigMap" and "dagster.yaml" in d.get("data", {})
    ]
    (tmp_path / "dagster.yaml").write_text(instance_map["data"]["dagster.yaml"])
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's own instance schema
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"
    production = _production()
    runs = config.get("concurrency", {}).get("runs") or config["run_coordinator"]["config"]
    assert runs["max_concurrent_runs"] == production["concurrency"]["runs"]["max_concurrent_runs"]
    assert (
        runs["tag_concurrency_limits"]
        == production["concurrency"]["runs"]["tag_concurrency_limits"]
    )
    monitoring = dict(production["run_monitoring"])
    del monitoring["max_runtime_seconds"]  # no value of the chart writes it
    assert {k: config["run_monitoring"][k] for k in monitoring} == monitoring
    assert config["run_retries"]["enabled"] is True
    assert config["run_retries"]["max_retries"] == 0
