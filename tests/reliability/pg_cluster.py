"""A private PostgreSQL server that a test may stop, restart or crash.

The machine's shared PostgreSQL serves everyone, so it is never restarted by a test. The
tests that need "PostgreSQL restarted mid-run" start their own server instead: ``initdb``
into a temporary folder and ``pg_ctl`` on a free loopback port, with the binaries of the
newest PostgreSQL installed under ``/usr/lib/postgresql/<version>/bin`` (or on ``PATH``).

``initdb`` refuses to run as root, so as root the binaries run as the ``postgres`` OS user
(``runuser -u postgres --``) and the folder is handed to that user. :func:`unavailable_reason`
says, in a sentence, why no private server can be had here (no binaries, no such user), so
the tests skip saying why.

The server is made for tests: ``fsync`` off (what was written reaches the OS at each commit,
so a crashed *server* process recovers every committed transaction from its WAL - only a
machine crash would lose data), a small ``shared_buffers``, no Unix socket.
``synchronous_commit`` stays on, as in production: with it off, a server crash loses the
transactions committed in the last few hundred milliseconds - a mailing run's print attempt
included, after the printer was asked.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

#: The OS user the server runs as when the tests run as root.
SERVER_USER = "postgres"
#: How long a start, stop or restart may take on a loaded machine.
PG_CTL_TIMEOUT = 120
#: Settings for a disposable test server (fsync off: see the module docstring).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
    "log_min_messages": "warning",
}


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` of the newest PostgreSQL installed."""

    def version(path: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in path.parent.name.split("."))
        except ValueError:
            return (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _runs_as_root() -> bool:
    return os.geteuid() == 0


def unavailable_reason() -> str | None:
    """Why no private server can be started here, or ``None`` when one can."""
    if find_bin_dir() is None:
        return (
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or "
            "on PATH: install the postgresql package to run the restart tests"
        )
    if _runs_as_root():
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return (
                f"running as root and there is no {SERVER_USER!r} OS user to run initdb as "
                "(initdb refuses root)"
            )
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (initdb refuses root)"
    return None


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ClusterError(RuntimeError):
    """``initdb`` or ``pg_ctl`` failed; the message carries their output and the server log."""


@dataclass
class PrivateCluster:
    """One PostgreSQL server in ``root`` (``root/data``, log ``root/server.log``)."""

    bin_dir: Path
    root: Path
    port: int = 0
    #: Every (re)start, in order: the postmaster's pid (a restart gives a new one).
    starts: list[int] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PrivateCluster]:
        """A new server, started; stopped and deleted when the block ends."""
        reason, bin_dir = unavailable_reason(), find_bin_dir()
        if reason is not None or bin_dir is None:
            raise ClusterError(reason or "no PostgreSQL server binaries")
        root = Path(tempfile.mkdtemp(prefix="mp-pg-"))
        cluster = cls(bin_dir, root)
        try:
            cluster._prepare_root()
            cluster._initdb()
            cluster._start_on_a_free_port()
            yield cluster
        finally:
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                cluster.stop(mode="immediate")
            shutil.rmtree(root, ignore_errors=True)

    # -- paths and URLs ---------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (``postgresql://``; the app's engines pick psycopg 3)."""
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SERVER_USER} dbname={database}"

    # -- control ----------------------------------------------------------------------------
    def start(self) -> None:
        self._pg_ctl("start", "-w", "-l", str(self.log_file))
        self.starts.append(self.postmaster_pid())

    def stop(self, *, mode: str = "fast") -> None:
        """``fast``: roll back and disconnect every session, then shut down cleanly;
        ``immediate``: quit at once (a crash - the next start recovers from the WAL)."""
        self._pg_ctl("stop", "-w", "-m", mode)

    def restart(self, *, mode: str = "fast") -> None:
        """Stop (``fast`` or ``immediate``, see :meth:`stop`) and start again; returns when
        the server accepts connections."""
        self._pg_ctl("restart", "-w", "-m", mode, "-l", str(self.log_file))
        self.starts.append(self.postmaster_pid())

    def is_up(self) -> bool:
        try:
            with psycopg.connect(self.conninfo(), connect_timeout=5):
                return True
        except psycopg.OperationalError:
            return False

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])

    # -- databases and sessions -------------------------------------------------------------
    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A new autocommit connection (close it; ``with`` does)."""
        return psycopg.connect(self.conninfo(database), autocommit=True, connect_timeout=10)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        copy = f' TEMPLATE "{template}"' if template else ""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def backends(self, database: str) -> list[int]:
        """The pids of the client sessions connected to ``database``."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        return [int(pid) for (pid,) in rows]

    # -- internals --------------------------------------------------------------------------
    def _as_server_user(self, argv: Sequence[str]) -> list[str]:
        if _runs_as_root():
            return ["runuser", "-u", SERVER_USER, "--", *argv]
        return list(argv)

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self._as_server_user(argv),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=PG_CTL_TIMEOUT,
            check=False,
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
        )
        if done.returncode != 0:
            raise ClusterError(
                f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}"
                f"\n-- server log --\n{self._log_tail()}"
            )
        return done

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-t",
                str(PG_CTL_TIMEOUT),
                *args,
            ]
        )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def _prepare_root(self) -> None:
        if _runs_as_root():
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                SERVER_USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )

    def _start_on_a_free_port(self) -> None:
        """Start on a port free a moment ago; another process may take it first, so try a
        few."""
        last: ClusterError | None = None
        for _ in range(5):
            self.port = free_port()
            self._write_settings()
            try:
                self.start()
                return
            except ClusterError as exc:
                last = exc
                time.sleep(0.2)
        assert last is not None
        raise last

    def _write_settings(self) -> None:
        lines = [f"{key} = {value}" for key, value in {**SETTINGS, "port": str(self.port)}.items()]
        # postgresql.auto.conf is read last: each new port replaces the one before.
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text("\n".join(lines) + "\n")
        if _runs_as_root():
            user = pwd.getpwnam(SERVER_USER)
            os.chown(conf, user.pw_uid, user.pw_gid)
