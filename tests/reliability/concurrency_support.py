"""Racing actors against one database, and checking what they leave behind
(``test_concurrency.py``).

- :func:`race` starts actors in threads of their own that wait for each other at a barrier,
  each then sleeping a random jitter, so every run of a race is a different interleaving;
- :func:`race_processes` does the same with separate processes (a Dagster run in a process of
  its own, as the run launcher starts it): each worker imports and builds everything first,
  says it is ready, and acts only once every worker is - the race is the work, not the start-up;
- :func:`racing_url` puts a ``lock_timeout`` on PostgreSQL sessions, so a statement that waits
  on a lock for minutes fails the race instead of hanging it;
- :func:`leftovers` says what a race left holding the database: on PostgreSQL a session of
  the test database inside a transaction, waiting on a lock or holding one (advisory locks
  included); on SQLite a writer still holding the write lock;
- counting wrappers of the image host and the printers, and a CDP whose segment reads meet
  (:class:`Rendezvous`), let a test count what each recipient cost and put two syncs' writes
  at the same moment.

The worker of :func:`race_processes` is this module run as a script:
``python -m tests.reliability.concurrency_support SPEC_FILE``.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from mail_pipeline.db.engine import normalize_url

ROOT = Path(__file__).resolve().parents[2]
#: A race that has not ended after this long hangs (a deadlock, a lost wake-up): it fails.
JOIN_TIMEOUT = 300.0
#: A racing PostgreSQL statement that waits this long for a lock fails instead of hanging.
LOCK_TIMEOUT = "60s"
#: How long a worker process may take to import and build everything on a loaded machine.
STARTUP = 180.0


# -- racing in threads ------------------------------------------------------------------------


def race(
    actors: Mapping[str, Callable[[], Any]],
    *,
    rng: random.Random,
    jitter: float = 0.03,
    timeout: float = JOIN_TIMEOUT,
) -> dict[str, Any]:
    """Run every actor in a thread of its own, all released at once by a barrier and each
    after a random pause of up to ``jitter`` seconds; their results by name. An actor still
    running after ``timeout`` fails the race as hung; an actor's exception is raised again."""
    names = list(actors)
    delays = {name: rng.uniform(0, jitter) for name in names}
    barrier = threading.Barrier(len(names))
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def act(name: str) -> None:
        try:
            barrier.wait(timeout=timeout)
            time.sleep(delays[name])
            results[name] = actors[name]()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors[name] = exc

    threads = {
        name: threading.Thread(target=act, args=(name,), name=f"race-{name}", daemon=True)
        for name in names
    }
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [name for name, thread in threads.items() if thread.is_alive()]
    assert not hung, f"still running after {timeout:g} s (deadlocked or hung): {hung}"
    for name, exc in errors.items():
        raise AssertionError(f"actor {name!r} failed: {exc!r}") from exc
    return results


# -- the database after a race ----------------------------------------------------------------


def is_postgres(db_url: str) -> bool:
    return make_url(db_url).get_backend_name() == "postgresql"


def racing_url(db_url: str, lock_timeout: str = LOCK_TIMEOUT) -> str:
    """``db_url`` for the racing actors: on PostgreSQL with a ``lock_timeout``."""
    if not is_postgres(db_url):
        return db_url
    url = make_url(normalize_url(db_url)).update_query_dict(
        {"options": f"-c lock_timeout={lock_timeout}"}
    )
    return url.render_as_string(hide_password=False)


_PG_SESSIONS = sa.text(
    """
    SELECT pid, state, wait_event_type, wait_event, application_name, left(query, 100)
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
      AND (state IS DISTINCT FROM 'idle' OR wait_event_type = 'Lock')
    """
)
_PG_LOCKS = sa.text(
    """
    SELECT l.pid, l.locktype, l.mode, l.granted, l.classid, l.objid
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE a.datname = current_database() AND l.pid <> pg_backend_pid()
    """
)


def leftovers(db_url: str) -> list[str]:
    """What is left holding the database: on PostgreSQL every other session of this database
    that is not idle (inside a transaction, running, waiting on a lock) and every lock another
    session holds (an idle pooled connection holds none, unless it kept an advisory lock); on
    SQLite, a writer that still holds the write lock. Empty when nothing is."""
    if not is_postgres(db_url):
        path = make_url(db_url).database
        connection = sqlite3.connect(str(path), timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            return [f"a writer still holds the SQLite database: {exc}"]
        finally:
            connection.close()
        return []
    engine = sa.create_engine(
        normalize_url(db_url), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            sessions = [f"session {tuple(row)}" for row in conn.execute(_PG_SESSIONS)]
            locks = [f"lock {tuple(row)}" for row in conn.execute(_PG_LOCKS)]
    finally:
        engine.dispose()
    return sessions + locks


def assert_nothing_left(db_url: str, *, settle: float = 30.0) -> None:
    """No session, lock or writer is left behind by a race. A connection a thread has just
    given back may still be finishing its reset, so this looks again for up to ``settle``
    seconds before it fails (a bound on waiting, not a measure of speed)."""
    deadline = time.monotonic() + settle
    found = leftovers(db_url)
    while found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = leftovers(db_url)
    assert not found, f"left behind after the race: {found}"


# -- counting what each recipient cost ---------------------------------------------------------


class CountingImages:
    """An image host client that counts the uploads of each recipient (a proof's front and
    back: two per rendering)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.uploads: Counter[int] = Counter()
        self._lock = threading.Lock()

    def upload(self, image_id: str, png: bytes, metadata: Mapping[str, Any] | None = None) -> Any:
        hosted = self.inner.upload(image_id, png, metadata)
        with self._lock:
            self.uploads[int((metadata or {})["recipient_id"])] += 1
        return hosted

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingPrinter:
    """A printer that counts the postcards asked of it for each recipient."""

    def __init__(self, inner: Any, counts: Counter[int], lock: threading.Lock) -> None:
        self.inner = inner
        self.name = inner.name
        self.counts = counts
        self._lock = lock

    def create_postcard(self, request: Any) -> Any:
        with self._lock:
            self.counts[request.recipient_id] += 1
        return self.inner.create_postcard(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- two syncs at the same moment ---------------------------------------------------------------


class Rendezvous:
    """Actors that each, at their first segment read, wait until every other actor has either
    reached its own first read or finished: then whatever follows the reads (the writes) of
    the actors still working happens at the same moment. An actor refused before it reads
    never holds the others up."""

    def __init__(self, names: Sequence[str], timeout: float = 60.0) -> None:
        self.names = set(names)
        self.timeout = timeout
        self._arrived: set[str] = set()
        self._done: set[str] = set()
        self._changed = threading.Condition()
        self._local = threading.local()

    def enter(self, name: str) -> None:
        """This thread acts as ``name`` from now on."""
        self._local.name = name

    def done(self, name: str) -> None:
        with self._changed:
            self._done.add(name)
            self._changed.notify_all()

    def meet(self) -> None:
        name = getattr(self._local, "name", None)
        if name is None:
            return
        with self._changed:
            if name in self._arrived:
                return
            self._arrived.add(name)
            self._changed.notify_all()
            self._changed.wait_for(
                lambda: self.names - {name} <= self._arrived | self._done, self.timeout
            )


class RendezvousCdp:
    """A CDP directory that reads the segment, then meets the other syncs (:class:`Rendezvous`)
    before it hands the pages over."""

    def __init__(self, inner: Any, rendezvous: Rendezvous) -> None:
        self.inner = inner
        self.rendezvous = rendezvous

    def segment_pages(self, integration: Any, segment_id: str) -> Iterator[Any]:
        pages = list(self.inner.segment_pages(integration, segment_id))
        self.rendezvous.meet()
        return iter(pages)


# -- racing in processes -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobActor:
    """A Dagster actor of :func:`race_processes`, in a process of its own.

    ``sensor``: the stage's staging sensor (its real factory, with the stage's run slots
    and batches of ``batch_size``) ticks once, and the runs it asks for are executed one
    after the other, as the daemon would launch them. ``on_demand``: the stage's job is
    executed for ``campaign_id``, as a person launches it from the launchpad or ``dagster job
    launch``, with ``tags`` saying who and why. ``late`` is added to the actor's random
    pause: an on-demand run has more to do before it claims (a whole run's start-up) than a
    sensor's tick, so a late sensor lets the two claims meet."""

    name: str
    kind: str  # "sensor" or "on_demand"
    stage: str  # "proofing" or "mailing"
    batch_size: int
    campaign_id: int | None = None
    tags: Mapping[str, str] | None = None
    late: float = 0.0


def race_processes(
    actors: Sequence[JobActor],
    *,
    database_url: str,
    data_dir: Path,
    dagster_home: Path,
    work_dir: Path,
    rng: random.Random,
    jitter: float = 0.2,
    timeout: float = JOIN_TIMEOUT,
) -> dict[str, dict[str, Any]]:
    """Run each actor in a process of its own against one app database, one sandbox folder
    and one Dagster instance (``dagster_home``); every process is released at once when all
    are ready, then pauses a random jitter. Returns each actor's report (see :func:`_act`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    go = work_dir / "go"
    processes: dict[str, tuple[subprocess.Popen[bytes], Path, Path, Path]] = {}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")},
        "DAGSTER_HOME": str(dagster_home),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        for actor in actors:
            spec_file = work_dir / f"{actor.name}.json"
            ready, report = work_dir / f"{actor.name}.ready", work_dir / f"{actor.name}.out"
            spec_file.write_text(
                json.dumps(
                    {
                        "actor": {
                            "name": actor.name,
                            "kind": actor.kind,
                            "stage": actor.stage,
                            "batch_size": actor.batch_size,
                            "campaign_id": actor.campaign_id,
                            "tags": dict(actor.tags or {}),
                        },
                        "database_url": database_url,
                        "data_dir": str(data_dir),
                        "ready": str(ready),
                        "go": str(go),
                        "report": str(report),
                        "delay": actor.late + rng.uniform(0, jitter),
                        "startup": STARTUP,
                    }
                )
            )
            log = (work_dir / f"{actor.name}.log").open("wb")
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tests.reliability.concurrency_support", str(spec_file)],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            finally:
                log.close()
            processes[actor.name] = (process, ready, report, work_dir / f"{actor.name}.log")
        deadline = time.monotonic() + STARTUP
        while not all(ready.exists() for _p, ready, _r, _l in processes.values()):
            for name, (process, _ready, _report, log_path) in processes.items():
                assert process.poll() is None, f"{name} ended before the race:\n{_tail(log_path)}"
            assert time.monotonic() < deadline, "the actors' processes did not get ready"
            time.sleep(0.05)
        go.touch()
        reports: dict[str, dict[str, Any]] = {}
        end = time.monotonic() + timeout
        for name, (process, _ready, report, log_path) in processes.items():
            try:
                status = process.wait(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"{name} still running after {timeout:g} s (deadlocked or hung):\n"
                    f"{_tail(log_path)}"
                ) from None
            assert status == 0 and report.exists(), (
                f"{name} failed (exit status {status}):\n{_tail(log_path)}"
            )
            reports[name] = json.loads(report.read_text())
        return reports
    finally:
        for process, *_rest in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def _act(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The worker: build the resources, sensor and job, wait for the start, act; report the
    sensor's skip message (if it asked for nothing) and for each run its id, success, output
    metadata and the lines it logged (``context.log``: what a person sees in the UI)."""
    import dagster as dg

    from mail_pipeline.definitions import sandbox_resources
    from mail_pipeline.jobs.pipeline import RUNS_IN_FLIGHT, mailing_job, proofing_job
    from mail_pipeline.sensors.pipeline import staging_sensor
    from mail_pipeline.services.staging import MAILING, PROOFING
    from mail_pipeline.settings import Environment, Settings

    actor = spec["actor"]
    stage, job, op = {
        "proofing": (PROOFING, proofing_job, "proof_recipients"),
        "mailing": (MAILING, mailing_job, "mail_recipients"),
    }[actor["stage"]]
    settings = Settings(Environment.TEST, spec["database_url"], Path(spec["data_dir"]))
    resources = without_delays(sandbox_resources(settings))
    sensor = staging_sensor(
        stage,
        job,
        op,
        batch_size=actor["batch_size"],
        max_runs_in_flight=RUNS_IN_FLIGHT[stage.name],
        interval_seconds=10,
        idle_seconds=0,
    )
    with dg.DagsterInstance.get() as instance:
        Path(spec["ready"]).touch()
        deadline = time.monotonic() + spec["startup"]
        while not Path(spec["go"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("never told to go")
            time.sleep(0.005)
        time.sleep(spec["delay"])
        skip: str | None = None
        if actor["kind"] == "sensor":
            data = sensor.evaluate_tick(
                dg.build_sensor_context(
                    instance=instance, resources={"database": resources["database"]}
                )
            )
            skip = data.skip_message
            runs = [
                job.execute_in_process(
                    run_config=request.run_config,
                    tags=request.tags,
                    resources=resources,
                    instance=instance,
                    raise_on_error=False,
                )
                for request in data.run_requests or []
            ]
        else:
            config = {"campaign_id": actor["campaign_id"], "batch_size": actor["batch_size"]}
            runs = [
                job.execute_in_process(
                    run_config={"ops": {op: {"config": config}}},
                    tags=actor["tags"],
                    resources=resources,
                    instance=instance,
                    raise_on_error=False,
                )
            ]
        reports = []
        for run in runs:
            metadata: dict[str, Any] = {}
            for event in run.all_events:
                if event.is_successful_output and event.step_output_data.metadata:
                    metadata.update(
                        {k: _jsonable(v.value) for k, v in event.step_output_data.metadata.items()}
                    )
            logged = [
                entry.user_message
                for entry in instance.all_logs(run.run_id)
                if entry.dagster_event is None
            ]
            reports.append(
                {
                    "run_id": run.run_id,
                    "success": run.success,
                    "metadata": metadata,
                    "logged": logged,
                }
            )
    return {"skip": skip, "runs": reports}


def without_delays(resources: Mapping[str, Any]) -> dict[str, Any]:
    """Sandbox resources with no latency and no injected failures: a race's outcome is then
    down to the race alone."""
    quiet = {}
    for key, resource in resources.items():
        fields = type(resource).model_fields if hasattr(type(resource), "model_fields") else {}
        update = {name: 0.0 for name in ("latency_seconds", "failure_rate") if name in fields}
        quiet[key] = resource.model_copy(update=update) if update else resource
    return quiet


def main(argv: Sequence[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    report = _act(spec)
    Path(spec["report"]).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
