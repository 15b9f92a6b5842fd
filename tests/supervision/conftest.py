"""What the supervision tests share: a Dagster home, PostgreSQL when there is one, and
processes started the way supervisors start them.

The PostgreSQL tests use ``MAIL_PIPELINE_TEST_DATABASE_URL`` when it names a PostgreSQL
server, else the server on 127.0.0.1:5432 if one answers; each test gets a database of its
own, dropped afterwards. Without a server they are skipped, saying so.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from mail_pipeline.db.engine import normalize_url

PG_ENV = "MAIL_PIPELINE_TEST_DATABASE_URL"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
#: Commands of this environment start in seconds alone, in tens of seconds on a loaded machine.
STARTUP = 90.0


def _postgres_server() -> str | None:
    url = os.environ.get(PG_ENV) or ""
    if not url or make_url(url).get_backend_name() != "postgresql":
        url = LOCAL_PG
    engine = sa.create_engine(normalize_url(url), connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return url
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    url = _postgres_server()
    if url is None:
        pytest.skip(
            f"PostgreSQL lock test: no PostgreSQL server answers ({PG_ENV}, or else "
            "127.0.0.1:5432); run one, or point the variable at one, to test the advisory lock"
        )
    return url


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh database on the server, as a psycopg2 URL (the driver Dagster's storage uses)."""
    admin = sa.create_engine(normalize_url(postgres_server), isolation_level="AUTOCOMMIT")
    name = f"mp_supervision_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server).set(drivername="postgresql+psycopg2", database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    """A Dagster home with SQLite storage and nothing else configured."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


@pytest.fixture
def postgres_home(tmp_path: Path, postgres_database: str) -> tuple[Path, str]:
    """A Dagster home whose storage is PostgreSQL through ``DAGSTER_PG_URL``, as in
    ``deploy/dagster.production.yaml``; returns the home and that URL."""
    home = tmp_path / "dagster_home_pg"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
        "telemetry:\n  enabled: false\n"
    )
    return home, postgres_database


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MAIL_PIPELINE_"))}
    env.update(DAGSTER_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def start(
    command: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    try:
        return subprocess.Popen(
            command, env=dict(env), stdout=handle, stderr=subprocess.STDOUT, cwd=cwd
        )
    finally:
        handle.close()


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it is dead, waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever still runs at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()


@functools.cache
def dagster_cli_answer(argv: tuple[str, ...]) -> tuple[int, str]:
    """A Dagster command line with ``--help`` appended: click rejects an unknown command or
    option before it prints the help, so status 0 means every word is known."""
    done = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=STARTUP, check=False
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def mail_pipeline_dispatch(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], str]:
    """Parse a ``mail-pipeline`` command line as ``main`` does and say which supervision
    command it dispatched to, without running it (a bad command line raises SystemExit)."""
    from mail_pipeline import cli

    for name in ("run_daemon", "check_daemon", "supervisor_health"):
        monkeypatch.setattr(cli, name, lambda args, name=name: name)

    def dispatch(argv: list[str]) -> str:
        return cli.main(argv)  # type: ignore[return-value]

    return dispatch
