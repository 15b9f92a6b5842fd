"""The migrations build exactly the models' schema, and run down and up again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from mail_pipeline.db.engine import dispose_engine, engine_for, unit_of_work
from mail_pipeline.db.migrate import downgrade, upgrade
from mail_pipeline.db.models import Base, BatchLease
from mail_pipeline.domain.claims import ClaimStage
from mail_pipeline.domain.environments import Environment

VERSION_TABLE = "mail_pipeline_alembic_version"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


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
    upgrade(db_url, Environment.TEST)
    dispose_engine(db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine_for(db_url)).get_table_names())
    assert _diff(db_url) == []


def test_batches_claimed_before_leases_existed_get_a_lease(db_url: str) -> None:
    """Upgrading while batches are claimed: each gets a lease expiring after a run's maximum
    runtime, held by the run that holds its recipients, so recovery can later return it."""
    downgrade(db_url, "0002")
    dispose_engine(db_url)
    claimed = [
        ("ProofingStaged", "proofingstaged-a", None),
        ("Proofing", "proofingstaged-a", "run-a"),
        ("Sending", "sendingstaged-b", "run-b"),
        ("Pending", None, None),
    ]
    with engine_for(db_url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO organizations (id, name, slug, status, country, csm_cadence, "
                "auto_commit_uploads, timezone, created_at, updated_at) VALUES (7, 'Org', 'org', "
                "'active', 'US', 'weekly', false, 'America/New_York', :t, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO campaigns (id, organization_id, name, campaign_mode, status, design, "
                "postage, holdout_percentage, attribution_window_days, created_at, updated_at) "
                "VALUES (3, 7, 'C', 'automated', 'Active', '{}', 'first_class', 0, 30, :t, :t)"
            ),
            {"t": NOW},
        )
        for status, batch, run in claimed:
            conn.execute(
                text(
                    "INSERT INTO recipients (organization_id, campaign_id, status, "
                    "status_changed_at, source, attempts, properties, batch_id, claimed_by_run, "
                    "created_at, updated_at) VALUES (7, 3, :s, :t, 'cdp', 1, '{}', :b, :r, :t, :t)"
                ),
                {"s": status, "t": NOW, "b": batch, "r": run},
            )
    before = datetime.now(UTC)

    upgrade(db_url, Environment.TEST)
    dispose_engine(db_url)

    with unit_of_work(db_url) as session:
        leases = {lease.batch_id: lease for lease in session.scalars(select(BatchLease))}
    assert set(leases) == {"proofingstaged-a", "sendingstaged-b"}
    assert (leases["proofingstaged-a"].stage, leases["proofingstaged-a"].holder) == (
        ClaimStage.PROOFING,
        "run-a",
    )
    assert (leases["sendingstaged-b"].stage, leases["sendingstaged-b"].holder) == (
        ClaimStage.MAILING,
        "run-b",
    )
    for lease in leases.values():
        assert lease.organization_id == 7
        assert before + timedelta(minutes=14) < lease.expires_at < before + timedelta(minutes=16)
