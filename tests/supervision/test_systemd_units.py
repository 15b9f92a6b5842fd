"""``deploy/systemd/``: every unit checked by ``systemd-analyze verify`` (when the machine
has it), and by reading them: each service restarts on failure within limits, runs as its
own user with the environment file, logs to the journal, and runs real commands; each has a
health check that restarts it; ports agree with each other and with the workspace file."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.supervision.conftest import BIN, ROOT, STARTUP, dagster_cli_answer

UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/mail-pipeline"
SERVICES = ("code-server", "webserver", "daemon")
SYSTEM_COMMANDS = ("/usr/bin/curl", "/usr/bin/timeout", "/bin/sh", "/bin/systemctl")

Unit = dict[str, dict[str, list[str]]]


def _read(name: str) -> Unit:
    """A unit file as {section: {key: [values, in order]}}."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def _one(unit: Unit, section: str, key: str) -> str:
    (value,) = unit[section][key]
    return value


def _local(text: str) -> str:
    """Units' text as they run from this checkout and its environment."""
    return text.replace(f"{INSTALLED}/.venv/bin", str(BIN)).replace(INSTALLED, str(ROOT))


def _health_command(service: str) -> list[str]:
    health = _read(f"mail-pipeline-{service}-health.service")
    argv = shlex.split(_one(health, "Service", "ExecStart"))
    return argv[2:] if argv[0] == "/usr/bin/timeout" else argv


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_restarts_on_failure_as_a_plain_user(service: str) -> None:
    unit = _read(f"mail-pipeline-{service}.service")
    run = unit["Service"]
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert int(_one(unit, "Service", "RestartSec")) > 0
    assert int(_one(unit, "Unit", "StartLimitBurst")) > 1
    assert int(_one(unit, "Unit", "StartLimitIntervalSec")) > 0
    assert run["User"] == ["mailpipeline"] and run["Group"] == ["mailpipeline"]
    assert run["EnvironmentFile"] == ["/etc/mail-pipeline/mail-pipeline.env"]
    assert run["StandardOutput"] == run["StandardError"] == ["journal"]
    assert run["SyslogIdentifier"] == [f"mail-pipeline-{service}"]
    # SIGTERM to the main process alone; it stops its own children.
    assert run["KillMode"] == ["mixed"]
    assert unit["Unit"]["PartOf"] == ["mail-pipeline.target"]
    assert unit["Install"]["WantedBy"] == ["mail-pipeline.target"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_health_check_that_restarts_it(service: str) -> None:
    health = _read(f"mail-pipeline-{service}-health.service")
    assert _one(health, "Unit", "OnFailure") == f"mail-pipeline-restart@{service}.service"
    assert _one(health, "Service", "Type") == "oneshot"
    assert _one(health, "Service", "User") == "mailpipeline"
    condition = _one(health, "Service", "ExecCondition")
    assert condition == f"/bin/systemctl is-active --quiet mail-pipeline-{service}.service"
    timer = _read("mail-pipeline-health@.timer")
    assert _one(timer, "Timer", "Unit") == "mail-pipeline-%i-health.service"
    restart = _read("mail-pipeline-restart@.service")
    assert _one(restart, "Service", "ExecStart") == (
        "/bin/systemctl try-restart mail-pipeline-%i.service"
    )
    target = " ".join(_read("mail-pipeline.target")["Unit"]["Wants"]).split()
    assert f"mail-pipeline-{service}.service" in target
    assert f"mail-pipeline-health@{service}.timer" in target
    assert "mail-pipeline-daemon-check.timer" in target


def test_commands_are_real_ones(mail_pipeline_dispatch: Callable[[list[str]], str]) -> None:
    def command(unit: str) -> list[str]:
        return shlex.split(_local(_one(_read(unit), "Service", "ExecStart")))

    commands = {name: command(f"mail-pipeline-{name}.service") for name in SERVICES}
    commands["daemon-check"] = command("mail-pipeline-daemon-check.service")
    for argv in commands.values():
        assert Path(argv[0]).parent == BIN and Path(argv[0]).is_file(), argv[0]
    for name in ("code-server", "webserver"):
        status, answer = dagster_cli_answer(tuple(commands[name]))
        assert status == 0, answer
    assert "--module-name mail_pipeline.definitions" in " ".join(commands["code-server"])
    assert mail_pipeline_dispatch(commands["daemon"][1:]) == "run_daemon"
    assert mail_pipeline_dispatch(commands["daemon-check"][1:]) == "check_daemon"
    workspace = Path(commands["daemon"][commands["daemon"].index("--workspace") + 1])
    assert workspace == Path(commands["webserver"][commands["webserver"].index("--workspace") + 1])
    assert workspace.is_file()

    for name in ("code-server", "daemon"):
        check = shlex.split(_local(shlex.join(_health_command(name))))
        assert Path(check[0]).parent == BIN
        status, answer = dagster_cli_answer(tuple(check))
        assert status == 0, answer
    liveness = _health_command("daemon")
    assert Path(liveness[0]).name == "dagster-daemon" and liveness[1:] == ["liveness-check"]


def test_ports_agree() -> None:
    code_server = shlex.split(
        _one(_read("mail-pipeline-code-server.service"), "Service", "ExecStart")
    )
    port = code_server[code_server.index("--port") + 1]
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.production.yaml").read_text())
    ((kind, location),) = workspace["load_from"][0].items()
    assert kind == "grpc_server"
    assert str(location["port"]) == port
    assert location["location_name"] == "mail_pipeline"
    # The host is this one: the environment file says so.
    assert location["host"] in ({"env": "DAGSTER_CODE_SERVER_HOST"}, "127.0.0.1")
    assert "--host 127.0.0.1" in " ".join(code_server)
    assert f"--port {port}" in " ".join(_health_command("code-server"))

    webserver = _read("mail-pipeline-webserver.service")
    argv = shlex.split(_one(webserver, "Service", "ExecStart"))
    url = f"http://127.0.0.1:{argv[argv.index('--port') + 1]}/server_info"
    assert _one(webserver, "Service", "ExecStartPost").endswith(url)
    assert _health_command("webserver")[-1] == url


def test_environment_file_example_names_the_instance() -> None:
    names = {
        line.split("=", 1)[0]
        for line in (UNITS / "mail-pipeline.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {"DAGSTER_HOME", "DAGSTER_PG_URL", "MAIL_PIPELINE_ENV"} <= names
    assert "DAGSTER_DAEMON_HEARTBEAT_TOLERANCE" in names  # read by the daemon's health check
    assert "DAGSTER_CODE_SERVER_HOST=127.0.0.1" in (UNITS / "mail-pipeline.env.example").read_text()


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the units are checked by reading only")
    missing = [c for c in SYSTEM_COMMANDS if not Path(c).exists()]
    if missing:
        pytest.skip(f"systemd-analyze verify needs {', '.join(missing)}, missing here")
    for source in UNITS.iterdir():
        if source.suffix in (".service", ".timer", ".target"):
            (tmp_path / source.name).write_text(_local(source.read_text()))
    for service in SERVICES:  # templates are verified through instances
        (tmp_path / f"mail-pipeline-health@{service}.timer").symlink_to(
            "mail-pipeline-health@.timer"
        )
        (tmp_path / f"mail-pipeline-restart@{service}.service").symlink_to(
            "mail-pipeline-restart@.service"
        )
    units = sorted(str(p) for p in tmp_path.iterdir() if "@." not in p.name)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=STARTUP,
        check=False,
    )
    # Unknown keys and bad values are warnings (status 0): nothing may be printed at all.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
