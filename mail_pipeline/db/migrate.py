"""Apply the Alembic migrations programmatically (``mail-pipeline migrate`` calls this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from mail_pipeline.db.engine import normalize_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = normalize_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
