"""Fixtures of the reliability suites.

Each suite keeps its fixtures in its own section, named with its prefix, so suites do not
collide.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from mail_pipeline.db.engine import dispose_engine
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.domain.environments import Environment
from tests.reliability.pg_cluster import ClusterError, PrivateCluster, unavailable_reason

# -- database faults (test_database_faults.py): a private PostgreSQL server ------------------

#: The migrated database every test database of the private server is copied from.
DBFAULTS_TEMPLATE = "mp_faults_template"


@pytest.fixture(scope="session")
def dbfaults_cluster() -> Iterator[PrivateCluster]:
    """A private PostgreSQL server (one per test process), with a migrated template database.

    Tests may stop, restart or crash it; the machine's shared server is never touched. Skips,
    saying why, where no private server can be started (no server binaries, or running as
    root with no ``postgres`` user to run ``initdb`` as)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"no private PostgreSQL server: {reason}")
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(PrivateCluster.running())
        except ClusterError as exc:
            pytest.skip(f"no private PostgreSQL server: initdb/pg_ctl are not usable here: {exc}")
        cluster.create_database(DBFAULTS_TEMPLATE)
        template_url = cluster.url(DBFAULTS_TEMPLATE)
        upgrade(template_url, Environment.TEST)
        dispose_engine(template_url)
        yield cluster


@pytest.fixture
def dbfaults_pg_url(dbfaults_cluster: PrivateCluster) -> Iterator[str]:
    """A new, migrated app database on the private server, for one test; the server is up
    when the test starts and is left up (a test that failed while it was down is forgiven)."""
    if not dbfaults_cluster.is_up():
        dbfaults_cluster.start()
    name = f"mp_faults_{uuid.uuid4().hex[:10]}"
    dbfaults_cluster.create_database(name, template=DBFAULTS_TEMPLATE)
    url = dbfaults_cluster.url(name)
    yield url
    dispose_engine(url)
    if not dbfaults_cluster.is_up():
        dbfaults_cluster.start()
    dbfaults_cluster.drop_database(name)
