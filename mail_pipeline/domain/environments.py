"""The kinds of environment a process or a database serves, and which may meet.

A process learns its kind once, in :mod:`mail_pipeline.settings`; an app database records the
kind it serves (``app_environment``), stamped by the migration that first brings it to the
current schema, so a process of another kind can refuse it before doing any work:

- a production database is used by production processes only: a laptop or a test run that
  points at it (``MAIL_PIPELINE_DATABASE_URL`` left over) would mark real recipients Sent
  through the sandbox printers, with nothing printed;
- a local or test database is never used by a production process (its data is made up);
- local and test databases are interchangeable: both are non-production, and local-environment
  definitions are routinely run against test databases;
- an unstamped database is used by no process: ``mail-pipeline migrate`` stamps it with the
  migrating process's kind. A non-production migrate stamps only a database that holds no
  organization yet (an unstamped database with data may be production's, from before
  stamping); a production migrate stamps any unstamped database.
"""

from __future__ import annotations

from enum import StrEnum


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"

    @property
    def is_production(self) -> bool:
        return self is Environment.PRODUCTION


def database_refusal(process: Environment, database: Environment | None) -> str | None:
    """Why a ``process``-kind process must not use a database stamped ``database``, or None
    when it may."""
    if database is None:
        return (
            "the database is not stamped with the kind of environment it serves; run "
            f"`mail-pipeline migrate` with MAIL_PIPELINE_ENV={process.value} to stamp it"
        )
    if database.is_production and not process.is_production:
        return (
            f"the database serves production and this process is {process.value}: a "
            "non-production process never drives production data (check "
            "MAIL_PIPELINE_DATABASE_URL, or set MAIL_PIPELINE_ENV=production if this really "
            "is production)"
        )
    if process.is_production and not database.is_production:
        return (
            f"the database serves {database.value} and this process is production: point "
            "MAIL_PIPELINE_DATABASE_URL at the production database"
        )
    return None


def stamp_refusal(process: Environment, holds_data: bool) -> str | None:
    """Why a ``process``-kind migrate must not stamp an unstamped database, or None."""
    if holds_data and not process.is_production:
        return (
            "the database is not stamped yet already holds organizations, so it may be "
            f"production's; a {process.value} migrate stamps only an empty database (a local "
            "copy can be recreated with `make clean-data`; production stamps it with "
            "MAIL_PIPELINE_ENV=production mail-pipeline migrate)"
        )
    return None
