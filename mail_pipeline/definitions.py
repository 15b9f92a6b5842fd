"""The composition root: the one ``Definitions`` of the ``mail_pipeline`` code location.

The environment is read once (``settings.load_settings``) and decides the resource set:
sandboxes and SQLite locally and in tests, PostgreSQL, SQS and the real vendors in
production, where every platform secret is a ``dg.EnvVar`` resolved when a run launches and
every organization's secret is read from AWS Secrets Manager under its own path.

Production fails closed: before anything is bound, ``settings.check_production`` judges the
environment and raises one error listing every problem (missing settings, a printer without
its webhook secret, test credentials or sandbox settings outside a declared staging
deployment), so ``dagster definitions validate`` and the code server refuse to start. A
staging deployment (``MAIL_PIPELINE_STAGING=1``) says so on every job: its description starts
with ``STAGING`` and it carries the ``mail_pipeline/deployment: staging`` tag, which every run
launched from it inherits (the Runs page shows it).

Building the definitions opens no file, database or socket.
"""

from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from mail_pipeline.assets import attribution as attribution_assets
from mail_pipeline.assets import metrics as metric_assets
from mail_pipeline.assets import orders as order_assets
from mail_pipeline.assets import reports as report_assets
from mail_pipeline.assets import sources as source_assets
from mail_pipeline.jobs import (
    address_enrichment,
    lifecycle,
    profile_enrichment,
    reporting_sync,
    uploads,
)
from mail_pipeline.jobs.audits import audit_job
from mail_pipeline.jobs.demo import demo_data_job
from mail_pipeline.jobs.pipeline import mailing_job, proofing_job
from mail_pipeline.jobs.queues import image_cleanup_job, mail_status_job
from mail_pipeline.jobs.sync import sync_organization_job
from mail_pipeline.resources.billing import SandboxBilling, StripeBilling
from mail_pipeline.resources.cdp import KlaviyoCdp, SandboxCdp
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.enrichment import (
    FaradayAddressEnrichment,
    SandboxAddressEnrichment,
)
from mail_pipeline.resources.images import CloudflareImageHost, SandboxImageHost
from mail_pipeline.resources.notifications import (
    EmailNotifications,
    NotificationResource,
    OutboxNotifications,
    SlackNotifications,
)
from mail_pipeline.resources.orders import LiveOrderSources, SandboxOrderSources
from mail_pipeline.resources.printing import LivePrinters, SandboxPrinters
from mail_pipeline.resources.queues import LocalQueues, SqsQueues
from mail_pipeline.resources.rendering import GATEWAY_URL, LiveRendering, SandboxRendering
from mail_pipeline.resources.reports import OutboxReportEmail, SesReportEmail
from mail_pipeline.resources.sandbox import SandboxState
from mail_pipeline.resources.uploads import LocalUploads, S3Uploads
from mail_pipeline.sensors import reports as report_sensors
from mail_pipeline.sensors.alerts import run_failure_alerts
from mail_pipeline.sensors.audits import audit_sensor
from mail_pipeline.sensors.pipeline import (
    image_cleanup_sensor,
    mail_status_sensor,
    mailing_sensor,
    proofing_sensor,
    stale_claims_sensor,
)
from mail_pipeline.sensors.sandbox import (
    sandbox_enrichment_kickoff,
    sandbox_printer_webhooks,
    sandbox_shoppers,
)
from mail_pipeline.sensors.sync import manual_sync_sensor, recipient_sync_schedule
from mail_pipeline.settings import (
    DATABASE_URL_VAR,
    Environment,
    EnvVarRef,
    Settings,
    check_production,
    load_settings,
)

#: The data half: orders, attribution, daily metrics and campaign results.
ASSET_MODULES = [source_assets, order_assets, attribution_assets, metric_assets, report_assets]
ASSETS = [a for m in ASSET_MODULES for a in m.ASSETS]
ASSET_CHECKS = [c for m in ASSET_MODULES for c in getattr(m, "ASSET_CHECKS", [])]

JOBS = [
    sync_organization_job,
    proofing_job,
    mailing_job,
    mail_status_job,
    image_cleanup_job,
    audit_job,
    *lifecycle.JOBS,
    *uploads.JOBS,
    *address_enrichment.JOBS,
    *reporting_sync.JOBS,
    *profile_enrichment.JOBS,
    *report_sensors.JOBS,
    *(j for m in ASSET_MODULES for j in getattr(m, "JOBS", [])),
]
SCHEDULES = [
    recipient_sync_schedule,
    *lifecycle.SCHEDULES,
    *address_enrichment.SCHEDULES,
    *reporting_sync.SCHEDULES,
    *profile_enrichment.SCHEDULES,
    *(s for m in ASSET_MODULES for s in getattr(m, "SCHEDULES", [])),
]
SENSORS = [
    manual_sync_sensor,
    proofing_sensor,
    mailing_sensor,
    mail_status_sensor,
    image_cleanup_sensor,
    audit_sensor,
    stale_claims_sensor,
    run_failure_alerts,
    *uploads.SENSORS,
    *address_enrichment.SENSORS,
    *report_sensors.SENSORS,
    *(s for m in ASSET_MODULES for s in getattr(m, "SENSORS", [])),
]

#: Every job's steps run in its run worker's process. A job's parallelism is inside its ops
#: (bounded thread pools over a batch), and its steps are a chain, so the multiprocess
#: executor's extra process per step would only add its start-up (seconds, and a CPU-second
#: or more) to every run; the daily metrics' year backfill is one run of two steps one after
#: the other (docs/benchmarks.md).
EXECUTOR = dg.in_process_executor

#: Run and job tag naming the kind of deployment, set on a staging deployment's jobs.
DEPLOYMENT_TAG = "mail_pipeline/deployment"
STAGING_NOTICE = (
    "STAGING deployment: test credentials and sandbox settings are allowed, so postcards may "
    "not be printed and usage may not be billed."
)


def _optional(ref: EnvVarRef) -> dg.EnvVar | None:
    """A secret that may be absent (a printer the deployment does not use)."""
    return dg.EnvVar(ref.name) if ref.is_set else None


def alert_channel(settings: Settings) -> NotificationResource:
    """Slack when its webhook is set, else email (``settings.AlertSettings``; production
    refuses to load with neither)."""
    alerts = settings.vendors.alerts
    if alerts.slack_webhook_url.is_set:
        return SlackNotifications(
            webhook_url=dg.EnvVar(alerts.slack_webhook_url.name), ui_base_url=alerts.ui_base_url
        )
    return EmailNotifications(
        host=alerts.email_host or "",
        port=alerts.email_port,
        username=alerts.email_username,
        password=_optional(alerts.email_password),
        sender=alerts.email_sender or "",
        recipients=list(alerts.email_recipients),
        starttls=alerts.email_starttls,
        ui_base_url=alerts.ui_base_url,
    )


def production_resources(settings: Settings) -> dict[str, Any]:
    vendors = settings.vendors
    lob, stannp, intelliprint = (
        vendors.printer(name) for name in ("lob", "stannp", "intelliprint")
    )
    database = Database(url=dg.EnvVar(DATABASE_URL_VAR), environment=settings.environment.value)
    return {
        "database": database,
        "cdp": KlaviyoCdp(
            secrets="secrets-manager",
            deployment=settings.deployment,
            region_name=vendors.aws_region,
        ),
        "rendering": LiveRendering(
            gateway_url=vendors.render_gateway_url or GATEWAY_URL,
            gateway_token=_optional(vendors.render_gateway_token),
            pixelixe_api_key=_optional(vendors.pixelixe_api_key),
            fallback_order=list(vendors.render_fallback_order),
        ),
        "image_host": CloudflareImageHost(
            account_id=dg.EnvVar(vendors.cloudflare_account_id.name),
            api_token=dg.EnvVar(vendors.cloudflare_images_token.name),
            account_hash=dg.EnvVar(vendors.cloudflare_account_hash.name),
            proof_id_key=dg.EnvVar(vendors.proof_image_id_key.name),
        ),
        "printers": LivePrinters(
            # the printers keep their shared rate limits in the app database (db.ratelimit)
            database_url=dg.EnvVar(DATABASE_URL_VAR),
            database_environment=settings.environment.value,
            lob_api_key=_optional(lob.api_key),
            lob_webhook_secret=_optional(lob.webhook_secret),
            stannp_api_key=_optional(stannp.api_key),
            stannp_webhook_secret=_optional(stannp.webhook_secret),
            intelliprint_api_key=_optional(intelliprint.api_key),
            intelliprint_webhook_secret=_optional(intelliprint.webhook_secret),
            test_mode=vendors.printers_test_mode,
            # staging on a sandbox server only (settings.production_problems)
            api_base_url=settings.sandbox_url,
        ),
        "billing": StripeBilling(
            api_key=dg.EnvVar(vendors.stripe_api_key.name),
            api_base=f"{settings.sandbox_url}/stripe" if settings.sandbox_url else None,
        ),
        "address_enrichment": FaradayAddressEnrichment(
            api_key=dg.EnvVar(vendors.faraday_api_key.name)
        ),
        "order_sources": LiveOrderSources(
            secrets="secrets-manager",
            deployment=settings.deployment,
            region_name=vendors.aws_region,
        ),
        "queues": SqsQueues(
            status_queue_url=dg.EnvVar(vendors.status_queue_url.name),
            image_deletion_queue_url=dg.EnvVar(vendors.image_deletion_queue_url.name),
            audit_queue_url=dg.EnvVar(vendors.audit_queue_url.name),
            report_email_events_queue_url=dg.EnvVar(vendors.report_email_events_queue_url.name),
            region_name=vendors.aws_region,
        ),
        "report_email": SesReportEmail(
            region_name=vendors.aws_region,
            configuration_set=vendors.ses_configuration_set or "",
            sender_address=vendors.report_sender or "",
            recipient_template=vendors.report_recipient_template or "",
            archive_folder=str(settings.data_dir / "reports"),
        ),
        "notifications": alert_channel(settings),
        "uploads": S3Uploads(
            s3=S3Resource(region_name=vendors.aws_region),
            bucket=vendors.uploads_bucket or "",
            prefix=vendors.uploads_prefix,
        ),
    }


#: A staging deployment on a sandbox server keeps these live resources, pointed at the
#: server (or, for the queues, SES and S3, at ``AWS_ENDPOINT_URL``, which boto3 reads itself);
#: every other vendor is the server's sandbox.
LIVE_ON_SANDBOX_SERVER = ("database", "printers", "billing", "queues", "report_email", "uploads")


def staging_on_sandbox_resources(settings: Settings) -> dict[str, Any]:
    """A staging deployment whose vendors are a sandbox server (``MAIL_PIPELINE_SANDBOX_URL``,
    the production-like mode of ``docs/operations.md``): the production bindings, with the
    real printer clients and the Stripe SDK pointed at the server's printers and Stripe;
    the CDP, renderer, image host, address enrichment and order sources are the server's
    sandboxes; run-failure alerts go to the data dir's outbox, as locally."""
    live = production_resources(settings)
    sandboxes = sandbox_resources(settings)
    return {
        **{k: v for k, v in sandboxes.items() if k not in LIVE_ON_SANDBOX_SERVER},
        **{k: v for k, v in live.items() if k in LIVE_ON_SANDBOX_SERVER},
    }


def sandbox_resources(settings: Settings) -> dict[str, Any]:
    """Local and test bindings: the sandbox vendors, in this process over the shared sandbox
    file, or over the network at ``settings.sandbox_url`` (a sandbox server on that file)."""
    sandbox = str(settings.sandbox_path)
    url = settings.sandbox_url
    database = Database(url=settings.database_url, environment=settings.environment.value)
    return {
        "database": database,
        "sandbox": SandboxState(path=sandbox),
        "cdp": SandboxCdp(sandbox_path=sandbox, sandbox_url=url, latency_seconds=0.05),
        "rendering": SandboxRendering(
            sandbox_path=sandbox,
            sandbox_url=url,
            latency_seconds=0.1,
            failure_rate=0.05,
            fallback_order=["gateway", "pixelixe", "backup"],
        ),
        "image_host": SandboxImageHost(
            sandbox_path=sandbox,
            sandbox_url=url,
            image_dir=str(settings.image_dir),
            public_base_url=settings.image_base_url,
            latency_seconds=0.05,
        ),
        "printers": SandboxPrinters(
            database_url=settings.database_url,
            database_environment=settings.environment.value,
            sandbox_path=sandbox,
            sandbox_url=url,
            latency_seconds=0.1,
        ),
        "billing": SandboxBilling(sandbox_path=sandbox, sandbox_url=url, latency_seconds=0.05),
        "order_sources": SandboxOrderSources(
            sandbox_path=sandbox, sandbox_url=url, latency_seconds=0.05
        ),
        "address_enrichment": SandboxAddressEnrichment(
            sandbox_path=sandbox, sandbox_url=url, ready_after_seconds=120.0
        ),
        "queues": LocalQueues(path=str(settings.queue_path)),
        "report_email": OutboxReportEmail(
            folder=str(settings.data_dir / "report_outbox"),
            archive_folder=str(settings.data_dir / "reports"),
        ),
        "uploads": LocalUploads(folder=str(settings.data_dir / "uploads")),
        "notifications": OutboxNotifications(
            folder=str(settings.data_dir / "outbox"),
            ui_base_url=settings.vendors.alerts.ui_base_url or "http://127.0.0.1:3000",
        ),
    }


def staging_job(job: Any) -> Any:
    """``job`` as a staging deployment shows it: the description starts with the staging
    notice and the job (so every run launched from it) is tagged ``mail_pipeline/deployment:
    staging``. Everything else is the job's own. (A materialization launched from the asset
    graph runs under Dagster's own implicit asset job, which carries no such tag.)"""
    if not isinstance(job, dg.JobDefinition):  # an asset job (``define_asset_job``)
        return dg.define_asset_job(
            name=job.name,
            selection=job.selection,
            config=job.config,
            description=f"{STAGING_NOTICE} {job.description or ''}".strip(),
            tags={**(job.tags or {}), DEPLOYMENT_TAG: "staging"},
            run_tags={**(job.run_tags or job.tags or {}), DEPLOYMENT_TAG: "staging"},
            executor_def=job.executor_def,
            hooks=job.hooks,
            op_retry_policy=job.op_retry_policy,
            **({"partitions_def": job.partitions_def} if job.partitions_def else {}),
        )
    return dg.JobDefinition(
        graph_def=job.graph,
        executor_def=job.executor_def if job.has_specified_executor else None,
        logger_defs=job.loggers if job.has_specified_loggers else None,
        name=job.name,
        config=job.partitioned_config or job.config_mapping or job.run_config,
        description=f"{STAGING_NOTICE} {job.description or ''}".strip(),
        partitions_def=None if job.partitioned_config else job.partitions_def,
        tags={**job.tags, DEPLOYMENT_TAG: "staging"},
        run_tags=(
            {**job.run_tags, DEPLOYMENT_TAG: "staging"}
            if job.has_separately_defined_run_tags
            else None
        ),
        metadata=job.metadata,
        hook_defs=job.hook_defs,
        op_retry_policy=job.op_retry_policy,
        owners=job.owners,
    )


def _production_definitions(settings: Settings) -> dg.Definitions:
    check_production(settings)
    jobs, sensors, schedules = list(JOBS), list(SENSORS), list(SCHEDULES)
    if settings.staging:
        relabelled = {job.name: staging_job(job) for job in jobs}
        jobs = list(relabelled.values())
        sensors = [
            s.with_attributes(jobs=[relabelled[j.name] for j in s.jobs]) if s.has_jobs else s
            for s in sensors
        ]
        schedules = [s.with_attributes(job=relabelled[s.job.name]) for s in schedules]
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=(
            staging_on_sandbox_resources(settings)
            if settings.sandbox_url
            else production_resources(settings)
        ),
        executor=EXECUTOR,
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    """The definitions for ``settings``; production raises ``ProductionConfigError`` listing
    every problem instead of loading an unsafe or incomplete configuration."""
    if settings.environment is Environment.PRODUCTION:
        return _production_definitions(settings)
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[*JOBS, demo_data_job],
        schedules=SCHEDULES,
        sensors=[
            *SENSORS,
            sandbox_printer_webhooks,
            sandbox_shoppers,
            sandbox_enrichment_kickoff,
            *report_assets.SANDBOX_SENSORS,
        ],
        resources=sandbox_resources(settings),
        executor=EXECUTOR,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
