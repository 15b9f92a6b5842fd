"""The image (Dockerfile, .dockerignore, deploy/requirements.lock) and the compose stack
(deploy/compose.yaml): read and compared without Docker; with Docker Compose installed,
`docker compose config` checks the file, and with a Docker engine the image is built."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import pytest
from moto import mock_aws
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mail_pipeline.settings import load_settings, production_problems
from tests.deploy.files import (
    COMPOSE,
    COMPOSE_INSTANCE,
    DEPLOY,
    ROOT,
    WORKSPACE,
    container,
    environment_names,
    load_yaml,
)

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = DEPLOY / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BIN = Path(sys.executable).parent


# -- the Dockerfile --------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile line, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def _args(instruction: str) -> list[str]:
    return [rest for word, rest in _instructions() if word == instruction]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_the_image_is_a_slim_python_311_in_two_stages() -> None:
    (base,) = [a for a in _args("ARG") if a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base)
    froms = _args("FROM")
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    final = _final_stage()
    # the final stage takes the virtualenv, not the build's tools
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    assert not [rest for word, rest in final if word == "RUN" and "pip install" in rest]


def test_the_image_installs_exactly_the_lock_and_checks_it() -> None:
    runs = " ".join(_args("RUN"))
    assert "pip install --no-deps -r /tmp/requirements.lock" in runs
    assert "pip install --no-deps /src" in runs
    assert "pip check" in runs
    assert "COPY deploy/requirements.lock /tmp/requirements.lock" in [
        f"{w} {r}" for w, r in _instructions()
    ]


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = [rest for word, rest in _final_stage() if word == "USER"]
    assert users[-1] == "dagster"
    (created,) = [rest for word, rest in _final_stage() if word == "RUN" and "useradd" in rest]
    assert re.search(r"useradd --system --uid 10001 .*\bdagster\b", created)


def _exec_form(arguments: str) -> list[str]:
    return json.loads(arguments)


def test_the_image_serves_the_code_server_and_checks_its_health() -> None:
    (cmd,) = _args("CMD")
    assert _exec_form(cmd) == container("code-server")["command"]
    (healthcheck,) = _args("HEALTHCHECK")
    probe = _exec_form(healthcheck.split(" CMD ", 1)[1])
    assert probe == ["dagster", "api", "grpc-health-check", "-p", "4000"]
    (server,) = load_yaml(WORKSPACE)["load_from"]
    assert probe[-1] == str(server["grpc_server"]["port"])
    assert "EXPOSE 4000" in [f"{w} {r}" for w, r in _instructions()]


def test_the_image_holds_the_production_instance_and_workspace() -> None:
    env = " ".join(_args("ENV"))
    home = re.search(r"DAGSTER_HOME=(\S+)", env)
    assert home is not None
    copies = dict(rest.split(" ", 1)[::-1] for rest in _args("COPY") if " " in rest)
    assert copies[f"{home.group(1)}/dagster.yaml"] == "deploy/dagster.production.yaml"
    assert copies["/opt/dagster/workspace.yaml"] == "deploy/workspace.production.yaml"
    assert re.search(r"MAIL_PIPELINE_DATA_DIR=/opt/dagster/data", env)


# -- .dockerignore ---------------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\*\*/|\*|\?)", text.strip("/")):
        parts.append({"**/": "(.*/)?", "*": "[^/]*", "?": "[^/]"}.get(piece, re.escape(piece)))
    return re.compile("".join(parts))


def _ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    candidates = [str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "."]
    candidates.append(path)
    ignored = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = _pattern(line.removeprefix("!"))
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/mail_pipeline.sqlite",
        ".dagster_home/dagster.yaml",
        ".git/HEAD",
        "tests/conftest.py",
        "docs/deployment.md",
        "mail_pipeline/__pycache__/x.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert _ignored(path)


def test_the_build_context_has_what_the_dockerfile_copies() -> None:
    sources = [
        source
        for rest in _args("COPY")
        if not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), source
    assert not _ignored("mail_pipeline/db/migrations/env.py")
    assert _ignored("deploy/compose.yaml")


# -- the lock --------------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = _pins()
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in deploy/requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), text


def test_the_lock_has_no_development_tool() -> None:
    development = {
        canonicalize_name(Requirement(text).name)
        for text in PYPROJECT["project"]["optional-dependencies"]["dev"]
    }
    assert not development & set(_pins())


def test_the_lock_is_complete_where_this_environment_agrees_with_it() -> None:
    """For each pinned package installed here at its pinned version, what it requires is
    pinned too, at a version it accepts (``pip check`` does the same in the image build)."""
    pins = _pins()
    checked = 0
    for name, version in pins.items():
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if installed.version != version:
            continue
        checked += 1
        for text in installed.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            needed = canonicalize_name(requirement.name)
            assert needed in pins, f"{name} {version} requires {text}, which is not pinned"
            assert requirement.specifier.contains(pins[needed], prereleases=True), (name, text)
    assert checked, "no pinned package is installed at its pinned version here"


def test_the_lock_generator_runs() -> None:
    generated = subprocess.run(
        [sys.executable, str(DEPLOY / "lock.py")], capture_output=True, text=True, check=True
    ).stdout
    assert "dagster==1.13.27" in generated.splitlines()
    assert not [line for line in generated.splitlines() if line.startswith("pytest")]


# -- the compose stack -----------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def _service(name: str) -> dict[str, Any]:
    return _compose()["services"][name]


APP_SERVICES = ("setup", "sandbox", "code-server", "daemon", "webserver")


def test_the_stack_has_its_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "moto", *APP_SERVICES}
    assert re.fullmatch(r"postgres:15(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(r"motoserver/moto:\d+\.\d+\.\d+", services["moto"]["image"])
    for name, service in services.items():
        if name != "setup":  # a one-off: its success is what the others wait for
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_the_app_services_run_the_root_dockerfile_image() -> None:
    for name in APP_SERVICES:
        service = _service(name)
        assert service["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name
        assert (COMPOSE.parent / service["build"]["context"] / "Dockerfile").resolve() == (
            DOCKERFILE
        )
        assert service["image"] == "mail-pipeline:local"
        assert service.get("init") is True, name
        command = service["command"]
        program = shlex.split(command[-1])[0] if command[0] == "sh" else command[0]
        assert (BIN / program).exists(), f"{name}: {program} is not installed by the package"


def test_each_service_waits_for_what_it_needs() -> None:
    def waits(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in _service(name)["depends_on"].items()}

    assert waits("setup") == {"postgres": "service_healthy", "moto": "service_healthy"}
    assert waits("sandbox") == {"setup": "service_completed_successfully"}
    assert waits("code-server") == {
        "setup": "service_completed_successfully",
        "sandbox": "service_healthy",
    }
    assert waits("daemon") == {"code-server": "service_healthy"}
    assert waits("webserver") == {"code-server": "service_healthy"}


def test_the_compose_processes_are_the_ecs_ones() -> None:
    for name in ("code-server", "daemon", "webserver"):
        assert _service(name)["command"] == container(name)["command"], name
        assert (
            _service(name)["healthcheck"]["test"][1:]
            == (container(name)["healthCheck"]["command"][1:])
        ), name
    (server,) = load_yaml(WORKSPACE)["load_from"]
    assert _service("code-server")["environment"]["DAGSTER_CODE_SERVER_HOST"] == "code-server"
    assert server["grpc_server"]["host"] == {"env": "DAGSTER_CODE_SERVER_HOST"}


def test_the_dagster_processes_use_the_compose_instance() -> None:
    home = re.search(r"DAGSTER_HOME=(\S+)", " ".join(_args("ENV")))
    assert home is not None
    mount = f"./compose/dagster.yaml:{home.group(1)}/dagster.yaml:ro"
    assert (COMPOSE.parent / "compose" / "dagster.yaml") == COMPOSE_INSTANCE
    for name in ("code-server", "daemon", "webserver"):
        assert _service(name)["volumes"] == [mount], name


#: What the compose stack sets that ECS does not: AWS on moto, vendors on the sandbox server.
COMPOSE_ONLY = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "MAIL_PIPELINE_STAGING",
    "MAIL_PIPELINE_SANDBOX_URL",
    "MAIL_PIPELINE_PRINTERS_TEST_MODE",
    "DAGSTER_CODE_SERVER_HOST",
}
#: What ECS sets that compose does not: the run task family and revision, and Slack (on the
#: sandbox server, run-failure alerts go to the data dir's outbox).
ECS_ONLY = {
    "DAGSTER_RUN_TASK_DEFINITION",
    "DAGSTER_CONTAINER_CONTEXT",
    "MAIL_PIPELINE_SLACK_WEBHOOK_URL",
}


@pytest.mark.parametrize(
    ("service", "task"),
    [("code-server", "code-server"), ("daemon", "daemon"), ("webserver", "webserver")],
)
def test_the_variables_are_the_ecs_tasks_but_for_aws_and_the_vendors(
    service: str, task: str
) -> None:
    compose = set(_service(service)["environment"])
    ecs = environment_names(task)
    assert compose - ecs <= COMPOSE_ONLY, sorted(compose - ecs)
    assert ecs - compose <= ECS_ONLY, sorted(ecs - compose)


def test_the_queues_are_the_ecs_ones_on_moto() -> None:
    compose = _service("code-server")["environment"]
    ecs = {e["name"]: e["value"] for e in container("code-server")["environment"]}
    queues = [name for name in ecs if name.endswith("_QUEUE_URL")]
    assert len(queues) == 4
    for name in queues:
        assert compose[name].startswith("http://moto:5000/")
        assert compose[name].rsplit("/", 1)[1] == ecs[name].rsplit("/", 1)[1]
    sandbox = _service("sandbox")["command"]
    assert sandbox[sandbox.index("--webhooks-to-sqs") + 1] == compose["MAIL_STATUS_QUEUE_URL"]
    assert compose["MAIL_PIPELINE_SANDBOX_URL"] == "http://sandbox:8700"
    assert sandbox[sandbox.index("--port") + 1] == "8700"


def test_the_code_location_accepts_the_compose_configuration() -> None:
    """As a staging deployment on the sandbox server, production loads with nothing missing."""
    environ = {k: str(v) for k, v in _service("code-server")["environment"].items()}
    assert environ["MAIL_PIPELINE_ENV"] == "production"
    assert production_problems(load_settings(environ)) == []


def test_the_setup_creates_what_the_processes_expect(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {k: str(v) for k, v in _service("setup")["environment"].items()}
    for name, value in environ.items():
        if not name.startswith("AWS_ENDPOINT"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    script = str(DEPLOY / "compose" / "setup_aws.py")
    with mock_aws():
        runpy.run_path(script, run_name="__main__")
        runpy.run_path(script, run_name="__main__")  # again: nothing fails, nothing doubles
        sqs = boto3.client("sqs", region_name=environ["AWS_REGION"])
        names = {url.rsplit("/", 1)[1] for url in sqs.list_queues()["QueueUrls"]}
        expected = {environ[v].rsplit("/", 1)[1] for v in environ if v.endswith("_QUEUE_URL")}
        assert names == expected | {f"{name}-dlq" for name in expected}
        s3 = boto3.client("s3", region_name=environ["AWS_REGION"])
        buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert buckets == {
            environ["DAGSTER_COMPUTE_LOGS_BUCKET"],
            environ["MAIL_PIPELINE_UPLOADS_BUCKET"],
        }
        ses = boto3.client("ses", region_name=environ["AWS_REGION"])
        assert environ["REPORT_EMAIL_SENDER"] in ses.list_identities()["Identities"]


# -- with Docker -----------------------------------------------------------------------------


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_docker_compose_accepts_the_file() -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed: `docker compose config` was not run")
    if _docker("compose", "version").returncode != 0:
        pytest.skip("the Docker Compose plugin is not installed: `docker compose config` not run")
    checked = _docker("compose", "-f", str(COMPOSE), "config", "-q")
    assert checked.returncode == 0, checked.stderr


@pytest.mark.slow
def test_the_image_builds() -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed: the image was not built")
    if _docker("info").returncode != 0:
        pytest.skip("no Docker engine answers (`docker info` failed): the image was not built")
    built = _docker("build", "-t", "mail-pipeline:test", str(ROOT), timeout=1800)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    user = _docker("run", "--rm", "mail-pipeline:test", "id", "-u")
    assert user.stdout.strip() == "10001"
