"""The commands that run and watch the Dagster processes (``docs/supervision.md``).

``mail-pipeline daemon`` and ``mail-pipeline daemon-check`` open the Dagster instance as
``dagster-daemon`` does (``DAGSTER_HOME`` and its ``dagster.yaml``; in production
``deploy/dagster.production.yaml``, whose storage URL is ``DAGSTER_PG_URL``), so they judge
the very instance the daemon serves:

- ``daemon`` takes the lock of the instance's storage - an advisory lock in its PostgreSQL
  database, else a lock file in ``DAGSTER_HOME`` - and runs ``dagster-daemon run`` under it
  (:mod:`mail_pipeline.services.daemon_guard`);
- ``daemon-check`` watches the instance's daemon heartbeats and says whether no daemon, one,
  or several are alive (:mod:`mail_pipeline.services.daemon_heartbeats`), even daemons started
  with ``dagster-daemon run`` directly.

The instance is read, then closed, before the daemon starts: the wrapper keeps only its lock.

``mail-pipeline supervisor-health`` is supervisord's health-check event listener
(:mod:`mail_pipeline.services.supervisor_health`).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from mail_pipeline.db.instance_locks import AdvisoryLock, FileLock, instance_lock
from mail_pipeline.services.daemon_guard import EXIT_REFUSED, DaemonAlreadyRunning, run_guarded
from mail_pipeline.services.daemon_heartbeats import HEARTBEAT_INTERVAL, WINDOW, watch
from mail_pipeline.services.supervisor_health import (
    HealthListener,
    ProgramCheck,
    SupervisorRPC,
    parse_check,
)

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_daemon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-w",
        "--workspace",
        action="append",
        default=[],
        help="workspace file for dagster-daemon run (production: deploy/workspace.production.yaml)",
    )
    # Passed on when given; otherwise dagster-daemon's own defaults (and its
    # DAGSTER_DAEMON_LOG_LEVEL) apply.
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=None)
    parser.add_argument("--log-format", choices=("colored", "json", "rich"), default=None)
    parser.add_argument(
        "--verify-every",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how often to check that the lock is still held (default 15)",
    )
    parser.add_argument(
        "--wrapped-command",
        default=None,
        metavar="COMMAND",
        help="run COMMAND (shell words) under the lock instead of dagster-daemon run",
    )


def add_daemon_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window",
        type=float,
        default=WINDOW,
        metavar="SECONDS",
        help=f"how long to watch the heartbeats (default {WINDOW:g}: a little over two "
        f"heartbeat intervals of {HEARTBEAT_INTERVAL:g} s)",
    )
    parser.add_argument(
        "--poll", type=float, default=1.0, metavar="SECONDS", help="read them this often"
    )


def _daemon_command(args: argparse.Namespace) -> list[str]:
    if args.wrapped_command:
        return shlex.split(args.wrapped_command)
    # The console script of this environment, then any on PATH.
    beside = Path(sys.executable).with_name("dagster-daemon")
    executable = str(beside) if beside.exists() else shutil.which("dagster-daemon")
    command = [executable or "dagster-daemon", "run"]
    for workspace in args.workspace:
        command += ["-w", workspace]
    if args.log_level:
        command += ["--log-level", args.log_level]
    if args.log_format:
        command += ["--log-format", args.log_format]
    return command


def _lock_of_current_instance() -> AdvisoryLock | FileLock:
    import dagster as dg
    from dagster_postgres import PostgresRunStorage

    with dg.DagsterInstance.get() as instance:
        storage = instance.run_storage
        url = storage.postgres_url if isinstance(storage, PostgresRunStorage) else None
        return instance_lock(url, Path(instance.root_directory))


def _failed(command: str, message: str) -> int:
    print(f"mail-pipeline {command}: {message}", file=sys.stderr)
    return 2


def _instance_errors() -> tuple[type[Exception], ...]:
    """What opening or reading the instance raises when it cannot be had: no
    ``DAGSTER_HOME``, a bad ``dagster.yaml``, a storage database that does not answer."""
    import dagster as dg
    from dagster_postgres.utils import DagsterPostgresException

    return (dg.DagsterError, DagsterPostgresException, SQLAlchemyError)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    return f"{exc} ({(str(cause).splitlines() or [type(cause).__name__])[0]})"


def run_daemon(args: argparse.Namespace) -> int:
    """``mail-pipeline daemon``: ``dagster-daemon run`` under the instance's lock."""
    try:
        lock = _lock_of_current_instance()
    except _instance_errors() as exc:
        return _failed("daemon", f"cannot open the Dagster instance: {_reason(exc)}")
    try:
        return run_guarded(lock, _daemon_command(args), verify_every=args.verify_every)
    except DaemonAlreadyRunning as refused:
        print(f"mail-pipeline daemon: {refused}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, SQLAlchemyError) as exc:  # a lock file that cannot be opened, no database
        return _failed("daemon", f"cannot take the {lock.description}: {exc}")


def check_daemon(args: argparse.Namespace) -> int:
    """``mail-pipeline daemon-check``: exactly one daemon alive (0), none (1), several (3)."""
    import dagster as dg

    try:
        with dg.DagsterInstance.get() as instance:
            if instance.daemon_skip_heartbeats_without_errors:
                return _failed(
                    "daemon-check",
                    "this instance's daemons write heartbeats only on errors: they cannot be "
                    "counted",
                )
            report = watch(
                instance.get_daemon_heartbeats,
                required_types=instance.get_required_daemon_types(),
                window=args.window,
                poll=args.poll,
            )
    except _instance_errors() as exc:
        return _failed(
            "daemon-check", f"cannot read the Dagster instance's heartbeats: {_reason(exc)}"
        )
    out = sys.stdout if report.exit_status == 0 else sys.stderr
    for line in report.lines():
        print(line, file=out)
    return report.exit_status


def add_supervisor_health_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        required=True,
        metavar="PROGRAM=CHECK",
        help="a supervisord program and its check: a URL to GET, or a command (shell words)",
    )
    parser.add_argument(
        "--server-url",
        required=True,
        help="supervisord's XML-RPC server: unix:///path/to/supervisor.sock or http://host:port",
    )
    parser.add_argument(
        "--failures", type=int, default=2, help="failed checks in a row before a restart"
    )
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")


def supervisor_health(args: argparse.Namespace) -> int:
    """``mail-pipeline supervisor-health``: supervisord's health-check event listener."""
    try:
        checks = [
            ProgramCheck(program, shlex.split(check))
            for program, check in map(parse_check, args.check)
        ]
    except ValueError as exc:
        print(f"mail-pipeline supervisor-health: {exc}", file=sys.stderr)
        return 2
    listener = HealthListener(
        checks, SupervisorRPC(args.server_url), failures=args.failures, timeout=args.timeout
    )
    listener.serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0
