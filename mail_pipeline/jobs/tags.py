"""Run tags, the same names everywhere: dagster.yaml limits, sensors, the UI's run filters."""

from collections.abc import Mapping

STAGE = "mail_pipeline/stage"
ORGANIZATION = "mail_pipeline/organization"
#: One sync per organization at a time (dagster.yaml: applyLimitPerUniqueValue).
SYNC_ORG = "mail_pipeline/sync_org"
BATCH = "mail_pipeline/batch"
REQUESTED_BY = "mail_pipeline/requested_by"
REASON = "mail_pipeline/reason"
#: Stops a run whose process hung; run monitoring enforces it.
MAX_RUNTIME = "dagster/max_runtime"
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
