"""A database knows the kind of environment it serves; a process of another kind refuses it
before its first unit of work (SQLite and PostgreSQL)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from mail_pipeline import cli
from mail_pipeline.db.engine import engine_for
from mail_pipeline.db.environment import (
    DatabaseEnvironmentRefused,
    check_database_environment,
    forget_checks,
    read_stamp,
)
from mail_pipeline.db.migrate import MIGRATIONS, upgrade
from mail_pipeline.db.models import AppEnvironment
from mail_pipeline.definitions import sandbox_resources
from mail_pipeline.domain.environments import Environment
from mail_pipeline.resources.database import Database
from mail_pipeline.settings import load_settings

Restamp = Callable[[Environment | None], None]


def _stamp(url: str) -> Environment | None:
    with engine_for(url).connect() as connection:
        return read_stamp(connection)


@pytest.fixture
def restamp(db_url: str) -> Iterator[Restamp]:
    """Set (or remove, with None) the database's stamp; the test stamp comes back after."""

    def set_stamp(environment: Environment | None) -> None:
        with engine_for(db_url).begin() as connection:
            connection.execute(sa.delete(AppEnvironment))
            if environment is not None:
                connection.execute(
                    sa.insert(AppEnvironment).values(
                        id=1, environment=environment, stamped_by="test"
                    )
                )
        forget_checks()

    forget_checks()
    yield set_stamp
    set_stamp(Environment.TEST)


def test_test_databases_are_stamped_test(db_url: str) -> None:
    assert _stamp(db_url) is Environment.TEST


@pytest.mark.parametrize("process", ["local", "test"])
def test_local_and_test_processes_share_test_databases(db_url: str, process: str) -> None:
    with Database(url=db_url, environment=process).session() as session:
        assert session.scalar(sa.select(sa.literal(1))) == 1


def test_a_production_process_refuses_a_test_database(db_url: str, restamp: Restamp) -> None:
    with (
        pytest.raises(DatabaseEnvironmentRefused, match="serves test and this process is prod"),
        Database(url=db_url, environment="production").session(),
    ):
        pass


def test_a_local_process_never_drives_a_production_database(
    db_url: str, restamp: Restamp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAIL_PIPELINE_ENV unset, MAIL_PIPELINE_DATABASE_URL pointing at production: the local
    definitions' database (the one the sandbox printers' runs use) refuses any work."""
    restamp(Environment.PRODUCTION)
    settings = load_settings(
        {"MAIL_PIPELINE_DATABASE_URL": db_url, "MAIL_PIPELINE_DATA_DIR": str(tmp_path)}
    )
    database = sandbox_resources(settings)["database"]
    with (
        pytest.raises(DatabaseEnvironmentRefused, match="serves production and this process is"),
        database.session(),
    ):
        pass
    monkeypatch.delenv("MAIL_PIPELINE_ENV", raising=False)
    with pytest.raises(DatabaseEnvironmentRefused), Database(url=db_url).session():
        pass  # unbound: the process's own kind (local)
    with Database(url=db_url, environment="production").session() as session:
        assert session.scalar(sa.select(sa.literal(1))) == 1


def test_the_cli_refuses_a_database_of_another_kind(
    db_url: str, restamp: Restamp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    restamp(Environment.PRODUCTION)
    monkeypatch.setenv("MAIL_PIPELINE_ENV", "test")
    monkeypatch.setenv("MAIL_PIPELINE_TEST_DATABASE_URL", db_url)
    assert cli.main(["status"]) == 2
    assert cli.main(["migrate"]) == 2
    assert "serves production and this process is test" in capsys.readouterr().err
    monkeypatch.setenv("MAIL_PIPELINE_ENV", "production")
    monkeypatch.setenv("MAIL_PIPELINE_DATABASE_URL", db_url)
    assert cli.main(["status"]) == 0


def test_the_alembic_cli_refuses_a_database_of_another_kind(
    db_url: str, restamp: Restamp, monkeypatch: pytest.MonkeyPatch
) -> None:
    restamp(Environment.PRODUCTION)
    monkeypatch.setenv("MAIL_PIPELINE_ENV", "local")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.cmd_opts = argparse.Namespace(x=[f"url={db_url}"])
    with pytest.raises(DatabaseEnvironmentRefused, match="serves production"):
        command.upgrade(config, "head")


def test_an_unstamped_database_is_refused_until_migrated(db_url: str, restamp: Restamp) -> None:
    restamp(None)
    for process in Environment:
        with pytest.raises(DatabaseEnvironmentRefused, match="run `mail-pipeline migrate`"):
            check_database_environment(db_url, process)
    upgrade(db_url, Environment.LOCAL)
    assert _stamp(db_url) is Environment.LOCAL
    check_database_environment(db_url, Environment.TEST)


def test_only_a_production_migrate_stamps_an_unstamped_database_with_data(
    db_url: str, restamp: Restamp, make_campaign: Callable[..., tuple[int, int]]
) -> None:
    make_campaign()
    restamp(None)
    with pytest.raises(DatabaseEnvironmentRefused, match="already holds organizations"):
        upgrade(db_url, Environment.LOCAL)
    assert _stamp(db_url) is None
    upgrade(db_url, Environment.PRODUCTION)
    assert _stamp(db_url) is Environment.PRODUCTION


def test_a_migrate_never_touches_a_database_of_another_kind(db_url: str, restamp: Restamp) -> None:
    restamp(Environment.PRODUCTION)
    with pytest.raises(DatabaseEnvironmentRefused):
        upgrade(db_url, Environment.TEST)
    assert _stamp(db_url) is Environment.PRODUCTION
    upgrade(db_url, Environment.PRODUCTION)  # its own kind: a no-op
    assert _stamp(db_url) is Environment.PRODUCTION


def test_the_check_reads_the_stamp_once_per_process_and_url(db_url: str, restamp: Restamp) -> None:
    reads: list[str] = []

    def count(_conn, _cursor, statement: str, *_args: object) -> None:  # type: ignore[no-untyped-def]
        if "FROM app_environment" in statement:
            reads.append(statement)

    engine = engine_for(db_url)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        database = Database(url=db_url, environment="local")
        for _ in range(3):
            with database.session():
                pass
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(reads) == 1
