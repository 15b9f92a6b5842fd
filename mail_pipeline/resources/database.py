"""The application database as a Dagster resource.

Constructing it touches nothing; the engine is made on first use and cached per process
(``engine_for``), so sensors that tick every few seconds reuse their connection pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import engine_for, unit_of_work
from mail_pipeline.db.migrate import upgrade


class Database(dg.ConfigurableResource):
    """SQLAlchemy URL of the app database (SQLite file locally, PostgreSQL in production)."""

    url: str

    def engine(self) -> Engine:
        return engine_for(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commits when the block ends, rolls back on an exception."""
        with unit_of_work(self.url) as session:
            yield session

    def migrate(self) -> None:
        upgrade(self.url)
