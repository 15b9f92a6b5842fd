"""``deploy/checks/ui_check.py`` against real ``dagster-webserver`` processes: one serving the
code location in its local environment (temporary Dagster home and data dir, two runs recorded
in its instance, one succeeded and one failed), and one whose location refuses to load (the
production environment with none of its settings).

The browser half runs when Chromium is at ``/usr/bin/chromium`` and Playwright imports, and is
skipped saying so otherwise. Each webserver has a free port, a Dagster home and a data dir of
its own, so sessions or xdist workers that start theirs at the same time do not collide.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import graphql
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "deploy" / "checks" / "ui_check.py"
CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT = 120.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_ui_check", CHECKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ui = _load_checker()
#: ``ui.GraphQL``: the checker is loaded from its file, so its classes are not types here.
Client = Any


@dg.op
def count_postcards() -> int:
    return 3


@dg.op
def print_postcards() -> None:
    raise ValueError("the printer is out of ink")


@dg.job(tags={"mail_pipeline/stage": "mailing"})
def ui_check_smoke_job() -> None:
    count_postcards()


@dg.job
def ui_check_broken_job() -> None:
    print_postcards()


@dataclass(frozen=True)
class Webserver:
    url: str
    home: Path
    log: Path
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _webserver(home: Path, data: Path, *, production: bool = False) -> Iterator[Webserver]:
    """A ``dagster-webserver`` on the repository's workspace, on a free port, with its own
    Dagster home and data dir; ``production`` loads the location in the production
    environment. Usable once it answers GraphQL (the caller waits: :func:`_wait_until_up`)."""
    home.mkdir(parents=True)
    data.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_PIPELINE_")}
    env.update(DAGSTER_HOME=str(home), MAIL_PIPELINE_DATA_DIR=str(data))
    if production:
        env["MAIL_PIPELINE_ENV"] = "production"
    port = _free_port()
    log = home / "webserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Webserver(url=f"http://127.0.0.1:{port}", home=home, log=log, process=process)
    finally:
        process.terminate()  # it stops its code server on the way out
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(server: Webserver) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with ui.GraphQL(server.url, timeout=5) as client:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"dagster-webserver exited:\n{server.log.read_text()[-3000:]}")
            try:
                client.query(ui.VERSION_QUERY)
                return
            except ui.CheckFailed:
                if time.monotonic() > deadline:
                    pytest.fail(f"dagster-webserver not up:\n{server.log.read_text()[-3000:]}")
                time.sleep(0.5)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """The code location in its local environment; while the webserver starts, two runs are
    recorded in its instance (SQLite under its Dagster home), as a run worker would."""
    base = tmp_path_factory.mktemp("local")
    with _webserver(base / "home", base / "data") as server:
        instance = dg.DagsterInstance.local_temp(tempdir=str(server.home))
        ui_check_smoke_job.execute_in_process(instance=instance)
        ui_check_broken_job.execute_in_process(instance=instance, raise_on_error=False)
        instance.dispose()
        _wait_until_up(server)
        yield server


@pytest.fixture(scope="module")
def misconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """The code location in the production environment with none of its settings: it
    refuses to load (``settings.check_production``)."""
    base = tmp_path_factory.mktemp("misconfigured")
    with _webserver(base / "home", base / "data", production=True) as server:
        _wait_until_up(server)
        yield server


@pytest.fixture
def client(local: Webserver) -> Iterator[Client]:
    with ui.GraphQL(local.url) as c:
        yield c


def test_the_queries_are_valid_against_the_installed_dagster_graphql_schema() -> None:
    from dagster_graphql.schema import create_schema

    schema = create_schema().graphql_schema
    for query in ui.QUERIES:
        assert graphql.validate(schema, graphql.parse(query)) == [], query


def test_the_local_location_is_loaded_with_its_sensors_schedules_and_assets(
    client: Client,
) -> None:
    location = ui.read_location(client, "mail_pipeline", timeout=30)

    assert location.load_status == "LOADED"
    assert location.load_error is None
    for sensor in ui.EXPECTED_SENSORS:
        assert location.sensors[sensor] == "RUNNING"
    assert location.schedules["recipient_sync_schedule"] == "RUNNING"
    assert {"proofing_job", "mailing_job", "sync_organization_job"} <= set(location.jobs)
    assert not any(job.startswith("__") for job in location.jobs)
    assert set(ui.EXPECTED_ASSETS) <= set(location.asset_keys)
    assert location.asset_groups["recipients"] == "orders_and_attribution"
    expected = ui.Expectations(running=True, jobs=("proofing_job", "mailing_job"))
    assert ui.location_problems(location, expected) == []


def test_an_absent_sensor_schedule_or_asset_is_named(client: Client) -> None:
    location = ui.read_location(client, "mail_pipeline", timeout=30)
    expected = ui.Expectations(
        sensors=(*ui.EXPECTED_SENSORS, "no_such_sensor"),
        schedules=("no_such_schedule",),
        assets=("recipients", "warehouse/no_such_asset"),
    )

    assert ui.location_problems(location, expected) == [
        "sensor 'no_such_sensor' is not defined in the code location",
        "schedule 'no_such_schedule' is not defined in the code location",
        "asset 'warehouse/no_such_asset' is not defined in the code location",
    ]


def test_a_stopped_sensor_fails_only_when_running_is_expected(client: Client) -> None:
    location = ui.read_location(client, "mail_pipeline", timeout=30)
    location.sensors["mailing_sensor"] = "STOPPED"

    assert ui.location_problems(location, ui.Expectations()) == []
    assert ui.location_problems(location, ui.Expectations(running=True)) == [
        "sensor 'mailing_sensor' is STOPPED, expected RUNNING"
    ]


def test_an_unknown_location_is_reported_with_the_ones_there_are(client: Client) -> None:
    with pytest.raises(
        ui.CheckFailed, match=r"no code location 'billing' \(it has: mail_pipeline\)"
    ):
        ui.read_location(client, "billing")


def test_the_latest_runs_are_counted_by_status_and_job(client: Client) -> None:
    runs = ui.read_runs(client)
    report = ui.runs_report(runs)

    assert report["count"] == 2
    assert report["by_status"] == {"SUCCESS": 1, "FAILURE": 1}
    assert report["by_job"] == {"ui_check_smoke_job": 1, "ui_check_broken_job": 1}
    smoke = next(r for r in runs if r.job_name == "ui_check_smoke_job")
    assert smoke.tags["mail_pipeline/stage"] == "mailing"


def test_a_succeeded_job_passes_and_a_failed_one_names_its_run_and_step_error(
    client: Client,
) -> None:
    succeeded = ui.wait_for_successes(client, ["ui_check_smoke_job"], timeout=5, log=lambda _: None)
    (smoke,) = ui.read_runs(client, job_name="ui_check_smoke_job")
    assert succeeded == {"ui_check_smoke_job": smoke.run_id}

    (broken,) = ui.read_runs(client, job_name="ui_check_broken_job")
    with pytest.raises(ui.CheckFailed) as failed:
        ui.wait_for_successes(
            client, ["ui_check_smoke_job", "ui_check_broken_job"], timeout=5, log=lambda _: None
        )
    message = str(failed.value)
    assert f"run {broken.run_id} failed" in message
    assert "step print_postcards:" in message
    assert "the printer is out of ink" in message


def test_a_job_without_a_successful_run_times_out_naming_it(client: Client) -> None:
    with pytest.raises(ui.CheckFailed, match=r"no SUCCESS run within 1 s of: proofing_job"):
        ui.wait_for_successes(client, ["proofing_job"], timeout=1, log=lambda _: None)


def test_the_cli_fails_on_an_absent_sensor_and_says_so_in_the_summary(
    local: Webserver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = ui.main(
        [
            "--url",
            local.url,
            "--out",
            str(tmp_path),
            "--no-browser",
            "--timeout",
            "10",
            "--expect-sensor",
            "no_such_sensor",
            "--expect-success",
            "ui_check_smoke_job",
        ]
    )

    assert code == 1
    assert "FAILED: sensor 'no_such_sensor' is not defined" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] is False
    assert summary["problems"] == ["sensor 'no_such_sensor' is not defined in the code location"]
    assert summary["location"]["load_status"] == "LOADED"
    assert summary["runs"]["count"] == 2
    (smoke,) = (r for r in summary["runs"]["latest"] if r["job_name"] == "ui_check_smoke_job")
    assert summary["succeeded"] == {"ui_check_smoke_job": smoke["run_id"]}
    assert "screenshots" not in summary


def test_a_location_that_failed_to_load_is_reported_with_its_error(
    misconfigured: Webserver, tmp_path: Path
) -> None:
    summary = ui.run_checks(
        misconfigured.url, tmp_path, ui.Expectations(), chromium=None, log=lambda _: None
    )

    assert summary["ok"] is False
    (problem,) = summary["problems"]
    assert problem.startswith("GraphQL: code location 'mail_pipeline' failed to load:")
    assert "refusing to load the production definitions" in problem
    assert "MAIL_PIPELINE_DATABASE_URL" in problem


def test_without_chromium_the_browser_half_fails_unless_it_is_optional(
    local: Webserver, tmp_path: Path
) -> None:
    url, absent = local.url, str(tmp_path / "no-chromium")

    required = ui.run_checks(url, tmp_path, ui.Expectations(), chromium=absent, log=lambda _: None)
    optional = ui.run_checks(
        url, tmp_path, ui.Expectations(), chromium=absent, browser_optional=True, log=lambda _: None
    )

    assert required["problems"] == [
        f"browser: no Chromium at {absent} (--no-browser leaves the browser checks out)"
    ]
    assert optional["ok"] is True
    assert optional["browser"] == f"skipped: no Chromium at {absent}"
    assert "screenshots" not in optional


def _browser_or_skip() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"browser checks: no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser checks: the playwright package is not installed")


def test_the_pages_show_the_runs_the_assets_and_the_automations(
    local: Webserver, tmp_path: Path
) -> None:
    _browser_or_skip()
    expected = replace(ui.Expectations(running=True), success_jobs=("ui_check_smoke_job",))

    summary = ui.run_checks(local.url, tmp_path, expected, timeout=60, log=lambda _: None)

    assert summary["problems"] == []
    assert summary["ok"] is True
    assert set(summary["screenshots"]) == {"runs", "asset-graph", "automation"}
    for name, path in summary["screenshots"].items():
        shot = Path(path)
        assert shot == tmp_path / f"{name}.png"
        content = shot.read_bytes()
        assert content.startswith(PNG_SIGNATURE), name
        assert len(content) > 10_000, name  # a drawn page, not a blank one
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_a_page_that_lacks_what_graphql_reported_is_named(local: Webserver, tmp_path: Path) -> None:
    _browser_or_skip()
    with ui.GraphQL(local.url) as client:
        location = ui.read_location(client, "mail_pipeline")
        runs = ui.read_runs(client)
    location.schedules["no_such_schedule"] = "RUNNING"
    expected = ui.Expectations(schedules=("weekly_reports_schedule", "no_such_schedule"))
    unlisted = ui.check_pages(
        local.url,
        tmp_path / "automation",
        location=location,
        expected=expected,
        runs=runs,
        timeout=30,
        pages=["automation"],
    )
    location.asset_keys, location.asset_groups = ["no_such_asset"], {}
    undrawn = ui.check_pages(
        local.url,
        tmp_path / "graph",
        location=location,
        expected=expected,
        runs=runs,
        timeout=4,
        pages=["asset-graph"],
    )

    shot = tmp_path / "automation" / "automation.png"
    assert unlisted == (
        {"automation": str(shot)},
        [
            "page /automation: the expected sensors and schedules did not show within 30 s "
            f"('no_such_schedule' is not listed); see {shot}"
        ],
    )
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    shots, (problem,) = undrawn
    shot = tmp_path / "graph" / "asset-graph.png"
    assert shots == {"asset-graph": str(shot)}
    assert problem.startswith(
        "page /asset-groups: an asset of the code location did not show within 4 s ("
    )
    assert problem.endswith(f"see {shot}")
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
