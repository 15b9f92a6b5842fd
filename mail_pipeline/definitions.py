"""The composition root: the one ``Definitions`` of the ``mail_pipeline`` code location.

The environment is read once (``settings.load_settings``) and decides the resource set:
sandboxes and SQLite locally and in tests, PostgreSQL and real vendors in production, where
every secret is a ``dg.EnvVar`` resolved when a run launches. Building the definitions opens
no file, database or socket.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from mail_pipeline.jobs.demo import demo_data_job
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.sandbox import SandboxState
from mail_pipeline.settings import Environment, Settings, load_settings


def resources_for(settings: Settings) -> dict[str, Any]:
    if settings.environment is Environment.PRODUCTION:
        return {"database": Database(url=dg.EnvVar("MAIL_PIPELINE_DATABASE_URL"))}
    return {
        "database": Database(url=settings.database_url),
        "sandbox": SandboxState(path=str(settings.sandbox_path)),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    jobs: list[Any] = []
    if settings.environment is not Environment.PRODUCTION:
        jobs.append(demo_data_job)
    return dg.Definitions(jobs=jobs, resources=resources_for(settings))


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
