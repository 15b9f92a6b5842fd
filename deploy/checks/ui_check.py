"""Check a live Dagster webserver as an operator would: over its GraphQL API, then in a browser.

Usage
-----

::

    python deploy/checks/ui_check.py --url http://127.0.0.1:3000 --out DIR \\
        [--location mail_pipeline] [--chromium /usr/bin/chromium] [--timeout 120] \\
        [--expect-running] [--expect-success JOB[,JOB]] [--expect-sensor NAME] \\
        [--expect-schedule NAME] [--expect-job NAME] [--expect-asset KEY] \\
        [--no-browser | --browser-optional]

GraphQL (``{url}/graphql``):

- waits until the webserver answers and the code location (``--location``) is loaded, and
  fails with the location's load error (message and causes) when it did not load;
- lists the location's sensors, schedules, jobs and asset keys and fails when an expected one
  is absent: the sensors, schedule and assets in ``EXPECTED_*`` below, plus any
  ``--expect-*``; with ``--expect-running`` the expected sensors and schedules must be
  RUNNING;
- reads the latest 50 runs and reports them by status and by job;
- with ``--expect-success``, waits until each named job has a SUCCESS run and fails at once on
  a FAILURE run of one of them, printing the run id and its steps' errors.

Browser (Playwright driving the distribution's Chromium, ``--chromium``; no browser download):
the Runs page (the latest run's id, or "No runs found", must show), the global asset lineage
with every group expanded (an asset name must show) and the Automation page (the expected
sensors and schedules must be listed), each saved as ``runs.png``, ``asset-graph.png`` and
``automation.png`` in ``--out``. Without Chromium or Playwright this half fails, unless
``--browser-optional`` (then it is skipped, saying why); ``--no-browser`` leaves it out.

Every finding goes to ``summary.json`` in ``--out`` (written on failure too): the location,
its definitions, the runs, the screenshots and the list of problems. The exit code is 0 only
when there are no problems.

``--timeout`` bounds each wait: for the webserver to answer, for the location to load, for
the expected jobs' successes and (at most 60 s) for each page's texts.

The checker only reads: it launches, stops and changes nothing in the deployment. It runs in
the project's environment (``.venv/bin/python``: httpx, and Playwright from the ``dev``
extra); Chromium is Debian's (``apt-get install chromium``), as Playwright's own browser
download is not used.

Importable: :func:`run_checks` runs everything and returns the summary;
:func:`read_location`, :func:`location_problems`, :func:`read_runs`,
:func:`wait_for_successes` and :func:`check_pages` are its parts.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

#: The sensors and schedule the mail flow cannot do without, in every environment.
EXPECTED_SENSORS = ("proofing_sensor", "mailing_sensor", "mail_status_sensor", "manual_sync_sensor")
EXPECTED_SCHEDULES = ("recipient_sync_schedule",)
#: Asset keys (``/``-joined paths) of the data half, in every environment.
EXPECTED_ASSETS = (
    "recipients",
    "orders",
    "attributions",
    "daily_order_metrics",
    "campaign_results",
)

#: The pages the browser checks, each saved as ``NAME.png``.
PAGES = ("runs", "asset-graph", "automation")
RUNS_LIMIT = 50
POLL_SECONDS = 2.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
#: The UI's placeholders for rows and states still loading (its skeletons and spinners).
LOADING_PLACEHOLDER = '[class*="Skeleton"], [class*="Spinner"]'
SETTLE_SECONDS = 10
#: The UI's "Join the community" dialog (shown on localhost) is remembered in local storage;
#: set before any page loads, it never covers a screenshot, and nothing is written to the
#: instance (clicking "Skip" would record it there).
HIDE_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'));"

#: Scrolls the list around the code location's first definition link down by ``step``
#: pixels (0: back to its top); true when it moved.
SCROLL_LIST = """(step) => {
  let box = document.querySelector('a[href*="/locations/"]');
  while (box && !(box.scrollHeight > box.clientHeight
                  && /auto|scroll/.test(getComputedStyle(box).overflowY))) {
    box = box.parentElement;
  }
  if (!box) return false;
  const before = box.scrollTop;
  box.scrollTop = step ? before + step : 0;
  return box.scrollTop !== before;
}"""

# Queries, against the schema of the installed dagster-graphql (a test validates them).
VERSION_QUERY = "query UiCheckVersion { version }"

LOCATION_QUERY = """
query UiCheckWorkspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation {
            name
            repositories {
              name
              sensors { name sensorState { status } }
              schedules { name scheduleState { status } }
              jobs { name }
              assetNodes { assetKey { path } groupName }
            }
          }
          ... on PythonError { ...UiCheckError }
        }
      }
    }
    ... on PythonError { ...UiCheckError }
  }
}
fragment UiCheckError on PythonError {
  message
  className
  errorChain { error { message className } }
}
"""

RUNS_QUERY = """
query UiCheckRuns($limit: Int!, $filter: RunsFilter) {
  runsOrError(limit: $limit, filter: $filter) {
    __typename
    ... on Runs {
      results { runId status jobName creationTime tags { key value } }
    }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""

RUN_EVENTS_QUERY = """
query UiCheckRunEvents($runId: ID!, $afterCursor: String, $limit: Int!) {
  logsForRun(runId: $runId, afterCursor: $afterCursor, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on ExecutionStepFailureEvent {
          stepKey
          message
          error { ...UiCheckError }
        }
        ... on RunFailureEvent {
          message
          error { ...UiCheckError }
        }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
fragment UiCheckError on PythonError {
  message
  className
  errorChain { error { message className } }
}
"""

QUERIES = (VERSION_QUERY, LOCATION_QUERY, RUNS_QUERY, RUN_EVENTS_QUERY)
EVENTS_PAGE = 1000
EVENTS_PAGES = 20


class CheckFailed(Exception):
    """A check did not pass; the message says what was looked at and what was missing."""


@dataclass(frozen=True)
class Expectations:
    """What the deployment must show: names of sensors, schedules and jobs, asset keys as
    ``/``-joined paths, whether the sensors and schedules must be RUNNING and the jobs that
    must have succeeded."""

    location: str = "mail_pipeline"
    sensors: tuple[str, ...] = EXPECTED_SENSORS
    schedules: tuple[str, ...] = EXPECTED_SCHEDULES
    jobs: tuple[str, ...] = ()
    assets: tuple[str, ...] = EXPECTED_ASSETS
    running: bool = False
    success_jobs: tuple[str, ...] = ()


@dataclass
class Location:
    """A code location as the webserver reports it; its repositories' definitions merged."""

    name: str
    load_status: str
    load_error: str | None = None
    repositories: list[str] = field(default_factory=list)
    sensors: dict[str, str] = field(default_factory=dict)  # name -> RUNNING | STOPPED
    schedules: dict[str, str] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    asset_keys: list[str] = field(default_factory=list)
    asset_groups: dict[str, str | None] = field(default_factory=dict)  # key -> group


@dataclass(frozen=True)
class Run:
    run_id: str
    status: str
    job_name: str
    tags: dict[str, str]


class GraphQL:
    """POSTs queries to ``{url}/graphql``; an HTTP error or a GraphQL ``errors`` answer
    raises :class:`CheckFailed`."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/graphql"
        self._client = httpx.Client(timeout=timeout)

    def __enter__(self) -> GraphQL:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._client.post(
                self.endpoint, json={"query": query, "variables": variables or {}}
            )
        except httpx.HTTPError as error:
            raise CheckFailed(f"GraphQL: {self.endpoint} did not answer: {error}") from error
        if response.status_code != 200:
            raise CheckFailed(
                f"GraphQL: {self.endpoint} answered HTTP {response.status_code}: "
                f"{response.text[:500]}"
            )
        try:
            body = response.json()
        except ValueError as error:
            raise CheckFailed(
                f"GraphQL: {self.endpoint} did not answer JSON: {response.text[:500]}"
            ) from error
        if body.get("errors"):
            messages = "; ".join(e.get("message", str(e)) for e in body["errors"])
            raise CheckFailed(f"GraphQL: the query was refused: {messages}")
        data: dict[str, Any] = body["data"]
        return data


def _error_text(error: dict[str, Any] | None) -> str:
    """A PythonError's message followed by the messages of its causes."""
    if not error:
        return ""
    parts = [error["message"].strip()]
    parts.extend(f"caused by {link['error']['message'].strip()}" for link in error["errorChain"])
    return "\n".join(parts)


def wait_for_server(client: GraphQL, timeout: float) -> str:
    """Poll until the webserver answers GraphQL; returns Dagster's version."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            version: str = client.query(VERSION_QUERY)["version"]
            return version
        except CheckFailed as error:
            if time.monotonic() >= deadline:
                raise CheckFailed(
                    f"GraphQL: the webserver at {client.url} did not answer within "
                    f"{timeout:.0f} s (last: {error})"
                ) from error
        time.sleep(POLL_SECONDS)


def _parse_location(entry: dict[str, Any]) -> Location:
    location = Location(name=entry["name"], load_status=entry["loadStatus"])
    loaded = entry.get("locationOrLoadError")
    if loaded is None:
        return location
    if loaded["__typename"] == "PythonError":
        location.load_error = _error_text(loaded)
        return location
    for repository in loaded["repositories"]:
        location.repositories.append(repository["name"])
        for sensor in repository["sensors"]:
            location.sensors[sensor["name"]] = sensor["sensorState"]["status"]
        for schedule in repository["schedules"]:
            location.schedules[schedule["name"]] = schedule["scheduleState"]["status"]
        location.jobs.extend(
            job["name"] for job in repository["jobs"] if not job["name"].startswith("__")
        )
        for node in repository["assetNodes"]:
            key = "/".join(node["assetKey"]["path"])
            location.asset_keys.append(key)
            location.asset_groups[key] = node.get("groupName")
    return location


def read_location(client: GraphQL, name: str, timeout: float = 0.0) -> Location:
    """The code location ``name``, waiting up to ``timeout`` seconds while it is LOADING.
    Raises :class:`CheckFailed` when the workspace has no such location or it failed to load
    (with the load error)."""
    deadline = time.monotonic() + timeout
    while True:
        workspace = client.query(LOCATION_QUERY)["workspaceOrError"]
        if workspace["__typename"] == "PythonError":
            raise CheckFailed(f"GraphQL: the workspace failed to load:\n{_error_text(workspace)}")
        entries = {e["name"]: e for e in workspace["locationEntries"]}
        if name in entries:
            location = _parse_location(entries[name])
            if location.load_error:
                raise CheckFailed(
                    f"GraphQL: code location {name!r} failed to load:\n{location.load_error}"
                )
            if location.load_status == "LOADED":
                return location
        if time.monotonic() >= deadline:
            if name not in entries:
                raise CheckFailed(
                    f"GraphQL: the workspace has no code location {name!r} "
                    f"(it has: {', '.join(sorted(entries)) or 'none'})"
                )
            raise CheckFailed(
                f"GraphQL: code location {name!r} is still {entries[name]['loadStatus']} "
                f"after {timeout:.0f} s"
            )
        time.sleep(POLL_SECONDS)


def _missing(kind: str, expected: Iterable[str], present: Iterable[str]) -> list[str]:
    present = set(present)
    return [
        f"{kind} {name!r} is not defined in the code location"
        for name in expected
        if name not in present
    ]


def location_problems(location: Location, expected: Expectations) -> list[str]:
    """What ``location`` lacks of ``expected``: absent definitions, and (``running``)
    expected sensors or schedules that are not RUNNING."""
    problems = [
        *_missing("sensor", expected.sensors, location.sensors),
        *_missing("schedule", expected.schedules, location.schedules),
        *_missing("job", expected.jobs, location.jobs),
        *_missing("asset", expected.assets, location.asset_keys),
    ]
    if expected.running:
        for kind, states, names in (
            ("sensor", location.sensors, expected.sensors),
            ("schedule", location.schedules, expected.schedules),
        ):
            problems.extend(
                f"{kind} {name!r} is {states[name]}, expected RUNNING"
                for name in names
                if name in states and states[name] != "RUNNING"
            )
    return problems


def read_runs(
    client: GraphQL, *, limit: int = RUNS_LIMIT, job_name: str | None = None
) -> list[Run]:
    """The latest ``limit`` runs, newest first (of one job when ``job_name`` is given)."""
    answer = client.query(
        RUNS_QUERY,
        {"limit": limit, "filter": {"pipelineName": job_name} if job_name else None},
    )["runsOrError"]
    if answer["__typename"] != "Runs":
        raise CheckFailed(f"GraphQL: the runs could not be read: {answer['message']}")
    return [
        Run(
            run_id=r["runId"],
            status=r["status"],
            job_name=r["jobName"],
            tags={t["key"]: t["value"] for t in r["tags"]},
        )
        for r in answer["results"]
    ]


def runs_report(runs: Sequence[Run]) -> dict[str, Any]:
    return {
        "count": len(runs),
        "by_status": dict(Counter(r.status for r in runs).most_common()),
        "by_job": dict(Counter(r.job_name for r in runs).most_common()),
        "latest": [asdict(r) for r in runs],
    }


def run_errors(client: GraphQL, run_id: str) -> list[str]:
    """The errors a run's event log holds: each failed step's error (with its causes), then
    the run's own failure message."""
    errors: list[str] = []
    cursor: str | None = None
    for _ in range(EVENTS_PAGES):
        answer = client.query(
            RUN_EVENTS_QUERY, {"runId": run_id, "afterCursor": cursor, "limit": EVENTS_PAGE}
        )["logsForRun"]
        if answer["__typename"] != "EventConnection":
            return [f"(its event log could not be read: {answer['message']})"]
        for event in answer["events"]:
            if event["__typename"] == "ExecutionStepFailureEvent":
                detail = _error_text(event.get("error")) or event["message"]
                errors.append(f"step {event['stepKey']}: {detail}")
            elif event["__typename"] == "RunFailureEvent":
                # a run failed by its steps repeats their error; one failed otherwise has its own
                detail = "" if errors else _error_text(event.get("error"))
                errors.append(f"run: {event['message']}" + (f"\n{detail}" if detail else ""))
        if not answer["hasMore"]:
            break
        cursor = answer["cursor"]
    return errors


def wait_for_successes(
    client: GraphQL,
    jobs: Sequence[str],
    timeout: float,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Wait up to ``timeout`` seconds until each of ``jobs`` has a SUCCESS run; returns the
    id of each job's latest successful run. A FAILURE run of one of them raises at once, with
    the run's id and its errors."""
    deadline = time.monotonic() + timeout
    succeeded: dict[str, str] = {}
    while True:
        for job in jobs:
            runs = read_runs(client, job_name=job)
            failed = [r for r in runs if r.status == "FAILURE"]
            if failed:
                details = []
                for run in failed:
                    errors = run_errors(client, run.run_id) or ["(no error in its event log)"]
                    lines = "\n".join(errors).splitlines()
                    details.append(f"run {run.run_id} failed:\n    " + "\n    ".join(lines))
                raise CheckFailed(f"job {job!r} has failed runs:\n" + "\n".join(details))
            success = next((r for r in runs if r.status == "SUCCESS"), None)
            if success and job not in succeeded:
                succeeded[job] = success.run_id
                log(f"job {job}: run {success.run_id} succeeded")
        waiting = [job for job in jobs if job not in succeeded]
        if not waiting:
            return succeeded
        if time.monotonic() >= deadline:
            states = {
                job: dict(Counter(r.status for r in read_runs(client, job_name=job)))
                for job in waiting
            }
            raise CheckFailed(
                f"no SUCCESS run within {timeout:.0f} s of: "
                + "; ".join(f"{job} (its runs: {states[job] or 'none'})" for job in waiting)
            )
        time.sleep(POLL_SECONDS)


def check_pages(
    url: str,
    out: Path,
    *,
    location: Location,
    expected: Expectations,
    runs: Sequence[Run],
    chromium: str = CHROMIUM,
    timeout: float = 60.0,
    pages: Sequence[str] = PAGES,
) -> tuple[dict[str, str], list[str]]:
    """Open the Runs, asset lineage and Automation pages (or those of ``pages``) in headless
    Chromium, check each shows what GraphQL reported and screenshot it into ``out``. Returns
    the screenshots' paths by page and the problems (each names its page and what it
    lacked)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    base = url.rstrip("/")
    wait_ms = timeout * 1000
    shots: dict[str, str] = {}
    problems: list[str] = []

    def visible(page: Any, text: str) -> None:
        page.get_by_text(text, exact=True).first.wait_for(state="visible", timeout=wait_ms)

    def any_of(page: Any, texts: Sequence[str]) -> Any:
        """The first visible element whose whole text is one of ``texts``."""
        found = page.get_by_text(texts[0], exact=True)
        for text in texts[1:]:
            found = found.or_(page.get_by_text(text, exact=True))
        return found.filter(visible=True).first

    def settled(page: Any) -> None:
        """Let the rows that are still drawn as placeholders fill in (a settling wait, not a
        check: the checks name the texts they need). A run still in progress keeps its
        spinner, so placeholders that stay are no failure: ``expect`` then raises an
        ``AssertionError``, which is let go like a Playwright timeout."""
        with contextlib.suppress(PlaywrightError, AssertionError):
            expect(page.locator(LOADING_PLACEHOLDER)).to_have_count(
                0, timeout=min(wait_ms, SETTLE_SECONDS * 1000)
            )

    def runs_page(page: Any) -> None:
        visible(page, "Runs")
        if runs:
            # the table shows each run's id by its first 8 characters, and the job it ran
            visible(page, runs[0].run_id[:8])
            if not runs[0].job_name.startswith("__"):
                visible(page, runs[0].job_name)
        else:
            visible(page, "No runs found")
        settled(page)

    def asset_graph(page: Any) -> None:
        names = [key.split("/")[-1] for key in location.asset_keys]
        groups = sorted({g for g in location.asset_groups.values() if g})
        if not names:
            raise CheckFailed("GraphQL reported no asset to look for")
        any_of(page, [*names, *groups]).wait_for(state="visible", timeout=wait_ms)
        asset = any_of(page, names)
        if not asset.is_visible():
            # groups are drawn collapsed: the graph's own shortcut expands them all (Alt+E)
            page.mouse.move(VIEWPORT["width"] // 2, VIEWPORT["height"] // 2)
            page.keyboard.press("Alt+KeyE")
        asset.wait_for(state="visible", timeout=wait_ms)
        page.wait_for_timeout(1500)  # the graph zooms to fit after expanding

    def listed(page: Any, name: str) -> None:
        """Scroll the list (it draws only the rows near the viewport) down from its top
        until the row ``name`` is drawn; raise when the list ends without it."""
        page.evaluate(SCROLL_LIST, 0)
        row = page.get_by_text(name, exact=True)
        while not row.count():
            if not page.evaluate(SCROLL_LIST, VIEWPORT["height"] // 2):
                raise CheckFailed(f"{name!r} is not listed")
            page.wait_for_timeout(200)
        row.first.wait_for(state="visible", timeout=wait_ms)

    def automation(page: Any) -> None:
        visible(page, location.name)
        for name in [*expected.sensors, *expected.schedules]:
            if name in location.sensors or name in location.schedules:
                listed(page, name)
        page.evaluate(SCROLL_LIST, 0)
        settled(page)

    checks: dict[str, tuple[str, str, Callable[[Any], None]]] = {
        "runs": ("/runs", "the runs table", runs_page),
        "asset-graph": ("/asset-groups", "an asset of the code location", asset_graph),
        "automation": ("/automation", "the expected sensors and schedules", automation),
    }
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
            context.add_init_script(HIDE_COMMUNITY_DIALOG)
            context.set_default_timeout(wait_ms)
            for name in pages:
                path, wanted, check = checks[name]
                page = context.new_page()
                shot = out / f"{name}.png"
                try:
                    page.goto(base + path, wait_until="domcontentloaded", timeout=wait_ms)
                    check(page)
                except (PlaywrightError, CheckFailed) as error:
                    first_line = str(error).strip().splitlines()[0]
                    problems.append(
                        f"page {path}: {wanted} did not show within {timeout:.0f} s "
                        f"({first_line}); see {shot}"
                    )
                page.screenshot(path=str(shot))
                shots[name] = str(shot)
                page.close()
        finally:
            browser.close()
    return shots, problems


def browser_missing(chromium: str) -> str | None:
    """Why the browser checks cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    if not Path(chromium).exists():
        return f"no Chromium at {chromium}"
    return None


def run_checks(
    url: str,
    out: Path,
    expected: Expectations,
    *,
    chromium: str | None = CHROMIUM,
    browser_optional: bool = False,
    timeout: float = 120.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every check against the webserver at ``url``; writes and returns the summary
    (``summary["problems"]`` is empty when everything passed). ``chromium=None`` leaves the
    browser out; ``browser_optional`` skips it, saying why, when Chromium or Playwright is
    absent (else their absence is a problem)."""
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"url": url, "expected": asdict(expected), "problems": []}
    problems: list[str] = summary["problems"]
    try:
        with GraphQL(url) as client:
            summary["dagster_version"] = wait_for_server(client, timeout)
            location = read_location(client, expected.location, timeout)
            summary["location"] = asdict(location)
            log(
                f"location {location.name}: {location.load_status}, "
                f"{len(location.sensors)} sensors, {len(location.schedules)} schedules, "
                f"{len(location.jobs)} jobs, {len(location.asset_keys)} assets"
            )
            problems.extend(location_problems(location, expected))
            if expected.success_jobs:
                try:
                    summary["succeeded"] = wait_for_successes(
                        client, expected.success_jobs, timeout, log=log
                    )
                except CheckFailed as error:
                    problems.append(str(error))
            runs = read_runs(client)
            summary["runs"] = runs_report(runs)
            log(
                f"latest {len(runs)} runs: by status {summary['runs']['by_status']}, "
                f"by job {summary['runs']['by_job']}"
            )
    except CheckFailed as error:
        problems.append(str(error))
    missing = browser_missing(chromium) if chromium else None
    if missing and browser_optional:
        summary["browser"] = f"skipped: {missing}"
        log(f"browser checks skipped: {missing}")
    elif missing:
        problems.append(f"browser: {missing} (--no-browser leaves the browser checks out)")
    elif chromium and "runs" in summary:
        shots, page_problems = check_pages(
            url,
            out,
            location=Location(**summary["location"]),
            expected=expected,
            runs=[Run(**r) for r in summary["runs"]["latest"]],
            chromium=chromium,
            timeout=min(timeout, 60.0),
        )
        summary["browser"] = "checked"
        summary["screenshots"] = shots
        problems.extend(page_problems)
        for name, path in shots.items():
            log(f"screenshot {name}: {path}")
    summary["ok"] = not problems
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _names(values: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated options, flattened."""
    return tuple(n.strip() for v in values or [] for n in v.split(",") if n.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check a live Dagster webserver over GraphQL and in a browser."
    )
    parser.add_argument("--url", required=True, help="the webserver, e.g. http://127.0.0.1:3000")
    parser.add_argument("--out", required=True, type=Path, help="folder for screenshots, summary")
    parser.add_argument("--location", default=Expectations.location)
    parser.add_argument("--chromium", default=CHROMIUM)
    browser = parser.add_mutually_exclusive_group()
    browser.add_argument("--no-browser", action="store_true", help="GraphQL checks only")
    browser.add_argument(
        "--browser-optional",
        action="store_true",
        help="skip the browser checks, saying why, when Chromium or Playwright is absent",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds each wait may take (default 120)"
    )
    parser.add_argument(
        "--expect-running", action="store_true", help="expected sensors/schedules are RUNNING"
    )
    parser.add_argument(
        "--expect-success", action="append", metavar="JOB[,JOB]", help="jobs that must succeed"
    )
    for kind in ("sensor", "schedule", "job", "asset"):
        parser.add_argument(
            f"--expect-{kind}",
            action="append",
            metavar="NAME",
            help=f"a further {kind} that must exist (repeatable)",
        )
    return parser.parse_args(argv)


def expectations_from(args: argparse.Namespace) -> Expectations:
    base = Expectations(location=args.location)
    success_jobs = _names(args.expect_success)
    return replace(
        base,
        sensors=base.sensors + _names(args.expect_sensor),
        schedules=base.schedules + _names(args.expect_schedule),
        jobs=_names(args.expect_job),
        assets=base.assets + _names(args.expect_asset),
        running=args.expect_running,
        success_jobs=success_jobs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    summary = run_checks(
        args.url,
        args.out,
        expectations_from(args),
        chromium=None if args.no_browser else args.chromium,
        browser_optional=args.browser_optional,
        timeout=args.timeout,
    )
    for problem in summary["problems"]:
        print(f"FAILED: {problem}")
    print(
        f"{'ok' if summary['ok'] else 'FAILED'}: {len(summary['problems'])} problems; "
        f"summary in {args.out / 'summary.json'}"
    )
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
