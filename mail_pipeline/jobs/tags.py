"""Run tags, the same names everywhere: dagster.yaml limits, sensors, the UI's run filters.

Every job is tagged by :func:`job_tags`: its stage (the run queue's limits), its maximum
runtime, the size of its run's task or pod (:data:`RUN_SIZES`, one per stage) and, for the few
jobs whose re-execution is safe and useful, automatic retries when the run's worker was lost
(``docs/deployment.md`` lists them and says why).
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

STAGE = "mail_pipeline/stage"
ORGANIZATION = "mail_pipeline/organization"
#: One sync per organization at a time (dagster.yaml: applyLimitPerUniqueValue).
SYNC_ORG = "mail_pipeline/sync_org"
BATCH = "mail_pipeline/batch"
REQUESTED_BY = "mail_pipeline/requested_by"
REASON = "mail_pipeline/reason"
#: Stops a run whose process hung; run monitoring enforces it.
MAX_RUNTIME = "dagster/max_runtime"
#: How many times the daemon launches a failed run again (``run_retries`` in the instance).
MAX_RETRIES = "dagster/max_retries"
#: ``false``: a run is retried only when it failed without an op failing (its worker was lost).
RETRY_ON_OP_FAILURE = "dagster/retry_on_asset_or_op_failure"
#: The run queue takes queued runs with a higher priority first (FIFO among equals).
PRIORITY = "dagster/priority"
#: The run queue's priority, by stage (others 0). Status runs apply the printers' webhooks,
#: so every recipient's delivery state waits for a slot whenever they do: a quarter-hour's
#: scheduled runs (syncs, orders, analytics) once held the queue for minutes during a
#: mailing burst. Status runs cannot crowd others out: their stage runs one at a time
#: (two in production).
PRIORITIES: Mapping[str, int] = MappingProxyType({"status": 1})
#: The run's Fargate task size on ECS (CPU units, MiB), read by dagster-aws's EcsRunLauncher.
ECS_CPU = "ecs/cpu"
ECS_MEMORY = "ecs/memory"
#: The run pod's container config on Kubernetes, read by dagster-k8s's K8sRunLauncher.
K8S_CONFIG = "dagster-k8s/config"
#: The New York night a nightly run is for.
NIGHT = "mail_pipeline/night"
#: Dagster's own tags on runs launched by the daemon (a schedule, a sensor, a backfill).
LAUNCHED_BY_DAGSTER = ("dagster/schedule_name", "dagster/sensor_name", "dagster/backfill")


def on_demand_problem(run_tags: Mapping[str, str], *, always: bool = False) -> str | None:
    """Why a run launched by a person (not a schedule, sensor or backfill) may not start:
    it must say who asked and why (``requested_by`` and ``reason`` tags), so the Runs page
    answers both. ``None`` when it may. With ``always`` (a decision only a person takes,
    such as approving an upload) the tags are required whoever launched the run."""
    if not always and any(run_tags.get(key) for key in LAUNCHED_BY_DAGSTER):
        return None
    missing = [key for key in (REQUESTED_BY, REASON) if not (run_tags.get(key) or "").strip()]
    if not missing:
        return None
    return (
        "an on-demand run must say who asked for it and why: launch it with the tags "
        + " and ".join(missing)
        + ' (e.g. --tags \'{"mail_pipeline/requested_by": "ana@ops", '
        + '"mail_pipeline/reason": "campaign fixed"}\')'
    )


def batch_tags(stage: str, organization_id: int, batch_id: str) -> dict[str, str]:
    return {STAGE: stage, ORGANIZATION: str(organization_id), BATCH: batch_id}


def sync_tags(organization_id: int, requested_by: str, reason: str = "") -> dict[str, str]:
    tags = {
        STAGE: "sync",
        ORGANIZATION: str(organization_id),
        SYNC_ORG: str(organization_id),
        REQUESTED_BY: requested_by,
    }
    if reason:
        tags[REASON] = reason
    return tags


def tag(tags: Mapping[str, str], key: str) -> str | None:
    return tags.get(key)


@dataclass(frozen=True)
class RunSize:
    """What one run gets: ``cpu`` in ECS CPU units (1024 = one vCPU) and ``memory`` in MiB, a
    Fargate CPU/memory pair. On Kubernetes the same numbers are the pod's requests, and the
    memory its limit (no CPU limit: a run may use an idle core rather than be throttled)."""

    cpu: int
    memory: int

    def tags(self) -> dict[str, str]:
        millicores = self.cpu * 1000 // 1024
        memory = f"{self.memory}Mi"
        resources = {
            "requests": {"cpu": f"{millicores}m", "memory": memory},
            "limits": {"memory": memory},
        }
        return {
            ECS_CPU: str(self.cpu),
            ECS_MEMORY: str(self.memory),
            K8S_CONFIG: json.dumps({"container_config": {"resources": resources}}),
        }


#: The size of a run, by stage. Runs that wait on vendors (sync, proofing, mailing, queues,
#: lifecycle) are small; runs that hold frames, files or charts in memory (uploads,
#: attribution, the daily metrics and reports) get a core and 4 GiB.
RUN_SIZES: Mapping[str, RunSize] = MappingProxyType(
    {
        "sync": RunSize(cpu=512, memory=2048),
        "proofing": RunSize(cpu=512, memory=2048),
        "mailing": RunSize(cpu=512, memory=1024),
        "status": RunSize(cpu=256, memory=1024),
        "maintenance": RunSize(cpu=256, memory=1024),
        "lifecycle": RunSize(cpu=256, memory=1024),
        "orders": RunSize(cpu=512, memory=2048),
        "uploads": RunSize(cpu=1024, memory=4096),
        "attribution": RunSize(cpu=1024, memory=4096),
        "analytics": RunSize(cpu=1024, memory=4096),
    }
)


def job_tags(stage: str, *, max_runtime: int, retries: int = 0) -> dict[str, str]:
    """The tags of a job of ``stage``: the stage, the maximum runtime in seconds, the run's
    size, its priority in the run queue (:data:`PRIORITIES`), and, with ``retries``, how
    many times a run that failed without an op failing (its task or pod stopped, its host
    went away, it never started) is launched again. A failure an op reported (a vendor
    refused, an organization failed) is never retried: the next tick, or a person,
    decides."""
    job = {STAGE: stage, MAX_RUNTIME: str(max_runtime), **RUN_SIZES[stage].tags()}
    if PRIORITIES.get(stage):
        job[PRIORITY] = str(PRIORITIES[stage])
    if retries:
        job[MAX_RETRIES] = str(retries)
        job[RETRY_ON_OP_FAILURE] = "false"
    return job
