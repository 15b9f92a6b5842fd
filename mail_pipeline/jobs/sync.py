"""The recipient sync as a job: one run per organization (schedule, manual trigger, or CLI).

Launch one for an organization, or some of its campaigns, from the CLI (the sync_org tag
keeps two syncs of one organization from overlapping; the op refuses to run without it):

    dagster job launch -w workspace.yaml -j sync_organization_job \\
      --config-json '{"ops": {"sync_recipients": {"config": {"organization_id": 1,
                       "campaign_ids": [2]}}}}' \\
      --tags '{"mail_pipeline/sync_org": "1", "mail_pipeline/requested_by": "ana@ops",
               "mail_pipeline/reason": "segment fixed"}'
"""

from functools import partial

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import counts
from mail_pipeline.jobs.runs import check_launch, run_has_ended
from mail_pipeline.resources.cdp import CdpResource
from mail_pipeline.resources.database import Database
from mail_pipeline.services.manual_sync import sync_for_request
from mail_pipeline.services.sync import SyncSettings, sync_organization


class SyncConfig(dg.Config):
    organization_id: int
    #: Only these campaigns (default: all of the organization's sync candidates).
    campaign_ids: list[int] = []
    #: The manual "sync now" request this run answers, if any.
    manual_trigger_id: int | None = None


@dg.op(tags={"kind": "sync"})
def sync_recipients(
    context: dg.OpExecutionContext, config: SyncConfig, database: Database, cdp: CdpResource
) -> dg.Output[None]:
    """Turn the organization's segment profiles into recipients, campaign by campaign."""
    sync_org = context.run.tags.get(tags.SYNC_ORG)
    if sync_org != str(config.organization_id):
        raise dg.Failure(
            description=f"launch this job with the tag {tags.SYNC_ORG}="
            f"{config.organization_id}, so that two syncs of one organization "
            "never run at once (cross-campaign exclusion depends on it)"
        )
    check_launch(context)
    campaign_ids = config.campaign_ids or None
    if config.manual_trigger_id is not None:
        result = sync_for_request(
            database.session,
            cdp,
            config.manual_trigger_id,
            context.run_id,
            config.organization_id,
            campaign_ids,
            holder_gone=partial(run_has_ended, context.instance),
        )
    else:
        result = sync_organization(
            database.session,
            cdp,
            config.organization_id,
            SyncSettings(
                holder=f"run:{context.run_id}",
                holder_gone=partial(run_has_ended, context.instance),
            ),
            campaign_ids=campaign_ids,
        )
    problems = result.problems
    table = ["| campaign | outcome | profiles | created | detail |", "|---|---|---|---|---|"]
    for c in result.campaigns:
        created = ", ".join(f"{k} {v}" for k, v in sorted(c.created.items())) or "-"
        table.append(
            f"| {c.campaign_name} ({c.campaign_id}) | {c.outcome} | "
            f"{c.profiles_seen} | {created} | {c.detail or ''} |"
        )
    rejected = [r for c in result.campaigns for r in c.rejected]
    for line in rejected[:20]:
        context.log.warning("profile rejected: %s", line)
    metadata = {
        "organization_id": config.organization_id,
        "campaigns": dg.MetadataValue.md("\n".join(table)),
        "profiles_rejected": len(rejected),
        **counts({f"created_{k}": v for k, v in result.created.items()}),
    }
    if problems:
        # The other campaigns' recipients are committed; the run turns red so the
        # misconfiguration or failure is seen in the UI.
        raise dg.Failure(
            description="; ".join(
                f"{p.campaign_name} ({p.campaign_id}): {p.detail}" for p in problems
            ),
            metadata=metadata,
            allow_retries=False,
        )
    return dg.Output(None, metadata=metadata)


@dg.job(
    tags=tags.job_tags("sync", max_runtime=1800),
    description="Sync CDP segment profiles into recipients for one organization.",
)
def sync_organization_job() -> None:
    sync_recipients()
