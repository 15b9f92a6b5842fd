"""Test databases.

Every test that asks for ``db_url`` gets an empty, migrated database, stamped as a test
database (``app_environment``; local-environment definitions may use it too):

- SQLite (default): a copy of a template file migrated once per session, in ``tmp_path``.
- PostgreSQL, when ``MAIL_PIPELINE_TEST_DATABASE_URL`` is set: a database created for this
  session (per xdist worker) on that server, migrated once, truncated between tests.

Tests marked ``postgres`` need PostgreSQL and are skipped, saying why, without it.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

from mail_pipeline.db.engine import dispose_engine, normalize_url
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.db.models import AppEnvironment, Base
from mail_pipeline.domain.environments import Environment

# Property tests judge behaviour, not speed (speed is for benchmarks/): no per-example deadline,
# which a loaded CI machine would turn into failures.
settings.register_profile("mail_pipeline", deadline=None)
settings.load_profile("mail_pipeline")

PG_ENV = "MAIL_PIPELINE_TEST_DATABASE_URL"
PG_SKIP = (
    f"PostgreSQL test: set {PG_ENV}=postgresql://user@host:5432/db to run it "
    "(.ci/run does this against the machine's PostgreSQL)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(PG_ENV):
        return
    skip = pytest.mark.skip(reason=PG_SKIP)
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Release a failed test's objects when the test is over.

    pytest keeps the last failure in ``sys.last_*`` (for post-mortem debugging) until the next
    test's call phase, so the failed test's frames keep its fixtures' objects alive - a closed
    Dagster instance, its SQLAlchemy engines and their event listeners - through the next
    test's setup, and they are then freed at whatever allocation triggers the garbage
    collector (such as the engine creation of the next Dagster instance). They are dropped
    and collected here instead, after the failed test's own teardown.
    """
    try:
        return (yield)
    finally:
        if hasattr(sys, "last_traceback"):
            for name in ("last_type", "last_value", "last_traceback", "last_exc"):
                if hasattr(sys, name):
                    delattr(sys, name)
            gc.collect()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    url = f"sqlite:///{path}"
    upgrade(url, Environment.TEST)
    dispose_engine(url)
    return path


@pytest.fixture(scope="session")
def _postgres_database(worker_id: str) -> Iterator[str | None]:
    server_url = os.environ.get(PG_ENV)
    if not server_url:
        yield None
        return
    admin = sa.create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"mp_test_{worker_id}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(normalize_url(server_url)).set(database=name)
    rendered = url.render_as_string(hide_password=False)
    upgrade(rendered, Environment.TEST)
    yield rendered
    dispose_engine(rendered)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def db_url(tmp_path: Path, _sqlite_template: Path, _postgres_database: str | None) -> Iterator[str]:
    """An empty, migrated app database for one test."""
    if _postgres_database is None:
        path = tmp_path / "app.sqlite"
        shutil.copy(_sqlite_template, path)
        url = f"sqlite:///{path}"
        yield url
        dispose_engine(url)
        return
    engine = sa.create_engine(_postgres_database)
    # The environment stamp stays: it is the database's, not a test's.
    tables = ", ".join(
        f'"{t.name}"' for t in Base.metadata.sorted_tables if t.name != AppEnvironment.__tablename__
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    yield _postgres_database


@pytest.fixture
def make_campaign(db_url: str):  # type: ignore[no-untyped-def]
    """Create an organization and a campaign; returns ``(organization_id, campaign_id)``."""
    from mail_pipeline.db.engine import unit_of_work
    from mail_pipeline.db.models import Campaign, Organization
    from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus

    counter = iter(range(1, 10_000))

    def make(
        country: str = "US",
        mode: CampaignMode = CampaignMode.AUTOMATED,
        status: CampaignStatus = CampaignStatus.ACTIVE,
        **campaign_fields: object,
    ) -> tuple[int, int]:
        n = next(counter)
        with unit_of_work(db_url) as session:
            org = Organization(
                name=f"Org {n}", slug=f"org-{n}-{uuid.uuid4().hex[:6]}", country=country
            )
            session.add(org)
            session.flush()
            campaign = Campaign(
                organization_id=org.id,
                name=f"Campaign {n}",
                campaign_mode=mode,
                status=status,
                **campaign_fields,
            )
            session.add(campaign)
            session.flush()
            return org.id, campaign.id

    return make


@pytest.fixture
def add_recipients(db_url: str):  # type: ignore[no-untyped-def]
    """Bulk-insert ``n`` recipients of a campaign in one status; returns their ids."""
    from mail_pipeline.db.engine import unit_of_work
    from mail_pipeline.db.models import Campaign, Recipient
    from mail_pipeline.domain.recipients import RecipientStatus

    def add(
        campaign_id: int,
        n: int,
        status: RecipientStatus = RecipientStatus.PENDING,
        **fields: object,
    ) -> list[int]:
        with unit_of_work(db_url) as session:
            org_id = session.get_one(Campaign, campaign_id).organization_id
            rows = [
                {
                    "organization_id": org_id,
                    "campaign_id": campaign_id,
                    "status": status,
                    "first_name": f"R{i}",
                    "email": f"r{i}.{uuid.uuid4().hex[:8]}@example.com",
                    **fields,
                }
                for i in range(n)
            ]
            result = session.execute(sa.insert(Recipient).returning(Recipient.id), rows)
            return sorted(result.scalars())

    return add


@pytest.fixture(autouse=True)
def _own_circuits() -> Iterator[None]:
    """Each test starts with every vendor's circuit closed: circuit breakers are per process
    (``integrations.circuit``), and a test that drives a vendor down must not leave its
    circuit open for the next test in the same worker."""
    from mail_pipeline.integrations.circuit import isolated_registry

    with isolated_registry():
        yield


@pytest.fixture(autouse=True)
def _no_leftover_defs_state_storage() -> Iterator[None]:
    """Dagster 1.13's ``DagsterInstance.__enter__`` makes the instance's definitions-state
    storage current (a context variable) and its ``__exit__`` never resets it: after a test
    that used ``with <instance>``, building any ``Definitions`` in the same thread would read
    a storage whose instance is gone ("Attempted to resolve undefined DagsterInstance
    weakref"). Each test starts and ends with none."""
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
    yield
    _current_storage.set(None)
