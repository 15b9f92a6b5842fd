"""The composition root: the one ``Definitions`` of the ``mail_pipeline`` code location.

The environment is read once (``settings.load_settings``) and decides the resource set:
sandboxes and SQLite locally and in tests, PostgreSQL, SQS and the real vendors in
production, where every secret is a ``dg.EnvVar`` resolved when a run launches. Building the
definitions opens no file, database or socket.
"""

import os
from typing import Any

import dagster as dg

from mail_pipeline.jobs.demo import demo_data_job
from mail_pipeline.jobs.pipeline import mailing_job, proofing_job
from mail_pipeline.jobs.queues import image_cleanup_job, mail_status_job
from mail_pipeline.jobs.sync import sync_organization_job
from mail_pipeline.resources.billing import SandboxBilling, StripeBilling
from mail_pipeline.resources.cdp import KlaviyoCdp, SandboxCdp
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.images import CloudflareImageHost, SandboxImageHost
from mail_pipeline.resources.printing import LivePrinters, SandboxPrinters
from mail_pipeline.resources.queues import LocalQueues, SqsQueues
from mail_pipeline.resources.rendering import GATEWAY_URL, LiveRendering, SandboxRendering
from mail_pipeline.resources.sandbox import SandboxState
from mail_pipeline.sensors.pipeline import (
    image_cleanup_sensor,
    mail_status_sensor,
    mailing_sensor,
    proofing_sensor,
    stale_claims_sensor,
)
from mail_pipeline.sensors.sandbox import sandbox_printer_webhooks
from mail_pipeline.sensors.sync import manual_sync_sensor, recipient_sync_schedule
from mail_pipeline.settings import Environment, Settings, load_settings

JOBS = [sync_organization_job, proofing_job, mailing_job, mail_status_job, image_cleanup_job]
SCHEDULES = [recipient_sync_schedule]
SENSORS = [
    manual_sync_sensor,
    proofing_sensor,
    mailing_sensor,
    mail_status_sensor,
    image_cleanup_sensor,
    stale_claims_sensor,
]


def _optional_env(name: str) -> dg.EnvVar | None:
    """A secret that may be absent (a printer the deployment does not use)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def production_resources() -> dict[str, Any]:
    return {
        "database": Database(url=dg.EnvVar("MAIL_PIPELINE_DATABASE_URL")),
        "cdp": KlaviyoCdp(),
        "rendering": LiveRendering(
            gateway_url=os.environ.get("RENDER_GATEWAY_URL", GATEWAY_URL),
            gateway_token=_optional_env("RENDER_GATEWAY_TOKEN"),
            pixelixe_api_key=_optional_env("PIXELIXE_API_KEY"),
            fallback_order=os.environ.get("RENDER_FALLBACK_ORDER", "gateway,backup").split(","),
        ),
        "image_host": CloudflareImageHost(
            account_id=dg.EnvVar("CLOUDFLARE_ACCOUNT_ID"),
            api_token=dg.EnvVar("CLOUDFLARE_IMAGES_TOKEN"),
            account_hash=dg.EnvVar("CLOUDFLARE_ACCOUNT_HASH"),
        ),
        "printers": LivePrinters(
            lob_api_key=_optional_env("LOB_API_KEY"),
            lob_webhook_secret=_optional_env("LOB_WEBHOOK_SECRET"),
            stannp_api_key=_optional_env("STANNP_API_KEY"),
            stannp_webhook_secret=_optional_env("STANNP_WEBHOOK_SECRET"),
            intelliprint_api_key=_optional_env("INTELLIPRINT_API_KEY"),
            intelliprint_webhook_secret=_optional_env("INTELLIPRINT_WEBHOOK_SECRET"),
            test_mode=os.environ.get("MAIL_PIPELINE_PRINTERS_TEST_MODE", "") == "1",
        ),
        "billing": StripeBilling(api_key=dg.EnvVar("STRIPE_API_KEY")),
        "queues": SqsQueues(
            status_queue_url=dg.EnvVar("MAIL_STATUS_QUEUE_URL"),
            image_deletion_queue_url=dg.EnvVar("IMAGE_DELETION_QUEUE_URL"),
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
        ),
    }


def sandbox_resources(settings: Settings) -> dict[str, Any]:
    sandbox = str(settings.sandbox_path)
    return {
        "database": Database(url=settings.database_url),
        "sandbox": SandboxState(path=sandbox),
        "cdp": SandboxCdp(sandbox_path=sandbox, latency_seconds=0.05),
        "rendering": SandboxRendering(
            sandbox_path=sandbox,
            latency_seconds=0.1,
            failure_rate=0.05,
            fallback_order=["gateway", "pixelixe", "backup"],
        ),
        "image_host": SandboxImageHost(
            sandbox_path=sandbox,
            image_dir=str(settings.image_dir),
            public_base_url=settings.image_base_url,
            latency_seconds=0.05,
        ),
        "printers": SandboxPrinters(sandbox_path=sandbox, latency_seconds=0.1),
        "billing": SandboxBilling(sandbox_path=sandbox, latency_seconds=0.05),
        "queues": LocalQueues(path=str(settings.queue_path)),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    if settings.environment is Environment.PRODUCTION:
        return dg.Definitions(
            jobs=JOBS, schedules=SCHEDULES, sensors=SENSORS, resources=production_resources()
        )
    return dg.Definitions(
        jobs=[*JOBS, demo_data_job],
        schedules=SCHEDULES,
        sensors=[*SENSORS, sandbox_printer_webhooks],
        resources=sandbox_resources(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
