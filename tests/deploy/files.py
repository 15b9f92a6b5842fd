"""The deployment files, read the way the tests compare them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from mail_pipeline.settings import bfcm_season_start, load_settings, rate_limit_overrides
from tests.environments import PRODUCTION

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PRODUCTION_INSTANCE = DEPLOY / "dagster.production.yaml"
COMPOSE_INSTANCE = DEPLOY / "compose" / "dagster.yaml"
WORKSPACE = DEPLOY / "workspace.production.yaml"
COMPOSE = DEPLOY / "compose.yaml"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
ECS = DEPLOY / "ecs"
ECS_TASKS = ("code-server", "run", "daemon", "webserver")
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"

#: Values for the task definitions' placeholders, as an operator would give them.
PLACEHOLDER_VALUES = {
    "IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mail-pipeline:3f2a9c1",
    "RUN_TASK_DEFINITION_ARN": (
        "arn:aws:ecs:us-east-1:123456789012:task-definition/mail-pipeline-run:1"
    ),
    "AWS_REGION": "us-east-1",
    "AWS_ACCOUNT_ID": "123456789012",
    "DEPLOYMENT": "production",
    "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/mail-pipeline-execution",
    "APP_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/mail-pipeline-app",
    "DAGSTER_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/mail-pipeline-dagster",
    "PLATFORM_SECRET_ARN": (
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:mail-pipeline/production/platform-Ab12Cd"
    ),
    "LOG_GROUP": "/ecs/mail-pipeline",
    "CODE_SERVER_HOST": "code-server.mail-pipeline.internal",
    "COMPUTE_LOGS_BUCKET": "mail-pipeline-dagster-logs",
    "UPLOADS_BUCKET": "mail-pipeline-brand-uploads",
    "UI_BASE_URL": "https://dagster.mail-pipeline.example.com",
    "CLOUDFLARE_ACCOUNT_ID": "0123456789abcdef",
    "CLOUDFLARE_ACCOUNT_HASH": "AbCdEf012345",
    "REPORT_EMAIL_SENDER": "reports@mail-pipeline.example.com",
    "REPORT_RECIPIENT_TEMPLATE": "csm+{slug}@mail-pipeline.example.com",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")

#: What Dagster itself reads from the environment: batched event writes (docs/operations.md,
#: production checklist) and the code server's container context (its runs' task definition).
DAGSTER_VARIABLES = frozenset({"DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_CONTAINER_CONTEXT"})


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def template(name: str) -> str:
    return (ECS / f"{name}.json").read_text()


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(text: str, values: Mapping[str, str] = PLACEHOLDER_VALUES) -> str:
    """``envsubst`` as docs/deployment.md uses it: every ``${NAME}`` replaced."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def task_definition(name: str) -> dict[str, Any]:
    """A task definition template, rendered and parsed: RegisterTaskDefinition's input."""
    return json.loads(render(template(name)))


def container(name: str) -> dict[str, Any]:
    (only,) = task_definition(name)["containerDefinitions"]
    return only


def environment_names(name: str) -> set[str]:
    """The variables a task's container gets, plain and secret."""
    found = container(name)
    return {e["name"] for e in found.get("environment", [])} | {
        s["name"] for s in found.get("secrets", [])
    }


def env_references(config: Any) -> Iterator[str]:
    """Every ``{env: NAME}`` in a Dagster YAML config."""
    if isinstance(config, Mapping):
        if set(config) == {"env"}:
            yield config["env"]
            return
        for value in config.values():
            yield from env_references(value)
    elif isinstance(config, list):
        for value in config:
            yield from env_references(value)


class RecordingEnviron(dict[str, str]):
    """An environment that remembers every variable asked of it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)


def settings_variables() -> set[str]:
    """Every variable ``mail_pipeline.settings`` reads for a production process."""
    environ = RecordingEnviron(PRODUCTION)
    load_settings(environ)
    rate_limit_overrides(environ)
    bfcm_season_start(environ)
    return environ.asked


def fargate_memories(cpu: int) -> range | tuple[int, ...]:
    """The memory sizes (MiB) Fargate offers with ``cpu`` units on Linux; empty if none."""
    gib = 1024
    offers: dict[int, range | tuple[int, ...]] = {
        256: (512, 1 * gib, 2 * gib),
        512: range(1 * gib, 4 * gib + 1, gib),
        1024: range(2 * gib, 8 * gib + 1, gib),
        2048: range(4 * gib, 16 * gib + 1, gib),
        4096: range(8 * gib, 30 * gib + 1, gib),
        8192: range(16 * gib, 60 * gib + 1, 4 * gib),
        16384: range(32 * gib, 120 * gib + 1, 8 * gib),
    }
    return offers.get(cpu, ())


def is_fargate_size(cpu: int, memory: int) -> bool:
    return memory in fargate_memories(cpu)


def camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def section(markdown: str, heading: str) -> str:
    """The text of a ``## heading`` section of a Markdown document (to the next ``## ``)."""
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]
