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
