"""The application database as a Dagster resource.

Constructing it touches nothing; the engine is made on first use and cached per process
(``engine_for``), so sensors that tick every few seconds reuse their connection pool.

Before the first unit of work on its URL, the process checks that the database serves its own
kind of environment (``db.environment.check_database_environment``: once per process and
URL, then from memory), so a local process pointed at the production database refuses to
start work instead of marking real recipients Sent through the sandboxes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import engine_for, unit_of_work
from mail_pipeline.db.environment import check_database_environment
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.domain.environments import Environment
from mail_pipeline.settings import current_environment


class Database(dg.ConfigurableResource):
    """SQLAlchemy URL of the app database (SQLite file locally, PostgreSQL in production)."""

    url: str
    #: The kind of environment this process serves (``local``, ``test``, ``production``);
    #: the definitions bind it from the settings. Unset: ``MAIL_PIPELINE_ENV`` of the process.
    environment: str | None = None

    def process_environment(self) -> Environment:
        if self.environment is None:
            return current_environment()
        return Environment(self.environment)

    def engine(self) -> Engine:
        check_database_environment(self.url, self.process_environment())
        return engine_for(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commits when the block ends, rolls back on an exception."""
        check_database_environment(self.url, self.process_environment())
        with unit_of_work(self.url) as session:
            yield session

    def migrate(self) -> None:
        """Migrate and stamp the database for this process's kind of environment."""
        upgrade(self.url, self.process_environment())
