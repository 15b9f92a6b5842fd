"""Concurrency: actors that should never meet, made to meet on purpose - on SQLite, and on
PostgreSQL with ``MAIL_PIPELINE_TEST_DATABASE_URL``.

1. **Two daemons by mistake.** Two ``mail-pipeline daemon`` started at the same moment on one
   instance: one runs, the other refuses with exit status 3 naming the holder (lock file on
   SQLite storage, advisory lock on PostgreSQL storage); simultaneous takers of the instance
   lock have exactly one winner. Were two daemons' sensors to tick anyway, they would claim
   each recipient into exactly one batch with one lease.
2. **A person's run racing the sensor's run on the same campaign.** The sensor's tick and its
   run (which goes on claiming its organization's batches) against an on-demand run for the
   campaign; and a batch launched twice at once (the sensor's run and a re-execution of it).
   Each recipient is claimed once, rendered once, asked of a printer once; the run that got
   nothing says so.
3. **Two syncs of one organization forced at once.** Two "sync now" requests for one campaign:
   one syncs, the other's request fails saying which sync held the campaign. Two syncs of one
   organization writing two campaigns at the same moment: every person ends up mailable in at
   most one campaign (cross-campaign exclusion), and no profile becomes two recipients.
4. **Nothing left behind.** After every race, no session of the test database is left in a
   transaction, waiting on a lock or holding one (PostgreSQL), and no writer holds the SQLite
   database; a race that does not end within a generous bound fails as hung, and on PostgreSQL
   every racing session has a ``lock_timeout``.

Each race runs several times with seeded random sizes and start jitter (the seed is in the
test's id), so a race that can be lost shows up as a failing seed.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import sqlite3
import subprocess
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from mail_pipeline.db.engine import SessionFactory, dispose_engine, normalize_url, unit_of_work
from mail_pipeline.db.instance_locks import DAEMON_LOCK_FILE, DAEMON_LOCK_KEY, instance_lock
from mail_pipeline.db.models import BatchLease, Mailpiece, ManualSyncTrigger, Recipient
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.printers.strategy import DEFAULT_ROUTES, PrinterStrategy
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.pipeline import mailing_job, proofing_job
from mail_pipeline.resources.database import Database
from mail_pipeline.sensors.pipeline import staging_sensor
from mail_pipeline.services.daemon_guard import EXIT_REFUSED
from mail_pipeline.services.mailing import MailingServices, mail_batch
from mail_pipeline.services.manual_sync import request_sync, sync_for_request
from mail_pipeline.services.proofing import proof_batch
from mail_pipeline.services.staging import (
    MAILING,
    PROOFING,
    Continuation,
    Stage,
    claim_for_campaign,
    keep_claiming,
    stage_batches,
)
from mail_pipeline.services.sync import Outcome, SyncSettings, sync_organization
from tests.conftest import PG_ENV
from tests.integration.test_pipeline_services import PROOF_KEY, Shop
from tests.integration.test_sync_service import World, person
from tests.reliability.concurrency_support import (
    JOIN_TIMEOUT,
    CountingImages,
    CountingPrinter,
    JobActor,
    Rendezvous,
    RendezvousCdp,
    assert_nothing_left,
    is_postgres,
    leftovers,
    race,
    race_processes,
    racing_url,
)
from tests.supervision.conftest import BIN, STARTUP, alive, environment, start, wait_for

S = RecipientStatus
ASKED = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "the brand asked for today"}
STAGES = {"proofing": PROOFING, "mailing": MAILING}
#: Enough runs of each race for an interleaving that can be lost to show up.
SEEDS = range(6)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def race_url(db_url: str) -> Iterator[str]:
    """The test database as the racing actors reach it (``racing_url``); its engine goes
    with the test."""
    url = racing_url(db_url)
    yield url
    if url != db_url:
        dispose_engine(url)


@pytest.fixture
def shop(race_url: str, tmp_path: Path) -> Shop:
    return Shop(race_url, tmp_path / "data")


@pytest.fixture
def world(race_url: str, tmp_path: Path) -> World:
    return World(race_url, str(tmp_path / "sandbox.sqlite"))


@pytest.fixture
def quiet_dagster_home(tmp_path: Path) -> Path:
    """A Dagster home with SQLite storage and an empty ``dagster.yaml`` (an instance with no
    settings configures no Python logging when it logs, which threads may then share); its
    storage is created here, before processes racing on it would each try to."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    dg.DagsterInstance.from_config(str(home)).dispose()
    return home


@pytest.fixture
def daemon_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Dagster instance for ``mail-pipeline daemon``: SQLite storage (the lock is a file in
    its home), or PostgreSQL storage in a database of its own on the test server (the lock is
    an advisory lock there), created and initialised before any daemon starts."""
    home = tmp_path / "daemon_home"
    home.mkdir()
    if request.param == "sqlite":
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        _initialise_storage(environment(home))
        yield {
            "home": home,
            "env": environment(home),
            "lock": f"lock file {home / DAEMON_LOCK_FILE}",
            "url": None,
        }
        return
    server = os.environ[PG_ENV]
    admin = sa.create_engine(normalize_url(server), isolation_level="AUTOCOMMIT")
    name = f"mp_concurrency_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = (
        sa.engine.make_url(server)
        .set(drivername="postgresql+psycopg2", database=name)
        .render_as_string(hide_password=False)
    )
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
        "telemetry:\n  enabled: false\n"
    )
    env = environment(home, DAGSTER_PG_URL=url)
    try:
        _initialise_storage(env)
        yield {
            "home": home,
            "env": env,
            "lock": f"PostgreSQL advisory lock {DAEMON_LOCK_KEY} in database {name!r}",
            "url": url,
        }
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


STORAGES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _initialise_storage(env: dict[str, str]) -> None:
    """Create the instance's storage before any daemon starts, as on an instance that ran
    before. (Two daemons started together on a never-used instance race to create it, and
    the loser ends with Dagster's "table runs already exists" rather than the refusal: it
    still does not run, but that is Dagster's migration, not the lock, under test.)"""
    subprocess.run(
        [str(BIN / "python"), "-c", "import dagster as dg; dg.DagsterInstance.get().dispose()"],
        env=env,
        check=True,
        timeout=STARTUP,
        capture_output=True,
    )


# -- 1. two daemons by mistake --------------------------------------------------------------

#: The daemon's stand-in: writes its pid, then sleeps until signalled.
CHILD = "sh -c 'echo $$ > {pidfile}; exec sleep 600'"
DAEMON_ROUNDS = 3


def _started(pidfile: Path) -> bool:
    return pidfile.exists() and pidfile.read_text().strip() != ""


def _two_daemons_at_once(env: dict[str, str], tmp_path: Path, lock: str, round_: int) -> None:
    names = ("first", "second")
    pidfiles = {n: tmp_path / f"round{round_}-{n}.pid" for n in names}
    logs = {n: tmp_path / f"round{round_}-{n}.log" for n in names}
    command = [str(BIN / "mail-pipeline"), "daemon", "--wrapped-command"]
    daemons = {n: start([*command, CHILD.format(pidfile=pidfiles[n])], env, logs[n]) for n in names}
    try:

        def settled() -> bool:
            return all(d.poll() is not None or _started(pidfiles[n]) for n, d in daemons.items())

        wait_for(settled, STARTUP, "both daemons to start their daemon or refuse")
        running = [n for n, d in daemons.items() if d.poll() is None and _started(pidfiles[n])]
        refused = [n for n, d in daemons.items() if d.poll() == EXIT_REFUSED]
        said = {n: logs[n].read_text() for n in names}
        assert (len(running), len(refused)) == (1, 1), f"not one daemon and one refusal: {said}"
        (winner,), (loser,) = running, refused
        refusal = said[loser]
        assert "another dagster-daemon already runs for this Dagster instance" in refusal
        assert f"pid {daemons[winner].pid}" in refusal, "the refusal names the holder"
        assert "this one does not start" in refusal
        assert not pidfiles[loser].exists(), "the refused daemon never ran its command"
        assert f"holding the {lock}" in said[winner]
        child = int(pidfiles[winner].read_text())
        assert alive(child)
    finally:
        for daemon in daemons.values():
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
    assert daemons[winner].wait(timeout=STARTUP) == 128 + signal.SIGTERM
    wait_for(lambda: not alive(child), STARTUP, "the daemon to stop with its wrapper")


@pytest.mark.slow
@pytest.mark.parametrize("daemon_storage", STORAGES, indirect=True)
def test_two_daemons_started_at_once_one_runs_and_the_other_refuses(
    daemon_storage: dict[str, Any], tmp_path: Path
) -> None:
    """Two ``mail-pipeline daemon`` started back to back (a supervisor and a person, two
    hosts pointed at one instance), several times: whichever takes the lock first runs, the
    other exits with status 3 naming it, and the lock goes with its holder."""
    for round_ in range(DAEMON_ROUNDS):
        _two_daemons_at_once(daemon_storage["env"], tmp_path, daemon_storage["lock"], round_)
    # the lock went with its holder: the instance is free for the next daemon
    lock = instance_lock(daemon_storage["url"], daemon_storage["home"])
    assert lock.acquire() is None
    lock.release()
    if daemon_storage["url"]:
        assert_nothing_left(daemon_storage["url"])


@pytest.mark.parametrize("daemon_storage", STORAGES, indirect=True)
def test_simultaneous_takers_of_the_instance_lock_have_one_winner(
    daemon_storage: dict[str, Any],
) -> None:
    """The instance lock itself, taken by five takers released at once by a barrier (the
    tightest race a start-up can make): exactly one gets it, every other is told who has it."""
    url, home = daemon_storage["url"], daemon_storage["home"]
    rng = random.Random(0)
    for _round in range(15):
        locks = [instance_lock(url, home) for _ in range(5)]
        answers = race(
            {str(i): lock.acquire for i, lock in enumerate(locks)}, rng=rng, jitter=0.005
        )
        winners = [int(i) for i, holder in answers.items() if holder is None]
        try:
            assert len(winners) == 1, f"{len(winners)} takers got the lock: {answers}"
            for holder in answers.values():
                if holder is not None:  # the holder may not have written its name yet
                    assert f"pid {os.getpid()}" in holder or "has not written its name" in holder
        finally:
            for i in winners:
                locks[i].release()
    if url:
        assert_nothing_left(url)


def _daemons_sensor(stage: Stage, batch_size: int, slots: int) -> dg.SensorDefinition:
    job = proofing_job if stage is PROOFING else mailing_job
    op = "proof_recipients" if stage is PROOFING else "mail_recipients"
    return staging_sensor(
        stage, job, op, batch_size=batch_size, max_runs_in_flight=slots, interval_seconds=10
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_two_daemons_sensors_staging_one_backlog_claim_each_recipient_once(
    shop: Shop, race_url: str, quiet_dagster_home: Path, seed: int
) -> None:
    """Were two daemons to run, each would tick the staging sensors on its own: every tick
    claims (no run is launched here, so each sees every run slot free) until the backlog is
    gone. Every recipient lands in exactly one batch of one organization, with one lease, and
    the daemon that finds nothing left says so."""
    rng = random.Random(seed)
    stage = PROOFING if seed % 2 == 0 else MAILING
    waiting = S.PENDING if stage is PROOFING else S.PROOFED
    batch_size, slots = rng.randint(3, 10), rng.randint(2, 5)
    organization_of: dict[int, int] = {}
    for _ in range(3):
        org = shop.organization()
        for rid in shop.recipients(shop.campaign(org), rng.randint(5, 60), waiting):
            organization_of[rid] = org
    sensor = _daemons_sensor(stage, batch_size, slots)
    database = Database(url=race_url, environment="test")

    with dg.DagsterInstance.from_config(str(quiet_dagster_home)) as instance:

        def daemon() -> tuple[list[dg.RunRequest], str | None]:
            requests: list[dg.RunRequest] = []
            cursor = None
            while True:
                data = sensor.evaluate_tick(
                    dg.build_sensor_context(
                        instance=instance, resources={"database": database}, cursor=cursor
                    )
                )
                cursor = data.cursor or cursor
                if not data.run_requests:
                    return requests, data.skip_message
                requests.extend(data.run_requests)

        ticks = race({"daemon-1": daemon, "daemon-2": daemon}, rng=rng)

    requested = [r for requests, _skip in ticks.values() for r in requests]
    batches = [r.run_key for r in requested]
    assert len(batches) == len(set(batches)), "one run per batch"
    for _requests, skip in ticks.values():
        assert skip == f"no {waiting} recipients in campaigns that {stage.name} takes"
    with unit_of_work(race_url) as session:
        rows = session.execute(
            select(Recipient.id, Recipient.status, Recipient.batch_id, Recipient.attempts)
        ).all()
        leases = session.execute(select(BatchLease.batch_id, BatchLease.organization_id)).all()
    assert {rid for rid, *_rest in rows} == set(organization_of)
    assert {status for _rid, status, *_rest in rows} == {stage.to_status}
    assert all(attempts == 1 for *_rest, attempts in rows), "each recipient claimed once"
    members: dict[str, list[int]] = defaultdict(list)
    for rid, _status, batch, _attempts in rows:
        members[batch].append(rid)
    assert set(members) == set(batches), "every batch asked for a run, and only those"
    for request in requested:
        ids = members[request.run_key]
        assert 0 < len(ids) <= batch_size
        assert {organization_of[rid] for rid in ids} == {int(request.tags[tags.ORGANIZATION])}
    assert sorted(b for b, _org in leases) == sorted(batches), "one lease per batch"
    for batch, org in leases:
        assert {organization_of[rid] for rid in members[batch]} == {org}
    assert_nothing_left(race_url)


# -- 2. a person's run racing the sensor's run on the same campaign --------------------------


def _counting_mailing(shop: Shop) -> tuple[MailingServices, Counter[int]]:
    services = shop.mailing()
    asked: Counter[int] = Counter()
    lock = threading.Lock()
    printers = {
        name: CountingPrinter(printer, asked, lock)
        for name, printer in services.printers.printers.items()
    }
    return replace(services, printers=PrinterStrategy(DEFAULT_ROUTES, printers)), asked  # type: ignore[arg-type]


def _recipients(db_url: str, ids: list[int]) -> dict[int, Recipient]:
    with unit_of_work(db_url) as session:
        return {r.id: r for r in session.scalars(select(Recipient).where(Recipient.id.in_(ids)))}


@pytest.mark.parametrize("seed", SEEDS)
def test_an_on_demand_proofing_run_and_the_sensors_run_take_each_recipient_once(
    shop: Shop, race_url: str, seed: int
) -> None:
    """The sensor's tick claims a batch and its run works through it and goes on claiming the
    organization's batches (``keep_claiming``), while a person's on-demand run for the same
    campaign claims a batch of it (what ``proof_recipients`` does for ``campaign_id``). With
    an odd seed the campaign fits in one batch: whoever claims first takes it all."""
    rng = random.Random(seed)
    org = shop.organization()
    campaign = shop.campaign(org)
    batch_size = rng.randint(4, 12)
    n = rng.randint(15, 40) if seed % 2 == 0 else rng.randint(2, batch_size)
    ids = shop.recipients(campaign, n)
    renderer, images = shop.renderer(), CountingImages(shop.images())

    def proof(run_id: str) -> Callable[[str], Any]:
        return lambda batch: proof_batch(
            shop.sessions, batch, renderer, images, id_key=PROOF_KEY, run_id=run_id, concurrency=4
        )

    def sensor() -> list[Any]:
        claims = stage_batches(shop.sessions, PROOFING, free_slots=1, batch_size=batch_size)
        if not claims:
            return []
        return keep_claiming(
            shop.sessions,
            PROOFING,
            org,
            claims[0].batch_id,
            proof("sensor-run"),
            rules=Continuation(budget_seconds=JOIN_TIMEOUT, batch_size=batch_size),
            slot_free=lambda: True,
        )

    def on_demand() -> list[Any]:
        claim = claim_for_campaign(shop.sessions, PROOFING, campaign, batch_size)
        return [proof("manual-run")(claim.batch_id)] if claim.ids else []

    done = race({"sensor": sensor, "on_demand": on_demand}, rng=rng)

    results = [r for runs in done.values() for r in runs]
    rows = _recipients(race_url, ids)
    assert {r.status for r in rows.values()} == {S.PROOFED}
    assert {rid: r.attempts for rid, r in rows.items()} == dict.fromkeys(ids, 1), "claimed once"
    assert images.uploads == dict.fromkeys(ids, 2), "each proof rendered and hosted once"
    assert len({r.offer_code for r in rows.values()}) == n, "one offer code each"
    # every run's figures are its own: the batches partition the campaign's recipients
    assert sum(r.taken for r in results) == n and sum(r.proofed for r in results) == n
    taken = Counter(r.batch_id for r in rows.values())
    assert taken == {r.batch_id: r.taken for r in results}
    # a run that got nothing found nothing waiting: the other had taken it all
    for name, runs in done.items():
        if not runs:
            other = "on_demand" if name == "sensor" else "sensor"
            assert sum(r.taken for r in done[other]) == n
    assert_nothing_left(race_url)


@pytest.mark.parametrize(("stage", "seed"), [(s, seed) for s in STAGES for seed in range(3)])
def test_a_batch_launched_twice_at_once_is_worked_by_one_run(
    shop: Shop, race_url: str, stage: str, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The sensor's run and a person's re-execution of it (the same ``batch_id``) start
    together: one takes the batch's lease, the other takes nothing, asks nobody for anything,
    and says so in its result and its log."""
    rng = random.Random(seed)
    campaign = shop.campaign(shop.organization())
    n = rng.randint(8, 30)
    asked: Counter[int]
    if stage == "proofing":
        ids = shop.recipients(campaign, n)
        batch = shop.claim(S.PENDING, S.PROOFING_STAGED, campaign)
        renderer, images = shop.renderer(), CountingImages(shop.images())
        asked = images.uploads

        def work(run_id: str) -> Any:
            return proof_batch(
                shop.sessions, batch, renderer, images, id_key=PROOF_KEY, run_id=run_id
            )

        per_recipient, finished = 2, S.PROOFED
    else:
        ids = shop.recipients(campaign, n, S.PROOFED)
        batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
        services, asked = _counting_mailing(shop)

        def work(run_id: str) -> Any:
            return mail_batch(shop.sessions, batch, services, run_id=run_id)

        per_recipient, finished = 1, S.SENT

    done = race({run: functools.partial(work, run) for run in ("sensor-run", "rerun")}, rng=rng)

    held = [run for run, result in done.items() if result.held]
    assert len(held) == 1, f"runs that worked the batch: {held}"
    (winner,) = held
    (loser,) = set(done) - {winner}
    assert (done[winner].taken, done[loser].taken) == (n, 0)
    assert asked == dict.fromkeys(ids, per_recipient), "each recipient asked of a vendor once"
    assert set(shop.status(ids).values()) == {finished}
    refusal = f"batch {batch} not taken by {loser}: another run holds it ({winner})"
    assert refusal in caplog.text, "the refusal is logged, naming the holder"
    assert done[loser].refusal == f"another run holds it ({winner})"
    if stage == "mailing":
        assert done[winner].created == n and len(shop.meter_events()) == n
        with unit_of_work(race_url) as session:
            assert session.scalar(select(func.count()).select_from(Mailpiece)) == n
    assert_nothing_left(race_url)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "backlog", "seed"),
    [(s, backlog, seed) for s in STAGES for backlog in ("one batch", "batches") for seed in (0, 1)],
)
def test_an_on_demand_run_racing_the_sensors_run_in_processes_of_their_own(
    race_url: str, tmp_path: Path, quiet_dagster_home: Path, stage: str, backlog: str, seed: int
) -> None:
    """As in production: the sensor ticks and its run executes in one process, a person's
    run for the same campaign (launchpad, ``dagster job launch``) in another, on one Dagster
    instance. The runs' metadata - what people read in the UI - adds up to the campaign:
    nobody counted twice; a run that got nothing says why. With a backlog of one batch,
    whoever claims first takes it all and the other has nothing (with seed 1 the sensor
    ticks late, so that the person's run, which starts up first, may get there first)."""
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    shop = Shop(race_url, data_dir)
    org = shop.organization()
    campaign = shop.campaign(org)
    batch_size = rng.randint(5, 12)
    n = rng.randint(2, batch_size) if backlog == "one batch" else rng.randint(20, 40)
    waiting = S.PENDING if stage == "proofing" else S.PROOFED
    ids = shop.recipients(campaign, n, waiting)

    reports = race_processes(
        [
            JobActor("sensor", "sensor", stage, batch_size, late=1.0 * seed),
            JobActor("on_demand", "on_demand", stage, batch_size, campaign, ASKED),
        ],
        database_url=race_url,
        data_dir=data_dir,
        dagster_home=quiet_dagster_home,
        work_dir=tmp_path / "race",
        rng=rng,
        jitter=1.0,
    )

    runs = [run for report in reports.values() for run in report["runs"]]
    assert all(run["success"] for run in runs), runs
    rows = _recipients(race_url, ids)
    finished = S.PROOFED if stage == "proofing" else S.SENT
    assert {r.status for r in rows.values()} == {finished}
    assert {rid: r.attempts for rid, r in rows.items()} == dict.fromkeys(ids, 1), "claimed once"
    # the batches the runs list partition the recipients, and their figures add up to them
    listed: Counter[str] = Counter()
    for run in runs:
        for batch, count in run["metadata"].get("batch_ids", {}).items():
            assert batch not in listed, f"batch {batch} listed by two runs"
            listed[batch] = count
    assert listed == Counter(r.batch_id for r in rows.values())
    assert sum(run["metadata"]["recipients"] for run in runs) == n
    if stage == "proofing":
        assert sum(run["metadata"].get("proofed", 0) for run in runs) == n
    else:
        assert sum(run["metadata"].get("sent", 0) for run in runs) == n
        assert sum(run["metadata"].get("postcards_created", 0) for run in runs) == n
        assert sum(shop.printed().values()) == n and len(shop.meter_events()) == n
        with unit_of_work(race_url) as session:
            assert session.scalar(select(func.count()).select_from(Mailpiece)) == n
    # what the loser sees
    (manual,) = reports["on_demand"]["runs"]
    if manual["metadata"]["recipients"] == 0:
        message = f"campaign {campaign} has no recipient waiting for {stage}"
        assert message in manual["logged"]
    else:
        (batch,) = manual["metadata"]["batch_ids"]
        claimed = f"claimed batch {batch}: {manual['metadata']['recipients']} recipients"
        assert claimed in manual["logged"]
    if not reports["sensor"]["runs"]:
        assert reports["sensor"]["skip"] == (
            f"no {waiting} recipients in campaigns that {stage} takes"
        )
    assert_nothing_left(race_url)


# -- 3. two syncs of one organization forced at once ----------------------------------------


def _people(prefix: str, n: int) -> list[dict[str, Any]]:
    """``n`` people with addresses of their own (no two crowds share one)."""
    return [person(f"{prefix}{i:04d}", line1=f"{i + 1} {prefix} Street") for i in range(n)]


def _answering(meeting: Rendezvous, name: str, act: Callable[[], Any]) -> Callable[[], Any]:
    def answer() -> Any:
        meeting.enter(name)
        try:
            return act()
        finally:
            meeting.done(name)

    return answer


def _request(db_url: str, trigger_id: int) -> ManualSyncTrigger:
    with unit_of_work(db_url) as session:
        return session.get_one(ManualSyncTrigger, trigger_id)


@pytest.mark.parametrize("seed", SEEDS)
def test_two_requests_to_sync_one_campaign_at_once_one_syncs_the_other_is_refused_on_its_request(
    world: World, race_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    n = rng.randint(20, 120)
    world.segment("SEG", _people("P", n))
    sessions: SessionFactory = world.sessions
    triggers = {
        "run-1": request_sync(sessions, campaign, "ana@ops", "segment fixed"),
        "run-2": request_sync(sessions, campaign, "ben@ops", "clicked again"),
    }
    meeting = Rendezvous(list(triggers))
    cdp = RendezvousCdp(world.cdp, meeting)

    done = race(
        {
            run: _answering(
                meeting,
                run,
                functools.partial(sync_for_request, sessions, cdp, trigger, run, org, [campaign]),
            )
            for run, trigger in triggers.items()
        },
        rng=rng,
    )

    outcomes = {run: result.campaigns[0].outcome for run, result in done.items()}
    assert sorted(outcomes.values()) == [Outcome.LOCKED, Outcome.SYNCED], outcomes
    (winner,) = [run for run, outcome in outcomes.items() if outcome is Outcome.SYNCED]
    (loser,) = set(triggers) - {winner}
    assert sum(done[winner].created.values()) == n
    assert sum(done[loser].created.values()) == 0
    refusal = done[loser].campaigns[0].detail or ""
    assert f"another sync of this campaign (run:{winner}) holds its lock" in refusal
    answered = _request(race_url, triggers[winner])
    assert (answered.status, answered.synced_count, answered.error) == ("completed", n, None)
    refused = _request(race_url, triggers[loser])
    assert (refused.status, refused.synced_count) == ("failed", 0)
    assert f"campaign Win-back ({campaign}) was not synced by this request" in (refused.error or "")
    assert f"run:{winner}" in (refused.error or ""), "the request names the sync that had it"
    profiles = world.recipients(campaign)
    assert len(profiles) == world.count() == n, "one recipient per profile"
    assert_nothing_left(race_url)


@pytest.mark.parametrize(
    ("second", "seed"), [(s, seed) for s in ("request", "sync") for seed in SEEDS]
)
def test_two_syncs_of_one_organization_forced_at_once_keep_each_person_in_one_campaign(
    world: World, race_url: str, second: str, seed: int
) -> None:
    """The organization's sync (every campaign, in id order) and a second one forced past the
    one-sync-per-organization limit - a "sync now" request for the second campaign, or a
    second whole sync - meet with their segments read and their writes about to start. People
    in both segments must stay mailable in one campaign only."""
    rng = random.Random(seed)
    org = world.organization()
    spring = world.campaign(org, "Spring", segment="S1")
    autumn = world.campaign(org, "Autumn", segment="S2")
    both = _people("Both", rng.randint(30, 150))
    only = {spring: _people("Spring", rng.randint(5, 40)), autumn: _people("Autumn", 25)}
    world.segment("S1", both + only[spring])
    world.segment("S2", both + only[autumn])
    sessions: SessionFactory = world.sessions
    meeting = Rendezvous(["schedule", second])
    cdp = RendezvousCdp(world.cdp, meeting)
    trigger = request_sync(sessions, autumn, "ana@ops", "new segment") if second == "request" else 0

    def scheduled() -> Any:
        return sync_organization(sessions, cdp, org, SyncSettings(holder="run:schedule"))

    def forced() -> Any:
        if second == "request":
            return sync_for_request(sessions, cdp, trigger, "manual", org, [autumn])
        return sync_organization(sessions, cdp, org, SyncSettings(holder="run:forced"))

    done = race(
        {
            "schedule": _answering(meeting, "schedule", scheduled),
            second: _answering(meeting, second, forced),
        },
        rng=rng,
    )

    results: dict[int, list[Any]] = {c.campaign_id: [] for c in done["schedule"].campaigns}
    for result in done.values():
        for campaign in result.campaigns:
            assert campaign.outcome in (Outcome.SYNCED, Outcome.LOCKED), campaign
            results[campaign.campaign_id].append(campaign)
    for campaign_id, segment in ((spring, both + only[spring]), (autumn, both + only[autumn])):
        recipients = world.recipients(campaign_id)
        assert len(recipients) == len(segment), "one recipient per profile"
        created = sum(sum(c.created.values()) for c in results[campaign_id])
        assert created == len(segment), "each campaign synced by one of the two"
        for profile in only[campaign_id]:
            assert recipients[profile["id"]].status is S.PENDING
    in_spring, in_autumn = world.recipients(spring), world.recipients(autumn)
    for profile in both:
        pid = profile["id"]
        statuses = sorted([in_spring[pid].status, in_autumn[pid].status])
        assert statuses == sorted([S.PENDING, S.SKIPPED]), f"{pid} is mailable twice or never"
        skipped = in_spring[pid] if in_spring[pid].status is S.SKIPPED else in_autumn[pid]
        assert (skipped.status_reason or "").startswith("already a recipient of campaign")
    if second == "request":
        request = _request(race_url, trigger)
        (asked,) = done[second].campaigns
        if asked.outcome is Outcome.LOCKED:
            assert request.status == "failed" and "run:schedule" in (request.error or "")
        else:
            assert (request.status, request.synced_count) == (
                "completed",
                sum(asked.created.values()),
            )
    assert_nothing_left(race_url)


# -- 4. nothing left behind: the check itself ------------------------------------------------


def test_the_leftover_check_sees_a_transaction_left_open(race_url: str) -> None:
    """The check every race ends with fails while a writer keeps its transaction open
    (PostgreSQL: an idle-in-transaction session holding a row lock; SQLite: the write lock),
    and passes once it ends - so a race that leaked one would fail."""
    if not is_postgres(race_url):
        writer = sqlite3.connect(str(sa.engine.make_url(race_url).database), isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            found = leftovers(race_url)
            assert found and "a writer still holds the SQLite database" in found[0]
            writer.execute("ROLLBACK")
        finally:
            writer.close()
        assert leftovers(race_url) == []
        return
    engine = sa.create_engine(normalize_url(race_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT id FROM app_environment FOR UPDATE"))
            found = leftovers(race_url)
            assert any("idle in transaction" in line for line in found), found
            assert any("lock (" in line for line in found), found
            conn.rollback()
        assert leftovers(race_url) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_racing_session_blocked_on_a_lock_fails_instead_of_hanging(
    db_url: str, race_url: str
) -> None:
    """The racing actors' sessions carry a ``lock_timeout``: a statement stuck behind a lock
    that is never released (a deadlock PostgreSQL cannot see, such as one that goes through a
    thread of this process) ends the race with the error, not a hang."""
    with unit_of_work(race_url) as session:
        assert session.scalar(sa.text("SHOW lock_timeout")) == "1min"
    impatient = racing_url(db_url, lock_timeout="200ms")
    holder = sa.create_engine(normalize_url(db_url), poolclass=sa.pool.NullPool)
    try:
        with holder.connect() as conn:
            conn.execute(sa.text("SELECT id FROM app_environment FOR UPDATE"))
            with pytest.raises(AssertionError, match="canceling statement due to lock timeout"):
                race({"blocked": lambda: _lock_environment_row(impatient)}, rng=random.Random(0))
            conn.rollback()
    finally:
        holder.dispose()
        dispose_engine(impatient)
    assert_nothing_left(race_url)


def _lock_environment_row(url: str) -> None:
    with unit_of_work(url) as session:
        session.execute(sa.text("SELECT id FROM app_environment FOR UPDATE"))
