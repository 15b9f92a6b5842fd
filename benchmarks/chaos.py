"""Crash injection against the real processes: randomized SIGKILLs, recovery by itself.

    .venv/bin/python benchmarks/chaos.py --trials 100             # the full proof (~1 h)
    .venv/bin/python benchmarks/chaos.py --trials 10              # what .ci/run runs
    .venv/bin/python benchmarks/chaos.py --trials 100 --record    # and write docs/reliability.md

One system runs for the whole command, every part its own process, as in production:

- the app database and Dagster's storage on PostgreSQL (``--pg``, databases created for the
  run and dropped after it);
- every vendor served by the sandbox server (a separate HTTP process that is never killed:
  its ledgers are the referee) at small fixed latencies;
- ``dagster code-server start`` (the sensors run in it, and it starts the run workers) and
  ``dagster-daemon run`` with the repository's ``dagster.yaml`` (queued run coordinator, the
  per-stage limits, run monitoring, the local launcher with its worker health check);
- a supervisor loop in this command that restarts the daemon or the code server within
  ``--restart-after`` seconds of its death, as systemd or ECS would. Run workers are never
  restarted: Dagster's run monitoring, the batch leases and the sensors deal with them.

A **trial** is one fault and one piece of work. It creates an Active automated campaign in one
of four organizations with ``--recipients`` Pending recipients written in SQL and
``--profiles`` new profiles in the campaign's Klaviyo segment plus a manual sync request (as
``mail-pipeline request-sync`` files it), then injects its fault:

- a **crash point** (:mod:`mail_pipeline.failpoints`): the point is armed, and the first
  process of the system to reach it kills itself with SIGKILL there - after a claim, after
  rendering, after upload, after the printer accepted but before the commit, after the
  commit but before the queue delete, during a status update, during a sync (the run worker,
  or the code server for a sensor's claim);
- or a **process kill** at a random moment 5-40 s into the trial: SIGKILL of the daemon,
  the code server (its proxy and gRPC server; run workers survive, as separate tasks do) or
  a random run worker.

The trial is over when every recipient of its campaign has ended Sent, Received or Error (or
another final state, such as Holdout) and every profile of its segment has become exactly
one recipient, or after ``--trial-timeout`` seconds (its unfinished recipients count as
stuck). Then it is judged against the sandbox ledgers: each mailed recipient has exactly one
printer create (Lob's pieces, by the recipient id in their metadata), exactly one Stripe
meter event and exactly one Klaviyo event; no recipient that was not mailed has any; each
Error has a reason. Up to ``--lanes`` trials are in flight at once (each its own campaign),
so a fault often lands in another trial's work too: every trial is judged by its own
recipients whatever hit them. A final check judges every recipient of the run the same way.

The table: trials, faults injected by kind, crash points reached, duplicates, lost or stuck
recipients, and the time from the fault to the trial's last recipient done (p50, p99). The
exit status is 0 only when every trial is clean and every fault was injected.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline as bench

from mail_pipeline.failpoints import FAILPOINTS_VAR, POINTS, arm, disarm, hits

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "reliability.md"
LATENCY = (
    "renderer=0.05,cloudflare=0.02,lob=0.1,stannp=0.1,intelliprint=0.1,stripe=0.02,klaviyo=0.02"
)
DONE = frozenset(bench.DONE)
MAILED = frozenset(bench.MAILED)
PROCESS_KILLS = ("daemon", "code server", "run worker")
ORGANIZATIONS = 4


@dataclass
class Trial:
    number: int
    fault: str
    organization_id: int
    campaign_id: int
    profiles: list[str]
    started: float
    #: A process kill's moment (monotonic); None for a crash point.
    kill_due: float | None = None
    #: When the fault happened (monotonic), or None while it has not.
    faulted_at: float | None = None
    #: What was killed (a process kill), or the pid that died at the point.
    victim: str = ""
    given_up: bool = False
    finished_at: float | None = None
    verdict: dict[str, Any] = field(default_factory=dict)

    @property
    def is_point(self) -> bool:
        return self.fault.startswith("point ")

    @property
    def point(self) -> str:
        return self.fault.removeprefix("point ")

    @property
    def recovery(self) -> float | None:
        if self.finished_at is None or self.faulted_at is None:
            return None
        return max(0.0, self.finished_at - self.faulted_at)

    @property
    def clean(self) -> bool:
        v = self.verdict
        return bool(v) and not any(v[k] for k in PROBLEMS) and not self.given_up


#: The verdict's counts that make a trial unclean.
PROBLEMS = (
    "stuck",
    "lost_profiles",
    "duplicate_recipients",
    "two_pieces",
    "no_piece",
    "piece_not_mailed",
    "two_meter_events",
    "no_meter_event",
    "two_cdp_events",
    "no_cdp_event",
    "error_without_reason",
)


# -- the system -------------------------------------------------------------------------------


class System:
    """The processes of one run, and the supervisor that restarts the daemon and the code
    server."""

    def __init__(self, args: argparse.Namespace) -> None:
        from mail_pipeline.db.migrate import upgrade
        from mail_pipeline.domain.environments import Environment

        self.args = args
        pid = os.getpid()
        self.app_db, self.dagster_db = f"mp_chaos_app_{pid}", f"mp_chaos_dagster_{pid}"
        work = Path(tempfile.mkdtemp(prefix="chaos-"))
        home, data = work / "home", work / "data"
        home.mkdir()
        data.mkdir()
        self.failpoints = work / "failpoints"
        self.failpoints.mkdir()
        bench._recreate_pg_database(self.app_db)
        bench._recreate_pg_database(self.dagster_db)
        dagster_url = f"postgresql+psycopg2://{bench.PG}/{self.dagster_db}"
        app_url = f"postgresql://{bench.PG}/{self.app_db}"
        (home / "dagster.yaml").write_text(
            (ROOT / "dagster.yaml").read_text()
            + "\nstorage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
        )
        upgrade(app_url, Environment.LOCAL, stamped_by="benchmarks/chaos.py")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": dagster_url,
            "MAIL_PIPELINE_ENV": "local",
            "MAIL_PIPELINE_DATABASE_URL": app_url,
            "MAIL_PIPELINE_DATA_DIR": str(data),
            FAILPOINTS_VAR: str(self.failpoints),
        }
        env.pop(bench.RATE_LIMITS_VAR, None)
        self.setup = bench.Setup(work, home, data, app_url, dagster_url, env)
        self.engine = sa.create_engine(app_url, pool_pre_ping=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        bench.write_workspace(self.setup, self.port)
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.code_server: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.dead_since: dict[str, float] = {}
        self.restarts: Counter[str] = Counter()

    @property
    def work(self) -> Path:
        return self.setup.work

    def start(self) -> None:
        self.sandbox, url = bench.start_sandbox(self.setup, LATENCY, "trickle")
        self.setup.env["MAIL_PIPELINE_SANDBOX_URL"] = url
        self.code_server = self._start_code_server()
        self._wait_for_code_server()
        self.daemon = self._start_daemon()

    def _start_code_server(self) -> subprocess.Popen[bytes]:
        return bench.spawn_code_server(self.setup, self.port)

    def _wait_for_code_server(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the code server did not start: see {self.work / 'code_server.log'}")

    def _start_daemon(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(self.work / "workspace.yaml")],
            cwd=ROOT,
            env=self.setup.env,
            stdout=(self.work / "daemon.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    # -- processes ------------------------------------------------------------------------

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` belongs to this run (its environment names our crash points)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"{FAILPOINTS_VAR}={self.failpoints}".encode() in environ.split(b"\0")

    def run_workers(self) -> list[int]:
        """Live run workers (and step processes) of this run."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
                if b"spawn_main" in command and state != "Z" and self._ours(pid):
                    found.append(pid)
        return found

    def code_server_pids(self) -> list[int]:
        """The code server's proxy and its gRPC server (not the run workers it started,
        nor their helpers)."""
        assert self.code_server is not None
        table = bench._proc_table()
        found = []
        for pid in bench.tree_members(self.code_server.pid, table):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"code-server\0start" in command or b"api\0grpc\0" in command:
                    found.append(pid)
        return sorted(found)

    def _code_server_alive(self) -> bool:
        """The proxy lives and still has its gRPC server (the proxy does not replace a dead
        one: production's health check would restart the container)."""
        if self.code_server is None or self.code_server.poll() is not None:
            return False
        for pid in self.code_server_pids():
            with contextlib.suppress(OSError):
                if b"api\0grpc" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
        # Just started: the proxy has not spawned its server yet.
        return self.code_server.pid not in self.dead_since and self._young(self.code_server.pid)

    @staticmethod
    def _young(pid: int) -> bool:
        from mail_pipeline.run_launcher import process_state

        state = process_state(pid)
        return state is not None and state[1] is not None and time.time() - state[1] < 60

    def kill(self, target: str, rng: random.Random) -> str | None:
        """SIGKILL ``target``; what was killed, or None when there is none to kill now."""
        if target == "daemon":
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                return None
            os.killpg(self.daemon.pid, signal.SIGKILL)
            return f"daemon pid {self.daemon.pid}"
        if target == "code server":
            pids = self.code_server_pids()
            if not pids or not self._code_server_alive():
                return None
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return f"code server pids {pids}"
        workers = self.run_workers()
        if not workers:
            return None
        pid = rng.choice(workers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return f"run worker pid {pid}"

    def supervise(self) -> None:
        """Restart a dead daemon or code server ``--restart-after`` seconds after its death
        was noticed."""
        now = time.monotonic()
        assert self.daemon is not None and self.code_server is not None
        for name, alive in (
            ("code server", self._code_server_alive()),
            ("daemon", self.daemon.poll() is None),
        ):
            if alive:
                self.dead_since.pop(name, None)
                continue
            since = self.dead_since.setdefault(name, now)
            if now - since < self.args.restart_after:
                continue
            self.dead_since.pop(name)
            self.restarts[name] += 1
            if name == "daemon":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
                self.daemon = self._start_daemon()
            else:
                for pid in self.code_server_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.code_server.wait(10)
                self.code_server = self._start_code_server()
            print(f"  restarted the {name}", flush=True)

    def stop(self) -> None:
        for process in (self.daemon, self.code_server):
            if process is not None:
                bench.stop_group(process, grace=20)
        for pid in self.run_workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.sandbox is not None:
            bench.stop_group(self.sandbox, grace=10)

    def tear_down(self, keep: bool) -> None:
        self.engine.dispose()
        if keep:
            print(f"kept {self.work} and the databases {self.app_db}, {self.dagster_db}")
            return
        from mail_pipeline.db.engine import engine_for

        engine_for(self.setup.app_url).dispose()
        bench._pg_admin(
            [
                f'DROP DATABASE IF EXISTS "{self.app_db}" WITH (FORCE)',
                f'DROP DATABASE IF EXISTS "{self.dagster_db}" WITH (FORCE)',
            ]
        )
        shutil.rmtree(self.work, ignore_errors=True)


# -- work -------------------------------------------------------------------------------------


def seed_organizations(system: System) -> list[int]:
    bench.seed_campaigns(
        system.setup.app_url, system.setup.data / "sandbox.sqlite", ORGANIZATIONS, 0
    )
    with system.engine.connect() as conn:
        return [
            int(i) for (i,) in conn.execute(sa.text("SELECT id FROM organizations ORDER BY id"))
        ]


def profile(number: int, index: int) -> dict[str, Any]:
    from mail_pipeline.integrations.klaviyo.sandbox_data import profile_resource

    city, region, zip_code = bench.US_PLACES[index % len(bench.US_PLACES)]
    return profile_resource(
        f"01CHAOS{number:05d}P{index:03d}",
        f"chaos.{number}.{index}@example.com",
        "Kim",
        f"Park{number}x{index}",
        {
            "address1": f"{200 + index} Birch Rd Apt {number}",
            "city": city,
            "region": region,
            "zip": zip_code,
            "country": "US",
        },
    )


def new_work(system: System, number: int, organization_id: int) -> tuple[int, list[str]]:
    """A campaign with its Pending recipients, its segment's new profiles and a sync
    request; its id and the profiles' ids."""
    from mail_pipeline.db.engine import unit_of_work
    from mail_pipeline.db.models import Campaign, Recipient
    from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus
    from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData
    from mail_pipeline.integrations.sandbox.store import SandboxStore
    from mail_pipeline.services.demo import US_BRAND
    from mail_pipeline.services.manual_sync import request_sync

    url = system.setup.app_url
    segment = f"SEG-CHAOS-{number}"
    profiles = [profile(number, i) for i in range(system.args.profiles)]
    KlaviyoSandboxData(SandboxStore(system.setup.data / "sandbox.sqlite")).put_segment_profiles(
        segment, profiles
    )
    now = datetime.now(UTC)
    with unit_of_work(url) as session:
        campaign = Campaign(
            organization_id=organization_id,
            name=f"Chaos trial {number}",
            campaign_mode=CampaignMode.AUTOMATED,
            status=CampaignStatus.ACTIVE,
            provider_segment_id=segment,
            design=dict(US_BRAND.design),
        )
        session.add(campaign)
        session.flush()
        rows = [
            bench.recipient_row(number * 1000 + i, [(organization_id, campaign.id)], now)
            for i in range(system.args.recipients)
        ]
        if rows:
            session.execute(sa.insert(Recipient), rows)
        campaign_id = int(campaign.id)
    if profiles:
        request_sync(partial(unit_of_work, url), campaign_id, "chaos", f"trial {number}")
    return campaign_id, [str(p["id"]) for p in profiles]


# -- judging ----------------------------------------------------------------------------------


@dataclass
class Ledgers:
    """What the vendors recorded, by recipient id."""

    pieces: Counter[int]
    meters: Counter[int]
    cdp_events: Counter[int]
    unattributed_pieces: int


def read_ledgers(system: System) -> Ledgers:
    from mail_pipeline.integrations.billing.sandbox import METER_EVENTS
    from mail_pipeline.integrations.klaviyo.sandbox_data import EVENTS
    from mail_pipeline.integrations.sandbox.store import SandboxStore

    store = SandboxStore(system.setup.data / "sandbox.sqlite")
    pieces: Counter[int] = Counter()
    unattributed = 0
    meter_keys: list[str] = []
    cdp_keys: list[str] = []
    with store.reading() as conn:
        for (doc,) in conn.execute(
            "SELECT doc FROM docs WHERE collection LIKE 'printers.%.pieces'"
        ):
            body = json.loads(doc)
            metadata = (body.get("postcard") or body).get("metadata") or {}
            if "recipient_id" in metadata:
                pieces[int(metadata["recipient_id"])] += 1
            else:
                unattributed += 1
        for (doc,) in conn.execute("SELECT doc FROM docs WHERE collection = ?", (METER_EVENTS,)):
            meter_keys.append(json.loads(doc)["identifier"])
        for (doc,) in conn.execute("SELECT doc FROM docs WHERE collection = ?", (EVENTS,)):
            cdp_keys.append(str(json.loads(doc).get("unique_id")))
    with system.engine.connect() as conn:
        owners: dict[str, int] = dict(
            conn.execute(sa.text("SELECT idempotency_key, recipient_id FROM side_effects")).all()
        )
    meters = Counter(int(owners.get(k, -1)) for k in meter_keys)
    cdp = Counter(int(owners.get(k, -1)) for k in cdp_keys)
    return Ledgers(pieces, meters, cdp, unattributed)


def campaign_state(system: System, campaign_id: int) -> list[tuple[int, str, str | None, str]]:
    """``(id, status, reason, external profile id)`` of the campaign's recipients."""
    with system.engine.connect() as conn:
        return [
            (int(r), str(s), reason, str(p or ""))
            for r, s, reason, p in conn.execute(
                sa.text(
                    "SELECT id, status, status_reason, external_profile_id FROM recipients "
                    "WHERE campaign_id = :c"
                ),
                {"c": campaign_id},
            )
        ]


def finished(system: System, trial: Trial) -> bool:
    rows = campaign_state(system, trial.campaign_id)
    made = {p for _r, _s, _reason, p in rows}
    if any(p not in made for p in trial.profiles):
        return False
    return all(status in DONE for _r, status, _reason, _p in rows)


def judge(
    rows: Sequence[tuple[int, str, str | None, str]],
    profiles: Sequence[str],
    ledgers: Ledgers,
) -> dict[str, Any]:
    """The verdict on a set of recipients (and the profiles that must each have become
    one): every count but ``recipients`` and the status counts must be 0."""
    made = Counter(p for _r, _s, _reason, p in rows)
    mailed = [r for r, s, _reason, _p in rows if s in MAILED]
    unmailed = [r for r, s, _reason, _p in rows if s not in MAILED]
    return {
        "recipients": len(rows),
        "statuses": dict(Counter(s for _r, s, _reason, _p in rows)),
        "stuck": sum(1 for _r, s, _reason, _p in rows if s not in DONE),
        "lost_profiles": sum(1 for p in profiles if made[p] == 0),
        "duplicate_recipients": sum(1 for p in profiles if made[p] > 1),
        "two_pieces": sum(1 for r in mailed if ledgers.pieces[r] > 1),
        "no_piece": sum(1 for r in mailed if ledgers.pieces[r] == 0),
        "piece_not_mailed": sum(
            1 for r, s, _reason, _p in rows if s in DONE and s not in MAILED and ledgers.pieces[r]
        ),
        "two_meter_events": sum(1 for r in mailed if ledgers.meters[r] > 1),
        "no_meter_event": sum(1 for r in mailed if ledgers.meters[r] == 0),
        "two_cdp_events": sum(1 for r in mailed if ledgers.cdp_events[r] > 1),
        "no_cdp_event": sum(1 for r in mailed if ledgers.cdp_events[r] == 0),
        "error_without_reason": sum(
            1 for _r, s, reason, _p in rows if s == "Error" and not (reason or "").strip()
        ),
        "unmailed": len(unmailed),
    }


# -- the trials -------------------------------------------------------------------------------


ALL_FAULTS = [f"point {p}" for p in POINTS] + [f"kill {k}" for k in PROCESS_KILLS]


def plan(trials: int, rng: random.Random, only: Sequence[str] = ()) -> list[str]:
    """Each trial's fault: every crash point and every process kill in turn (or only those
    of ``only``), shuffled, so 100 trials cover each of the 15 faults 6 or 7 times."""
    faults = list(only) or ALL_FAULTS
    order = [faults[i % len(faults)] for i in range(trials)]
    rng.shuffle(order)
    return order


def inject(system: System, trial: Trial, rng: random.Random, now: float) -> None:
    """Move the trial's fault along: notice a crash point reached, or kill when due."""
    if trial.faulted_at is not None or trial.given_up:
        return
    if trial.is_point:
        reached = hits(system.failpoints, trial.point)
        if reached:
            pid, _at = reached[-1]
            trial.faulted_at, trial.victim = now, f"pid {pid}"
            print(f"  trial {trial.number}: {trial.point} reached, pid {pid} killed", flush=True)
            # Consume the record: the point may be armed again by a later trial.
            for path in system.failpoints.glob(f"{trial.point}.hit-*"):
                path.rename(system.failpoints / f"done-{trial.number}-{path.name}")
        elif now - trial.started > system.args.fault_timeout:
            with contextlib.suppress(FileNotFoundError):
                (system.failpoints / trial.point).unlink()
            trial.given_up = True
            print(f"  trial {trial.number}: {trial.point} was never reached", flush=True)
        return
    assert trial.kill_due is not None
    if now < trial.kill_due:
        return
    killed = system.kill(trial.fault.removeprefix("kill "), rng)
    if killed is not None:
        trial.faulted_at, trial.victim = now, killed
        print(f"  trial {trial.number}: killed the {killed}", flush=True)
    elif now - trial.started > system.args.fault_timeout:
        trial.given_up = True
        print(f"  trial {trial.number}: nothing to {trial.fault} was running", flush=True)


def run(args: argparse.Namespace, system: System) -> tuple[list[Trial], dict[str, Any]]:
    rng = random.Random(args.seed)
    print(f"work folder {system.work}", flush=True)
    faults = plan(args.trials, rng, args.faults)
    trials: list[Trial] = []
    final: dict[str, Any] = {}
    try:
        organizations = seed_organizations(system)
        system.start()
        print(f"system up; {args.trials} trials, {args.lanes} at a time", flush=True)
        last_start = -1e9
        t0 = time.monotonic()
        while True:
            now = time.monotonic()
            system.supervise()
            active = [t for t in trials if t.finished_at is None]
            armed = {t.point for t in active if t.is_point and t.faulted_at is None}
            number = len(trials) + 1
            # One trial per armed point at a time: a trial whose point is armed waits.
            fault = faults[number - 1] if number <= args.trials else ""
            if (
                fault
                and len(active) < args.lanes
                and now - last_start >= args.spacing
                and fault.removeprefix("point ") not in armed
            ):
                organization = organizations[number % len(organizations)]
                campaign_id, profiles = new_work(system, number, organization)
                trial = Trial(number, fault, organization, campaign_id, profiles, now)
                if trial.is_point:
                    arm(system.failpoints, trial.point)
                else:
                    trial.kill_due = now + rng.uniform(5, 40)
                trials.append(trial)
                last_start = now
                print(f"  {now - t0:6.0f} s  trial {number} begins: {fault}", flush=True)
            for trial in active:
                inject(system, trial, rng, now)
                fault_settled = trial.faulted_at is not None or trial.given_up
                timed_out = now - trial.started > args.trial_timeout
                if (fault_settled and finished(system, trial)) or timed_out:
                    trial.finished_at = now
                    trial.given_up = trial.given_up or trial.faulted_at is None
                    rows = campaign_state(system, trial.campaign_id)
                    trial.verdict = judge(rows, trial.profiles, read_ledgers(system))
                    recovered = trial.recovery
                    took = "-" if recovered is None else f"{recovered:.0f} s"
                    print(
                        f"  {now - t0:6.0f} s  trial {trial.number} "
                        f"{'clean' if trial.clean else 'NOT CLEAN'} ({trial.fault}; "
                        f"recovered in {took}): {_brief(trial.verdict)}",
                        flush=True,
                    )
            if len(trials) == args.trials and all(t.finished_at is not None for t in trials):
                break
            time.sleep(1)
        disarm(system.failpoints)
        final = final_check(system)
    finally:
        system.stop()
    return trials, final


def final_check(system: System) -> dict[str, Any]:
    """Every recipient of the run, judged once more after the last trial."""
    with system.engine.connect() as conn:
        rows = [
            (int(r), str(s), reason, str(p or ""))
            for r, s, reason, p in conn.execute(
                sa.text("SELECT id, status, status_reason, external_profile_id FROM recipients")
            )
        ]
    ledgers = read_ledgers(system)
    verdict = judge(rows, [], ledgers)
    verdict["unattributed_pieces"] = ledgers.unattributed_pieces
    return verdict


def _brief(verdict: dict[str, Any]) -> str:
    problems = {k: verdict[k] for k in PROBLEMS if verdict.get(k)}
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(verdict["statuses"].items()))
    return statuses + (
        "; " + ", ".join(f"{k} {v}" for k, v in problems.items()) if problems else ""
    )


# -- the report -------------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(trials: Sequence[Trial], final: dict[str, Any], system: System, seconds: float) -> str:
    clean = sum(1 for t in trials if t.clean)
    totals = {k: sum(t.verdict.get(k, 0) for t in trials) for k in PROBLEMS}
    duplicates = sum(
        totals[k]
        for k in ("two_pieces", "two_meter_events", "two_cdp_events", "duplicate_recipients")
    )
    injected = [t for t in trials if t.faulted_at is not None]
    recovery = [t.recovery for t in injected if t.recovery is not None]
    by_fault: dict[str, list[Trial]] = {}
    for t in trials:
        by_fault.setdefault(t.fault, []).append(t)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Crash injection, {when}, {platform.node()} ({os.cpu_count()} cores), PostgreSQL, "
        f"seed {system.args.seed}: `{' '.join(sys.argv)}`",
        "",
        "| trials | clean | faults injected | duplicates | lost | stuck | "
        "recovery p50 | recovery p99 | restarts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {len(trials)} | {clean} | {len(injected)} | "
        f"{duplicates} | "
        f"{totals['lost_profiles'] + totals['no_piece']} | {totals['stuck']} | "
        f"{_percentile(recovery, 0.5):.0f} s | {_percentile(recovery, 0.99):.0f} s | "
        f"{', '.join(f'{k} {v}' for k, v in sorted(system.restarts.items())) or 'none'} |",
        "",
        "| fault | trials | injected | clean | recovery p50 | recovery max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for fault in sorted(by_fault):
        group = by_fault[fault]
        times = [t.recovery for t in group if t.recovery is not None]
        lines.append(
            f"| {fault} | {len(group)} | {sum(1 for t in group if t.faulted_at is not None)} | "
            f"{sum(1 for t in group if t.clean)} | {_percentile(times, 0.5):.0f} s | "
            f"{max(times) if times else float('nan'):.0f} s |"
        )
    mailed = sum(v for k, v in final["statuses"].items() if k in MAILED)
    lines += [
        "",
        f"Every recipient at the end: {final['recipients']} ({_brief(final)}); {mailed} mailed, "
        f"pieces without a recipient id {final['unattributed_pieces']}. "
        f"Wall time {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines)


def record(text: str) -> None:
    heading = "## Measured: crash injection"
    body = DOC.read_text() if DOC.exists() else "# Reliability\n"
    if heading not in body:
        body = body.rstrip() + f"\n\n{heading}\n"
    start = body.index(heading) + len(heading)
    body = body[:start] + "\n\n" + text + "\n" + body[start:]
    DOC.write_text(body)


def _faults(text: str) -> list[str]:
    faults = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in faults if f not in ALL_FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown faults {unknown}; known: {ALL_FAULTS}")
    return faults


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--lanes", type=int, default=4, help="trials in flight at once")
    parser.add_argument("--spacing", type=float, default=10.0, help="seconds between trials")
    parser.add_argument("--recipients", type=int, default=20, help="Pending per trial")
    parser.add_argument("--profiles", type=int, default=4, help="segment profiles per trial")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument(
        "--faults",
        type=_faults,
        default=[],
        help="only these faults, comma-separated (e.g. 'point mailing.printed,kill daemon'); "
        f"default all: {', '.join(ALL_FAULTS)}",
    )
    parser.add_argument("--restart-after", type=float, default=3.0)
    parser.add_argument("--fault-timeout", type=float, default=300.0)
    parser.add_argument("--trial-timeout", type=float, default=900.0)
    parser.add_argument("--record", action="store_true", help=f"write the table to {DOC}")
    parser.add_argument("--keep", action="store_true", help="keep the folder and databases")
    return parser.parse_args(argv)


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C, so the processes and databases go too.
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    system = System(args)
    try:
        trials, final = run(args, system)
        text = report(trials, final, system, time.monotonic() - started)
    finally:
        system.tear_down(args.keep)
    print()
    print(text)
    if args.record:
        record(text)
    ok = (
        len(trials) == args.trials
        and all(t.clean for t in trials)
        and not any(final[k] for k in PROBLEMS if k in final)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
