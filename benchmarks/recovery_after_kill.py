"""How long a batch stays claimed after its run was killed together with the daemon.

    .venv/bin/python benchmarks/recovery_after_kill.py --trials 3 --stage proofing
    .venv/bin/python benchmarks/recovery_after_kill.py --trials 3 --stage mailing

Each trial runs the real ``dagster-daemon`` (the repository's ``dagster.yaml``: queued run
coordinator, default run launcher, SQLite storage) over a fresh data directory with the local
sandboxes, in its own process group:

1. seeds one Active campaign with ``--recipients`` Pending (``--stage proofing``) or Proofed
   (``--stage mailing``) recipients;
2. waits until a run of that stage holds a batch (its lease has a holder), plus a random
   0-3 s, and kills the daemon's whole process group with SIGKILL - daemon, code server and
   the run workers it spawned;
3. starts a new daemon and measures how long the killed run's recipients stay held (until
   recovery returns them: the target is under 3 minutes), how long until every recipient of
   the backlog is past the stage, what the Dagster instance says about the killed run, and,
   for mailing, whether any recipient got two postcards.

Prints one line per trial and a summary. Needs nothing but the project's virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Trial:
    stage: str
    held: int
    recovered_after: float
    done_after: float
    run_status: str
    duplicates: int


def _seed(url: str, stage: str, n: int) -> None:
    from mail_pipeline.db.engine import unit_of_work
    from mail_pipeline.db.migrate import upgrade
    from mail_pipeline.db.models import Campaign, Organization, Recipient
    from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus
    from mail_pipeline.domain.environments import Environment
    from mail_pipeline.domain.recipients import RecipientStatus

    upgrade(url, Environment.LOCAL)
    with unit_of_work(url) as session:
        org = Organization(name="Kill Bench", slug="kill-bench", country="US")
        session.add(org)
        session.flush()
        campaign = Campaign(
            organization_id=org.id,
            name="kill bench",
            campaign_mode=CampaignMode.AUTOMATED,
            status=CampaignStatus.ACTIVE,
            design={"template": "classic", "brand_name": "Bench", "headline": "Hi {first_name}"},
        )
        session.add(campaign)
        session.flush()
        proofed = stage == "mailing"
        rows = [
            {
                "organization_id": org.id,
                "campaign_id": campaign.id,
                "status": RecipientStatus.PROOFED if proofed else RecipientStatus.PENDING,
                "first_name": "Ann",
                "last_name": f"Lee{i}",
                "address1": f"{i} Main Street",
                "city": "New York",
                "region": "NY",
                "postal_code": "10017",
                "country": "US",
                "proof_front_url": "https://imagedelivery.net/bench/front/print"
                if proofed
                else None,
                "proof_back_url": "https://imagedelivery.net/bench/back/print" if proofed else None,
            }
            for i in range(n)
        ]
        session.execute(sa.insert(Recipient), rows)


def _daemon(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _holder(engine: sa.Engine, stage: str) -> str | None:
    """The run that holds a batch of ``stage``, if one does."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT holder FROM batch_leases WHERE stage = :s AND holder IS NOT NULL"),
            {"s": stage},
        ).scalar()


def _count(engine: sa.Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar() or 0)


def run_trial(stage: str, recipients: int, timeout: float) -> Trial:
    work = Path(tempfile.mkdtemp(prefix="kill-bench-"))
    home, data = work / "home", work / "data"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MAIL_PIPELINE_ENV": "local",
        "MAIL_PIPELINE_DATA_DIR": str(data),
    }
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "MAIL_PIPELINE_DATA_DIR")})
    url = f"sqlite:///{data}/mail_pipeline.sqlite"
    _seed(url, stage, recipients)
    engine = sa.create_engine(url)
    log = work / "daemon.log"
    daemon = _daemon(env, log)
    try:
        deadline = time.monotonic() + timeout
        held = None
        while held is None and time.monotonic() < deadline:
            held = _holder(engine, stage)
            time.sleep(0.2)
        if held is None:
            raise RuntimeError(f"no {stage} run took a batch in {timeout:.0f} s; see {log}")
        time.sleep(random.uniform(0, 3))
        _kill_group(daemon)
        killed_at = time.monotonic()
        run_id = held
        still_held = _count(
            engine, "SELECT count(*) FROM recipients WHERE claimed_by_run = :r", r=run_id
        )
        daemon = _daemon(env, log)
        recovered_at = done_at = None
        waiting = "Pending" if stage == "proofing" else "Proofed"
        in_stage = (
            ("ProofingStaged", "Proofing") if stage == "proofing" else ("SendingStaged", "Sending")
        )
        while time.monotonic() < killed_at + timeout:
            now = time.monotonic()
            if recovered_at is None and not _count(
                engine, "SELECT count(*) FROM recipients WHERE claimed_by_run = :r", r=run_id
            ):
                recovered_at = now
            left = _count(
                engine,
                "SELECT count(*) FROM recipients WHERE status IN (:a, :b, :c)",
                a=waiting,
                b=in_stage[0],
                c=in_stage[1],
            )
            if recovered_at is not None and left == 0:
                done_at = now
                break
            time.sleep(0.5)
        status = _run_status(run_id)
        duplicates = _duplicates(data) if stage == "mailing" else 0
        return Trial(
            stage,
            still_held,
            (recovered_at or float("nan")) - killed_at,
            (done_at or float("nan")) - killed_at,
            status,
            duplicates,
        )
    finally:
        _kill_group(daemon)
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


def _run_status(run_id: str) -> str:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        return "?" if run is None else run.status.value


def _duplicates(data: Path) -> int:
    from mail_pipeline.integrations.printers.sandbox import sandbox_transports
    from mail_pipeline.integrations.sandbox.store import SandboxStore

    lob = sandbox_transports(SandboxStore(data / "sandbox.sqlite"))["lob"]
    return lob.created_count() - len(lob.accepted_keys())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--stage", choices=["proofing", "mailing"], default="proofing")
    parser.add_argument("--recipients", type=int, default=600)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    trials = []
    print("trial  stage     held  recovered after  backlog done after  killed run  duplicates")
    for n in range(1, args.trials + 1):
        trial = run_trial(args.stage, args.recipients, args.timeout)
        trials.append(trial)
        print(
            f"{n:>5}  {trial.stage:<8} {trial.held:>5}  {trial.recovered_after:>13.1f} s"
            f"  {trial.done_after:>16.1f} s  {trial.run_status:<10}  {trial.duplicates:>10}",
            flush=True,
        )
    recovered = [t.recovered_after for t in trials]
    print(
        f"recovered after: median {statistics.median(recovered):.1f} s, "
        f"max {max(recovered):.1f} s over {len(trials)} trials; "
        f"duplicates {sum(t.duplicates for t in trials)}"
    )


if __name__ == "__main__":
    main()
