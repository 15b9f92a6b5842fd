"""The one place that knows which environment this is.

``MAIL_PIPELINE_ENV`` picks ``local`` (the default), ``test`` or ``production``; nothing else
in the code asks. :func:`load_settings` reads the environment variables once and returns plain
values - reading them is not I/O, and nothing here touches a file or a network.

=============  ===========================================  =================================
environment    app database                                 vendors and queues
=============  ===========================================  =================================
local          SQLite file in ``MAIL_PIPELINE_DATA_DIR``    sandboxes, local SQS-like queues
               (default ``./data``)
test           ``MAIL_PIPELINE_TEST_DATABASE_URL`` or a     sandboxes, local queues, in the
               SQLite file in the data dir                  test's data dir
production     ``MAIL_PIPELINE_DATABASE_URL`` (PostgreSQL)  real APIs, SQS; secrets from env
=============  ===========================================  =================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mail_pipeline.domain.environments import Environment

ENV_VAR = "MAIL_PIPELINE_ENV"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Environment", "Settings", "SettingsError", "load_settings"]


class SettingsError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    environment: Environment
    #: The app database. In production it is resolved by Dagster from the env var at launch
    #: time (``dg.EnvVar``), so this holds the variable's *name* there.
    database_url: str
    data_dir: Path
    #: Where a static file server publishes ``image_dir`` (local only; None: file:// URLs).
    image_base_url: str | None = None

    @property
    def sandbox_path(self) -> Path:
        """The sandbox vendors' shared state (profiles, postcards, meter events)."""
        return self.data_dir / "sandbox.sqlite"

    @property
    def queue_path(self) -> Path:
        """The local queues with SQS semantics."""
        return self.data_dir / "queues.sqlite"

    @property
    def image_dir(self) -> Path:
        """Where the sandbox image host keeps uploaded proofs."""
        return self.data_dir / "images"


def current_environment(environ: Mapping[str, str] | None = None) -> Environment:
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VAR, Environment.LOCAL.value).strip().lower()
    try:
        return Environment(value)
    except ValueError:
        allowed = ", ".join(e.value for e in Environment)
        raise SettingsError(f"{ENV_VAR}={value!r} is not one of: {allowed}") from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    env = current_environment(environ)
    data_dir = Path(environ.get("MAIL_PIPELINE_DATA_DIR") or PROJECT_ROOT / "data").resolve()
    if env is Environment.PRODUCTION:
        url = "MAIL_PIPELINE_DATABASE_URL"
    elif env is Environment.TEST:
        url = environ.get("MAIL_PIPELINE_TEST_DATABASE_URL") or f"sqlite:///{data_dir}/test.sqlite"
    else:
        url = environ.get("MAIL_PIPELINE_DATABASE_URL") or (
            f"sqlite:///{data_dir}/mail_pipeline.sqlite"
        )
    return Settings(
        environment=env,
        database_url=url,
        data_dir=data_dir,
        image_base_url=environ.get("MAIL_PIPELINE_IMAGE_BASE_URL") or None,
    )
