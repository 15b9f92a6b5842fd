"""Alembic environment: runs migrations against the URL given by ``mail_pipeline.db.migrate``
(or ``-x url=...`` / the settings' database URL when the ``alembic`` CLI is used).

``mail_pipeline.db.migrate.upgrade`` checks and stamps the database's environment kind around
the migration. When the ``alembic`` CLI runs instead, the same check runs here against the
process's ``MAIL_PIPELINE_ENV`` (online migrations only); the CLI does not stamp, so the
next ``mail-pipeline migrate`` does.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mail_pipeline.db.engine import engine_for, normalize_url
from mail_pipeline.db.environment import check_before_migration
from mail_pipeline.db.models import Base
from mail_pipeline.settings import current_environment, load_settings

config = context.config
target_metadata = Base.metadata
#: Our own name, so the app can share a PostgreSQL database with Dagster's storage (which
#: keeps its Alembic revision in the default `alembic_version`).
VERSION_TABLE = "mail_pipeline_alembic_version"


def _from_alembic_cli() -> bool:
    return not config.attributes.get("url")


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or load_settings().database_url
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
    url = _url()
    if _from_alembic_cli():
        check_before_migration(url, current_environment())
    with engine_for(url).connect() as conn:
        _run_on(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
