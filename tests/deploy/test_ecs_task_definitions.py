"""The ECS task definition templates (deploy/ecs/*.json) are valid RegisterTaskDefinition input
for Fargate, and agree with each other, the workspace, the production instance and the
settings the code location reads."""

from __future__ import annotations

import copy
import json
import tomllib
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from dagster_aws.ecs.container_context import EcsContainerContext

from mail_pipeline.settings import load_settings, production_problems
from tests.deploy.files import (
    DAGSTER_VARIABLES,
    DEPLOYMENT_DOC,
    ECS_TASKS,
    PLACEHOLDER_VALUES,
    PRODUCTION_INSTANCE,
    ROOT,
    WORKSPACE,
    container,
    env_references,
    environment_names,
    is_fargate_size,
    load_yaml,
    placeholders,
    settings_variables,
    task_definition,
    template,
)
from tests.environments import PRODUCTION

INSTANCE_VARIABLES = set(env_references(load_yaml(PRODUCTION_INSTANCE)))
WORKSPACE_VARIABLES = set(env_references(load_yaml(WORKSPACE)))


def _register_task_definition_errors(params: dict[str, Any]) -> str:
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(params, shape)
    return report.generate_report() if report.has_errors() else ""


@pytest.mark.parametrize("name", ECS_TASKS)
def test_each_template_is_valid_register_task_definition_input(name: str) -> None:
    assert not _register_task_definition_errors(task_definition(name))


def test_the_validation_catches_a_wrong_key() -> None:
    broken = copy.deepcopy(task_definition("run"))
    broken["containerDefinitions"][0]["enviroment"] = []
    assert "Unknown parameter" in _register_task_definition_errors(broken)


@pytest.mark.parametrize("name", ECS_TASKS)
def test_each_task_is_a_fargate_task_of_one_container(name: str) -> None:
    task = task_definition(name)
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert task["networkMode"] == "awsvpc"
    assert is_fargate_size(int(task["cpu"]), int(task["memory"]))
    (only,) = task["containerDefinitions"]
    assert only["essential"] is True
    assert only["linuxParameters"]["initProcessEnabled"] is True
    assert only["logConfiguration"]["logDriver"] == "awslogs"


def test_every_placeholder_is_documented_and_given() -> None:
    used = set().union(*(placeholders(template(name)) for name in ECS_TASKS))
    assert used == set(PLACEHOLDER_VALUES)
    doc = DEPLOYMENT_DOC.read_text()
    assert not [name for name in used if f"${{{name}}}" not in doc]


def test_every_task_runs_the_same_image() -> None:
    assert {container(name)["image"] for name in ECS_TASKS} == {PLACEHOLDER_VALUES["IMAGE"]}


def test_the_code_server_serves_the_code_location_on_the_workspace_port() -> None:
    code_server = container("code-server")
    command = code_server["command"]
    module = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == module
    port = int(command[command.index("-p") + 1])
    (server,) = load_yaml(WORKSPACE)["load_from"]
    assert server["grpc_server"]["port"] == port
    assert [m["containerPort"] for m in code_server["portMappings"]] == [port]
    assert code_server["healthCheck"]["command"][-2:] == ["-p", str(port)]


@pytest.mark.parametrize("name", ["daemon", "webserver"])
def test_the_daemon_and_webserver_load_the_image_workspace(name: str) -> None:
    command = container(name)["command"]
    assert command[command.index("-w") + 1] == "/opt/dagster/workspace.yaml"
    assert "/opt/dagster/workspace.yaml" in (ROOT / "Dockerfile").read_text()


def test_the_run_task_is_the_one_the_launcher_uses() -> None:
    launcher = load_yaml(PRODUCTION_INSTANCE)["run_launcher"]["config"]
    run = task_definition("run")
    assert container("run")["name"] == launcher["container_name"]
    for name in ECS_TASKS:
        variables = {e["name"]: e["value"] for e in container(name)["environment"]}
        assert variables["DAGSTER_RUN_TASK_DEFINITION"] == run["family"], name
    # the launcher sets the run worker's command; a run task has no other
    assert "command" not in container("run")
    # ECS's longest wait between SIGTERM and SIGKILL, within run monitoring's cancel timeout
    monitoring = load_yaml(PRODUCTION_INSTANCE)["run_monitoring"]
    assert container("run")["stopTimeout"] <= monitoring["cancel_timeout_seconds"]


def test_a_run_has_the_code_servers_environment() -> None:
    code_server, run = container("code-server"), container("run")
    announced = [e for e in code_server["environment"] if e["name"] != "DAGSTER_CONTAINER_CONTEXT"]
    assert announced == run["environment"]
    assert code_server["secrets"] == run["secrets"]


def test_the_code_server_names_the_run_task_of_its_own_image() -> None:
    """Its container context (dagster code-server start reads DAGSTER_CONTAINER_CONTEXT) names
    the run task revision registered with the same image; dagster-aws prefers it, for the
    code location's runs, to the instance's task definition."""
    variables = {e["name"]: e["value"] for e in container("code-server")["environment"]}
    context = EcsContainerContext.create_from_config(
        json.loads(variables["DAGSTER_CONTAINER_CONTEXT"])
    )
    instance_default = EcsContainerContext(task_definition_arn="mail-pipeline-run:0")
    merged = instance_default.merge(context)
    assert merged.task_definition_arn == PLACEHOLDER_VALUES["RUN_TASK_DEFINITION_ARN"]
    family = merged.task_definition_arn.rsplit("/", 1)[1].split(":")[0]
    assert family == task_definition("run")["family"]


def test_every_variable_set_is_one_something_reads() -> None:
    readers = settings_variables() | INSTANCE_VARIABLES | WORKSPACE_VARIABLES | DAGSTER_VARIABLES
    for name in ECS_TASKS:
        unread = environment_names(name) - readers
        assert not unread, f"{name}.json sets variables nothing reads: {sorted(unread)}"


def test_every_process_gets_what_it_reads() -> None:
    for name in ECS_TASKS:
        missing = INSTANCE_VARIABLES - environment_names(name)
        assert not missing, f"{name}.json lacks the instance's {sorted(missing)}"
    for name in ("daemon", "webserver"):
        assert environment_names(name) >= WORKSPACE_VARIABLES
        assert "DAGSTER_EVENT_BATCH_SIZE" in environment_names(name)
    # the code location needs every variable of a complete production environment
    assert set(PRODUCTION) <= environment_names("code-server")


def test_the_code_servers_environment_is_a_complete_production_configuration() -> None:
    """Rendered, with a value for each secret, it is what production accepts."""
    found = container("code-server")
    environ = {e["name"]: e["value"] for e in found["environment"]}
    environ |= {s["name"]: PRODUCTION.get(s["name"], "a-secret") for s in found["secrets"]}
    assert environ["MAIL_PIPELINE_ENV"] == "production"
    assert production_problems(load_settings(environ)) == []


def test_secrets_are_keys_of_the_platform_secret() -> None:
    for name in ECS_TASKS:
        for secret in container(name).get("secrets", []):
            arn = PLACEHOLDER_VALUES["PLATFORM_SECRET_ARN"]
            assert secret["valueFrom"] == f"{arn}:{secret['name']}::"


def test_the_templates_are_formatted_json() -> None:
    for name in ECS_TASKS:
        text = template(name)
        assert text == json.dumps(json.loads(text), indent=2) + "\n", name
