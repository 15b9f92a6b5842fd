"""``deploy/supervisord.conf``: loaded by supervisor's own parser, every program restarted
when it dies and logging to a rotated file, every command a real one; then supervisord run
with it, the programs swapped for cheap ones, restarting a killed program and one whose
health check fails, and stopping the daemon wrapper with its child."""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from mail_pipeline.services.supervisor_health import SupervisorRPC, parse_check
from tests.supervision.conftest import (
    BIN,
    ROOT,
    STARTUP,
    alive,
    dagster_cli_answer,
    environment,
    wait_for,
)

CONF = ROOT / "deploy" / "supervisord.conf"
PROGRAMS = ("code-server", "webserver", "daemon")


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    log_dir, run_dir = tmp_path / "log", tmp_path / "run"
    log_dir.mkdir()
    run_dir.mkdir()
    monkeypatch.setenv("MAIL_PIPELINE_LOG_DIR", str(log_dir))
    monkeypatch.setenv("MAIL_PIPELINE_RUN_DIR", str(run_dir))
    return log_dir, run_dir


def _load(path: Path) -> ServerOptions:
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    return options


def _configs(options: ServerOptions) -> dict[str, object]:
    return {p.name: p for group in options.process_group_configs for p in group.process_configs}


def test_supervisor_loads_the_configuration(dirs: tuple[Path, Path]) -> None:
    log_dir, run_dir = dirs
    options = _load(CONF)
    configs = _configs(options)
    assert set(configs) == {*PROGRAMS, "health"}
    assert options.logfile == str(log_dir / "supervisord.log")
    assert options.logfile_maxbytes > 0 and options.logfile_backups > 0
    assert options.server_configs[0]["file"] == str(run_dir / "supervisor.sock")
    for name in PROGRAMS:
        program = configs[name]
        assert program.autorestart is RestartUnconditionally, name
        assert program.stdout_logfile == str(log_dir / f"{name}.log")
        assert program.redirect_stderr
        assert program.stdout_logfile_maxbytes == 50 * 1024 * 1024
        assert program.stdout_logfile_backups == 10
        assert program.stopasgroup and program.killasgroup
        assert program.stopsignal == signal.SIGTERM
    # Code first, UI and daemon after it; stopped in the reverse order.
    assert [configs[n].priority for n in PROGRAMS] == sorted(configs[n].priority for n in PROGRAMS)
    health = configs["health"]
    assert health.stderr_logfile == str(log_dir / "health.log")
    assert health.stderr_logfile_maxbytes > 0 and health.stderr_logfile_backups > 0


def test_every_command_is_a_real_one(
    dirs: tuple[Path, Path], mail_pipeline_dispatch: Callable[[list[str]], str]
) -> None:
    configs = _configs(_load(CONF))
    words = {name: shlex.split(config.command) for name, config in configs.items()}
    for argv in words.values():
        executable = Path(argv[0])
        assert executable.resolve().parent == BIN.resolve(), argv[0]
        assert os.access(executable, os.X_OK), argv[0]

    for name in ("code-server", "webserver"):
        status, answer = dagster_cli_answer(tuple(words[name]))
        assert status == 0, answer
    assert "--module-name mail_pipeline.definitions" in configs["code-server"].command
    assert mail_pipeline_dispatch(words["daemon"][1:]) == "run_daemon"
    assert Path(words["daemon"][words["daemon"].index("--workspace") + 1]).is_file()

    assert mail_pipeline_dispatch(words["health"][1:]) == "supervisor_health"
    checks = dict(parse_check(w) for w in words["health"] if "=" in w and "://" not in w[:8])
    assert set(checks) == set(PROGRAMS)
    assert checks["webserver"] == "http://127.0.0.1:3000/server_info"
    for program in ("code-server", "daemon"):
        status, answer = dagster_cli_answer(tuple(shlex.split(checks[program])))
        assert status == 0, answer


# The live run: cheap programs in place of the Dagster ones (the daemon is the real wrapper
# around `sleep`), health checks that look for a file, ticks every 5 s; everything else -
# restarts, logs, the listener, the control socket - as in deploy/supervisord.conf.
PROGRAM = f"{sys.executable} -c 'import time; print(\"serving\", flush=True); time.sleep(600)'"


def _live_configuration(tmp_path: Path) -> Path:
    config = configparser.RawConfigParser()
    config.read(CONF)
    for name in ("code-server", "webserver"):
        config[f"program:{name}"]["command"] = PROGRAM
    config["program:daemon"]["command"] = (
        f"{BIN / 'mail-pipeline'} daemon --wrapped-command "
        f"\"sh -c 'echo $$ > {tmp_path / 'child.pid'}; exec sleep 600'\""
    )
    for name in PROGRAMS:
        config[f"program:{name}"]["startsecs"] = "1"
    health = config["eventlistener:health"]
    health["command"] = (
        f"{BIN / 'mail-pipeline'} supervisor-health "
        "--server-url unix://%(ENV_MAIL_PIPELINE_RUN_DIR)s/supervisor.sock "
        f"--check 'code-server=test -e {tmp_path / 'code-server-ok'}' "
        f"--check 'webserver=test -e {tmp_path / 'webserver-ok'}' "
        "--check daemon=true"
    )
    health["events"] = "TICK_5"
    path = tmp_path / "deploy" / "supervisord.conf"
    path.parent.mkdir()
    with path.open("w") as handle:
        config.write(handle)
    return path


@pytest.mark.slow
def test_supervisord_runs_restarts_and_stops_them(
    tmp_path: Path, dirs: tuple[Path, Path], dagster_home: Path
) -> None:
    log_dir, run_dir = dirs
    conf = _live_configuration(tmp_path)
    (tmp_path / "code-server-ok").touch()
    (tmp_path / "webserver-ok").touch()
    env = environment(
        dagster_home, MAIL_PIPELINE_LOG_DIR=str(log_dir), MAIL_PIPELINE_RUN_DIR=str(run_dir)
    )
    supervisord = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(conf)], env=env)
    rpc = SupervisorRPC(f"unix://{run_dir / 'supervisor.sock'}", timeout=STARTUP)

    def info(name: str) -> dict[str, object]:
        return rpc.proxy.supervisor.getProcessInfo(name)  # type: ignore[no-any-return]

    def running(name: str, not_pid: object = None) -> bool:
        state = info(name)
        return state["statename"] == "RUNNING" and state["pid"] != not_pid

    try:
        wait_for((run_dir / "supervisor.sock").exists, STARTUP, "supervisord's socket")
        for name in (*PROGRAMS, "health"):
            wait_for(lambda name=name: running(name), STARTUP, f"{name} to run")
        wait_for((tmp_path / "child.pid").exists, STARTUP, "the daemon's child")
        child = int((tmp_path / "child.pid").read_text())

        # A program that dies is started again.
        code_server = info("code-server")["pid"]
        os.kill(code_server, signal.SIGKILL)  # type: ignore[arg-type]
        wait_for(lambda: running("code-server", code_server), STARTUP, "code-server's restart")

        # A program that runs but fails its health check twice in a row is restarted.
        webserver = info("webserver")["pid"]
        (tmp_path / "webserver-ok").unlink()
        wait_for(lambda: running("webserver", webserver), STARTUP, "webserver's restart")
        health_log = log_dir / "health.log"
        wait_for(lambda: "webserver: restarted" in health_log.read_text(), STARTUP, "the log")
        (tmp_path / "webserver-ok").touch()
        assert "webserver: health check failed (2 of 2 before a restart)" in health_log.read_text()
        assert "code-server" not in health_log.read_text()  # its check passed

        # Stopping the daemon: SIGTERM to the wrapper, passed on to its child.
        rpc.proxy.supervisor.stopProcess("daemon", True)
        stopped = info("daemon")
        assert stopped["statename"] == "STOPPED"
        assert stopped["exitstatus"] == 128 + signal.SIGTERM
        assert not alive(child)
        daemon_log = (log_dir / "daemon.log").read_text()
        assert "holding the lock file" in daemon_log
        assert "the daemon stopped (exit status 143)" in daemon_log
        assert "serving" in (log_dir / "webserver.log").read_text()

        rpc.proxy.supervisor.shutdown()
        assert supervisord.wait(timeout=STARTUP) == 0
    finally:
        if supervisord.poll() is None:
            supervisord.send_signal(signal.SIGTERM)
            supervisord.wait(timeout=STARTUP)
