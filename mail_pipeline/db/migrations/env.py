"""Alembic environment: runs migrations against the URL given by ``mail_pipeline.db.migrate``
(or ``-x url=...`` / ``MAIL_PIPELINE_DATABASE_URL`` when the ``alembic`` CLI is used)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from mail_pipeline.db.engine import engine_for, normalize_url
from mail_pipeline.db.models import Base

config = context.config
target_metadata = Base.metadata
#: Our own name, so the app can share a PostgreSQL database with Dagster's storage (which
#: keeps its Alembic revision in the default `alembic_version`).
VERSION_TABLE = "mail_pipeline_alembic_version"


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get("MAIL_PIPELINE_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set MAIL_PIPELINE_DATABASE_URL")
    return normalize_url(url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    with engine_for(_url()).connect() as conn:
        _run_on(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
