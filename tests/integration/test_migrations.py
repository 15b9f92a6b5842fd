"""The migrations build exactly the models' schema, and run down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from mail_pipeline.db.engine import dispose_engine, engine_for
from mail_pipeline.db.migrate import downgrade, upgrade
from mail_pipeline.db.models import Base

VERSION_TABLE = "mail_pipeline_alembic_version"


def _diff(url: str) -> list[object]:
    with engine_for(url).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, Base.metadata))


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    assert _diff(db_url) == []


def test_downgrade_and_upgrade_round_trip(db_url: str) -> None:
    downgrade(db_url, "base")
    dispose_engine(db_url)
    tables = set(inspect(engine_for(db_url)).get_table_names())
    assert tables <= {"mail_pipeline_alembic_version"}
    upgrade(db_url)
    dispose_engine(db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine_for(db_url)).get_table_names())
    assert _diff(db_url) == []
