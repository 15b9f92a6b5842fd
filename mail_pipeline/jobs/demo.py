"""Seeding the demo data from the Dagster UI or CLI (local and test environments only)."""

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.sandbox import SandboxState
from mail_pipeline.services.demo import seed_demo


@dg.op
def seed_demo_data(
    context: dg.OpExecutionContext, database: Database, sandbox: SandboxState
) -> dg.Output[None]:
    """Migrate the database, then create or refresh the demo brands, campaigns and sandbox
    CDP segments. Idempotent: a second run changes nothing."""
    database.migrate()
    with database.session() as session:
        summary = seed_demo(session, sandbox.store())
    context.log.info("demo data seeded: %s", summary)
    return dg.Output(
        None,
        metadata={
            "organizations": summary.organizations,
            "campaigns": summary.campaigns,
            "sandbox_profiles": summary.profiles,
            "new_blocklist_entries": summary.blocklist_entries,
            "segments": dg.MetadataValue.json(summary.segments),
        },
    )


@dg.job(
    tags=tags.job_tags("maintenance", max_runtime=900),
    description="Migrate the app database and seed the demo brands (local/test only).",
)
def demo_data_job() -> None:
    seed_demo_data()
