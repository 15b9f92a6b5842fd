"""Apply the Alembic migrations programmatically (``mail-pipeline migrate`` calls this).

``upgrade(url, environment)`` takes the kind of environment the migrating process serves:
it refuses a database stamped for a kind that process must not use, migrates, then stamps an
unstamped database with that kind (``db.environment``). Migrating twice changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from mail_pipeline.db.engine import normalize_url
from mail_pipeline.db.environment import check_before_migration, stamp_after_migration
from mail_pipeline.domain.environments import Environment

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = normalize_url(url)
    return config


def upgrade(
    url: str, environment: Environment, revision: str = "head", *, stamped_by: str | None = None
) -> None:
    """Migrate ``url`` to ``revision`` on behalf of a ``environment``-kind process."""
    check_before_migration(url, environment)
    command.upgrade(alembic_config(url), revision)
    stamp_after_migration(url, environment, stamped_by)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
