"""Every job carries what the deployment reads from its runs' tags: a Fargate task size (and the
same size for a Kubernetes pod) by stage, a maximum runtime, and automatic retries only where
docs/deployment.md says re-running is safe."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import boto3
import dagster as dg
import kubernetes
import pytest
from dagster._core.events import RunFailureReason
from dagster._core.execution.retries import auto_reexecution_should_retry_run
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs.container_context import EcsContainerContext
from dagster_k8s.job import get_user_defined_k8s_config
from dagster_k8s.models import k8s_model_from_dict
from moto import mock_aws

from mail_pipeline.definitions import build_definitions
from mail_pipeline.jobs import tags
from mail_pipeline.settings import load_settings
from tests.deploy.files import (
    DEPLOYMENT_DOC,
    PRODUCTION_INSTANCE,
    is_fargate_size,
    load_yaml,
    section,
    task_definition,
)
from tests.environments import PRODUCTION


@cache
def _jobs() -> dict[str, dg.JobDefinition]:
    """Every job of the code location, local (with the demo job) and production alike."""
    found: dict[str, dg.JobDefinition] = {}
    for environ in ({"MAIL_PIPELINE_DATA_DIR": "/nonexistent/mail-pipeline"}, PRODUCTION):
        for job in build_definitions(load_settings(environ)).resolve_all_job_defs():
            if not job.name.startswith("__"):  # Dagster's implicit asset job
                found.setdefault(job.name, job)
    return found


def _run_tags(job: dg.JobDefinition) -> dict[str, str]:
    return {key: str(value) for key, value in job.run_tags.items()}


JOB_NAMES = sorted(_jobs())


@pytest.mark.parametrize("name", JOB_NAMES)
def test_every_job_has_its_stages_size_a_fargate_size(name: str) -> None:
    run_tags = _run_tags(_jobs()[name])
    stage = run_tags.get(tags.STAGE)
    assert stage in tags.RUN_SIZES, f"{name}: its stage {stage!r} has no size in RUN_SIZES"
    size = tags.RUN_SIZES[stage]
    assert (run_tags.get(tags.ECS_CPU), run_tags.get(tags.ECS_MEMORY)) == (
        str(size.cpu),
        str(size.memory),
    ), f"{name}: tag it with tags.job_tags({stage!r}, ...)"
    assert is_fargate_size(int(run_tags[tags.ECS_CPU]), int(run_tags[tags.ECS_MEMORY]))


@pytest.mark.parametrize("name", JOB_NAMES)
def test_every_job_has_a_maximum_runtime(name: str) -> None:
    runtime = _run_tags(_jobs()[name]).get(tags.MAX_RUNTIME)
    assert runtime is not None and 0 < int(runtime) <= 4 * 3600


@pytest.mark.parametrize("stage", sorted(tags.RUN_SIZES))
def test_each_stage_size_is_a_valid_kubernetes_pod_size(stage: str) -> None:
    run_tags = tags.RUN_SIZES[stage].tags()
    config = get_user_defined_k8s_config(run_tags)  # dagster-k8s's own validation
    resources = k8s_model_from_dict(
        kubernetes.client.V1ResourceRequirements, config.container_config["resources"]
    )
    size = tags.RUN_SIZES[stage]
    assert resources.requests == {
        "cpu": f"{size.cpu * 1000 // 1024}m",
        "memory": f"{size.memory}Mi",
    }
    assert resources.limits == {"memory": f"{size.memory}Mi"}
    assert json.loads(run_tags[tags.K8S_CONFIG]) == {
        "container_config": {"resources": config.container_config["resources"]}
    }


def test_the_sizes_are_fargate_sizes_and_a_wrong_one_is_caught() -> None:
    assert all(is_fargate_size(s.cpu, s.memory) for s in tags.RUN_SIZES.values())
    assert not is_fargate_size(256, 4096)
    assert not is_fargate_size(1024, 1024)
    assert not is_fargate_size(300, 1024)


def test_the_run_launcher_gives_each_job_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """What dagster-aws asks ECS for, from a run of each job (the task overrides)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        ecs = boto3.client("ecs", region_name="us-east-1")
        family = ecs.register_task_definition(**task_definition("run"))["taskDefinition"]
        launcher = EcsRunLauncher(
            inst_data=None, task_definition=family["taskDefinitionArn"], secrets_tag=None
        )
        for name, job in _jobs().items():
            run = dg.DagsterRun(job_name=name, tags=_run_tags(job))
            context = EcsContainerContext.create_for_run(run, launcher)
            size = tags.RUN_SIZES[run.tags[tags.STAGE]]
            assert launcher.get_cpu_and_memory_overrides(context, run) == {
                "cpu": str(size.cpu),
                "memory": str(size.memory),
            }, name


def _documented_retries() -> dict[str, int]:
    """The jobs (and retries) of the table in docs/deployment.md's "Run retries" section."""
    table = section(DEPLOYMENT_DOC.read_text(), "Run retries")
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \|", table, flags=re.MULTILINE)
    return {name: int(retries) for name, retries in rows}


def _retried_jobs() -> dict[str, int]:
    return {
        name: int(_run_tags(job)[tags.MAX_RETRIES])
        for name, job in _jobs().items()
        if int(_run_tags(job).get(tags.MAX_RETRIES, "0")) > 0
    }


def test_the_retried_jobs_are_the_documented_ones() -> None:
    documented = _documented_retries()
    assert documented, "docs/deployment.md lists no retried job"
    assert _retried_jobs() == documented


def test_batch_runs_are_never_retried() -> None:
    """A proofing or mailing run's batch comes back through its lease, and recovery fails the
    run itself: a retry would compete with the run recovery launches."""
    assert "proofing_job" not in _retried_jobs()
    assert "mailing_job" not in _retried_jobs()


def test_only_a_lost_worker_is_retried(tmp_path: Path) -> None:
    """Dagster's own retry decision under the production instance's run_retries: a run of a
    documented job is retried when it failed without an op failing, never after an op
    failure; a run of any other job is never retried."""
    documented = _documented_retries()
    with dg.instance_for_test(
        overrides={"run_retries": load_yaml(PRODUCTION_INSTANCE)["run_retries"]},
        temp_dir=str(tmp_path),
    ) as instance:
        for name, job in _jobs().items():
            retried = name in documented
            if retried:
                assert _run_tags(job)[tags.RETRY_ON_OP_FAILURE] == "false", name
            for reason, expected in (
                (RunFailureReason.RUN_WORKER_RESTART, retried),
                (RunFailureReason.UNEXPECTED_TERMINATION, retried),
                (RunFailureReason.STEP_FAILURE, False),
            ):
                run = instance.add_run(
                    dg.DagsterRun(
                        job_name=name, tags=_run_tags(job), status=dg.DagsterRunStatus.STARTED
                    )
                )
                instance.report_run_failed(run)
                failed = instance.get_run_by_id(run.run_id)
                assert failed is not None
                decision = auto_reexecution_should_retry_run(instance, failed, reason)
                assert decision is expected, (name, reason)


def _jobs_in(markdown: str) -> Iterator[str]:
    yield from re.findall(r"`(\w+_job)`", markdown)


def test_the_documentation_names_only_real_jobs() -> None:
    unknown = set(_jobs_in(DEPLOYMENT_DOC.read_text())) - set(_jobs())
    assert not unknown


def test_status_runs_go_first_in_the_run_queue_and_only_they() -> None:
    """The run queue takes higher ``dagster/priority`` first: a status run (the printers'
    webhooks, every recipient's delivery state) must not wait behind a quarter-hour's
    scheduled runs, and no other stage jumps the queue."""
    priorities = {
        name: (_run_tags(job)[tags.STAGE], int(_run_tags(job).get(tags.PRIORITY, "0")))
        for name, job in _jobs().items()
    }
    status = {name: p for name, (stage, p) in priorities.items() if stage == "status"}
    others = {name: p for name, (stage, p) in priorities.items() if stage != "status"}
    assert status and all(p > 0 for p in status.values()), status
    assert all(p == 0 for p in others.values()), others


@pytest.mark.parametrize("instance", ["dagster.yaml", "deploy/dagster.production.yaml"])
def test_status_runs_cannot_crowd_out_the_others(instance: str) -> None:
    """Going first is safe because the status stage holds at most a small share of the
    run slots (one run locally, two in production)."""
    runs = load_yaml(Path(__file__).resolve().parents[2] / instance)["concurrency"]["runs"]
    limits = {
        entry["value"]: entry["limit"]
        for entry in runs["tag_concurrency_limits"]
        if entry["key"] == tags.STAGE and isinstance(entry.get("value"), str)
    }
    assert limits["status"] <= 2
    assert limits["status"] * 4 <= runs["max_concurrent_runs"]
