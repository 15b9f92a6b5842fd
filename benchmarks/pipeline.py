"""The whole system end to end: Pending recipients to Sent, as a user runs it.

    .venv/bin/python benchmarks/pipeline.py --recipients 1000
    .venv/bin/python benchmarks/pipeline.py --record            # 20,000, appends to docs

In a fresh temporary folder:

1. a ``DAGSTER_HOME`` holding the repository's ``dagster.yaml`` (queued run coordinator, the
   per-stage limits), with SQLite storage or, with ``--dagster-storage postgres``, a
   PostgreSQL database of its own (``DAGSTER_EVENT_BATCH_SIZE=1000`` as production sets it);
   the app database on PostgreSQL (``mp_bench_pipeline``, dropped and re-created) or the
   embedded SQLite (``--app-db sqlite``), migrated as a ``local`` database;
2. the vendors as one separate sandbox server process with fixed latencies, the code
   location pointed at it with ``MAIL_PIPELINE_SANDBOX_URL``;
3. ``--recipients`` Pending recipients inserted in SQL across ``--organizations`` US
   organizations with ``--campaigns`` Active campaigns each (the demo's design, a Stripe
   customer and a Klaviyo CDP integration, so every postcard has its meter event and CDP
   event);
4. ``dagster-daemon run -w workspace.yaml`` until every recipient is Sent, Received or Error
   (or ``--timeout``); counts per status are read from the app database every second.

Then it prints the figures (and with ``--record`` appends them to ``docs/benchmarks.md`` and
draws ``docs/img/pipeline-<date>.png``): throughput between 10 % and 90 % sent, time to the
first and the last Sent, per-recipient latency, runs per job, Dagster event-log rows per
recipient, CPU-seconds per recipient and peak RSS of the daemon's process tree, and the
exactly-once check against the sandbox store (one printer piece and one meter event per
mailed recipient).

CPU and memory come from ``/proc`` (psutil is not installed): every second, every process
whose parent chain or session leads to the daemon contributes ``utime+stime`` and, for the
children it has already reaped, ``cutime+cstime``; RSS is the sum of the live ones. A child
that exits between two samples is counted through its parent's ``cutime`` once reaped; a
process re-parented to init when its parent died early would be missed (none is expected:
the daemon reaps its code server, the code server its run workers). The sandbox server is
measured the same way, separately: it stands in for the vendors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG = "postgres@127.0.0.1:5432"
APP_DB = "mp_bench_pipeline"
DAGSTER_DB = "mp_bench_pipeline_dagster"
LATENCY = "renderer=0.2,cloudflare=0.1,lob=0.3,stannp=0.3,intelliprint=0.3,stripe=0.05,klaviyo=0.05"
#: The old Celery design staged 50 recipients every 15 s.
CELERY_PACE = 50 / 15
DONE = ("Sent", "Received", "Error", "Skipped", "Holdout", "Blacklisted")
US_PLACES = [
    ("Portland", "OR", "97205"),
    ("Austin", "TX", "78701"),
    ("Denver", "CO", "80202"),
    ("Brooklyn", "NY", "11201"),
    ("Madison", "WI", "53703"),
    ("Boise", "ID", "83702"),
]
US_STREETS = ["Maple Ave", "Oak St", "Cedar Ln", "Pine St", "Elm Dr", "Willow Way"]


# -- set-up ---------------------------------------------------------------------------------


@dataclass
class Setup:
    work: Path
    home: Path
    data: Path
    app_url: str
    dagster_pg_url: str | None
    env: dict[str, str]


def _recreate_pg_database(name: str) -> None:
    engine = sa.create_engine(f"postgresql+psycopg2://{PG}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def set_up(app_db: str, dagster_storage: str) -> Setup:
    from mail_pipeline.db.migrate import upgrade
    from mail_pipeline.domain.environments import Environment

    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    home, data = work / "home", work / "data"
    home.mkdir()
    data.mkdir()
    instance_yaml = (ROOT / "dagster.yaml").read_text()
    dagster_pg_url = None
    if dagster_storage == "postgres":
        _recreate_pg_database(DAGSTER_DB)
        dagster_pg_url = f"postgresql+psycopg2://{PG}/{DAGSTER_DB}"
        instance_yaml += "\nstorage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
    (home / "dagster.yaml").write_text(instance_yaml)
    if app_db == "postgres":
        _recreate_pg_database(APP_DB)
        app_url = f"postgresql://{PG}/{APP_DB}"
    else:
        app_url = f"sqlite:///{data}/mail_pipeline.sqlite"
    upgrade(app_url, Environment.LOCAL, stamped_by="benchmarks/pipeline.py")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_EVENT_BATCH_SIZE": "1000",
        "MAIL_PIPELINE_ENV": "local",
        "MAIL_PIPELINE_DATABASE_URL": app_url,
        "MAIL_PIPELINE_DATA_DIR": str(data),
    }
    if dagster_pg_url:
        env["DAGSTER_PG_URL"] = dagster_pg_url
    return Setup(work, home, data, app_url, dagster_pg_url, env)


def start_sandbox(setup: Setup, latency: str) -> tuple[subprocess.Popen[bytes], str]:
    """The vendors' server; returns it and its URL (the first line it prints)."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mail_pipeline.integrations.sandbox.server",
            "--store",
            str(setup.data / "sandbox.sqlite"),
            "--port",
            "0",
            "--latency-jitter",
            "0",
            "--latency",
            latency,
        ],
        cwd=ROOT,
        env=setup.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert server.stdout is not None
    first = server.stdout.readline().decode().strip()
    if "listening on " not in first:
        server.kill()
        raise RuntimeError(f"the sandbox server did not start: {first!r}")
    log = (setup.work / "sandbox.log").open("ab")
    threading.Thread(target=shutil.copyfileobj, args=(server.stdout, log), daemon=True).start()
    return server, first.rsplit(" ", 1)[-1]


def seed(
    url: str, store_path: Path, recipients: int, organizations: int, campaigns: int
) -> datetime:
    """Pending recipients spread evenly over the campaigns; returns when they were written.

    Each campaign has a CDP segment, empty in the sandbox Klaviyo: an automated campaign
    without one fails its scheduled sync, and an empty one gives the sync nothing to do."""
    from mail_pipeline.db.engine import unit_of_work
    from mail_pipeline.db.models import Campaign, Organization, OrganizationIntegration, Recipient
    from mail_pipeline.domain.addresses import address_key, email_key
    from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
    from mail_pipeline.domain.recipients import RecipientStatus
    from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData
    from mail_pipeline.integrations.sandbox.store import SandboxStore
    from mail_pipeline.services.demo import US_BRAND

    cdp = KlaviyoSandboxData(SandboxStore(store_path))

    campaign_ids: list[tuple[int, int]] = []
    with unit_of_work(url) as session:
        for o in range(organizations):
            org = Organization(
                name=f"Bench Brand {o}",
                slug=f"bench-brand-{o}",
                country="US",
                stripe_customer_id=f"cus_bench_{o}",
                return_address={
                    "name": f"Bench Brand {o}",
                    "line1": "400 Alder St",
                    "city": "Portland",
                    "region": "OR",
                    "postal_code": "97204",
                    "country": "US",
                },
            )
            session.add(org)
            session.flush()
            session.add(
                OrganizationIntegration(
                    organization_id=org.id,
                    kind=IntegrationKind.KLAVIYO,
                    secret_ref=f"KLAVIYO_API_KEY_BENCH{o}",
                    settings={},
                )
            )
            for c in range(campaigns):
                campaign = Campaign(
                    organization_id=org.id,
                    name=f"Bench campaign {o}.{c}",
                    campaign_mode=CampaignMode.AUTOMATED,
                    status=CampaignStatus.ACTIVE,
                    provider_segment_id=f"SEG-BENCH-{o}-{c}",
                    design=dict(US_BRAND.design),
                )
                cdp.put_segment_profiles(f"SEG-BENCH-{o}-{c}", [])
                session.add(campaign)
                session.flush()
                campaign_ids.append((org.id, campaign.id))
    seeded_at = datetime.now(UTC)
    chunk: list[dict[str, Any]] = []
    for i in range(recipients):
        org_id, campaign_id = campaign_ids[i % len(campaign_ids)]
        city, region, zip_code = US_PLACES[i % len(US_PLACES)]
        line1 = f"{100 + i % 900} {US_STREETS[i % len(US_STREETS)]} Unit {i}"
        email = f"bench.{i}@example.com"
        chunk.append(
            {
                "organization_id": org_id,
                "campaign_id": campaign_id,
                "status": RecipientStatus.PENDING,
                "status_changed_at": seeded_at,
                "created_at": seeded_at,
                "external_profile_id": f"01BENCH{i:012d}",
                "email": email,
                "email_key": email_key(email),
                "first_name": "Ann",
                "last_name": f"Lee{i}",
                "address1": line1,
                "city": city,
                "region": region,
                "postal_code": zip_code,
                "country": "US",
                "address_key": address_key(line1, zip_code, "US"),
            }
        )
        if len(chunk) == 5000 or i == recipients - 1:
            with unit_of_work(url) as session:
                session.execute(sa.insert(Recipient), chunk)
            chunk = []
    return seeded_at


# -- measuring the process tree -------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, int, float, int]]:
    """pid -> (ppid, session, cpu seconds incl. reaped children, rss bytes)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): ppid 4, session 6, utime 14 .. cstime 17, rss 24
        ppid, session = int(fields[1]), int(fields[3])
        cpu = sum(int(x) for x in fields[11:15]) / CLOCK_TICKS
        table[int(entry)] = (ppid, session, cpu, int(fields[21]) * PAGE)
    return table


def tree_usage(root: int, table: dict[int, tuple[int, int, float, int]]) -> tuple[float, int, int]:
    """CPU seconds, RSS bytes and process count of ``root``'s tree (parent chain or session)."""
    members = {pid for pid, (_p, session, _c, _r) in table.items() if session == root}
    members.add(root)
    grew = True
    while grew:
        grew = False
        for pid, (ppid, *_rest) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    live = [table[p] for p in members if p in table]
    return sum(t[2] for t in live), sum(t[3] for t in live), len(live)


# -- the run --------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    counts: dict[str, int]
    cpu: float
    rss: int
    processes: int
    vendor_cpu: float


@dataclass
class Observation:
    started_at: datetime
    samples: list[Sample] = field(default_factory=list)
    finished: bool = False
    elapsed: float = 0.0


def counts_by_status(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, count(*) FROM recipients GROUP BY status"))
        return {str(status): int(n) for status, n in rows}


def run_daemon(
    setup: Setup, server: subprocess.Popen[bytes], total: int, timeout: float
) -> Observation:
    engine = sa.create_engine(setup.app_url)
    log = (setup.work / "daemon.log").open("ab")
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=setup.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen = Observation(started_at)
    last_print = -10.0
    try:
        while True:
            now = time.monotonic() - t0
            counts = counts_by_status(engine)
            table = _proc_table()
            cpu, rss, processes = tree_usage(daemon.pid, table)
            vendor_cpu, _rss, _n = tree_usage(server.pid, table)
            seen.samples.append(Sample(now, counts, cpu, rss, processes, vendor_cpu))
            if now - last_print >= 10:
                shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                print(f"  {now:6.0f} s  {shown}  ({processes} processes)", flush=True)
                last_print = now
            if sum(counts.get(s, 0) for s in DONE) >= total:
                seen.finished = True
                break
            if now > timeout or daemon.poll() is not None:
                break
            time.sleep(1)
    finally:
        seen.elapsed = time.monotonic() - t0
        stop_group(daemon, grace=30)
        engine.dispose()
    return seen


def stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then the whole process group is killed."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# -- figures --------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def recipient_figures(url: str, started_at: datetime, seeded_at: datetime) -> dict[str, Any]:
    with sa.create_engine(url).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT sent_at FROM recipients WHERE sent_at IS NOT NULL ORDER BY sent_at")
        ).all()
        errors = conn.execute(
            sa.text(
                "SELECT status_reason, count(*) FROM recipients WHERE status = 'Error' "
                "GROUP BY status_reason ORDER BY count(*) DESC LIMIT 3"
            )
        ).all()
    sent = [_aware(r[0]) for r in rows]
    figures: dict[str, Any] = {"sent": len(sent), "errors": [(str(r), int(n)) for r, n in errors]}
    if not sent:
        return figures
    n = len(sent)
    t10, t90 = sent[int(0.1 * (n - 1))], sent[int(0.9 * (n - 1))]
    window = (t90 - t10).total_seconds()
    figures["throughput"] = (int(0.9 * (n - 1)) - int(0.1 * (n - 1))) / window if window else 0
    figures["first_sent"] = (sent[0] - started_at).total_seconds()
    figures["last_sent"] = (sent[-1] - started_at).total_seconds()
    latency = [(s - seeded_at).total_seconds() for s in sent]
    figures["latency_p50"] = _percentile(latency, 0.5)
    figures["latency_p99"] = _percentile(latency, 0.99)
    figures["daemon_start_after_seed"] = (started_at - seeded_at).total_seconds()
    return figures


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def dagster_figures(setup: Setup) -> dict[str, Any]:
    """Runs per job and status, and event-log rows, from the benchmark's instance."""
    import dagster as dg

    os.environ.update({k: v for k, v in setup.env.items() if k.startswith("DAGSTER_")})
    runs: Counter[tuple[str, str]] = Counter()
    events = 0
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            runs[(run.job_name, run.status.value)] += 1
            events += len(instance.all_logs(run.run_id))
    return {"runs": runs, "event_rows": events}


def exactly_once(setup: Setup) -> dict[str, int]:
    """Printer pieces and meter events per mailed recipient, from the sandbox store."""
    from mail_pipeline.integrations.billing.sandbox import METER_EVENTS
    from mail_pipeline.integrations.sandbox.store import SandboxStore

    store = SandboxStore(setup.data / "sandbox.sqlite")
    pieces: Counter[int] = Counter()
    with store.reading() as conn:
        for collection, doc in conn.execute(
            "SELECT collection, doc FROM docs WHERE collection LIKE 'printers.%.pieces'"
        ):
            body = json.loads(doc)
            metadata = (body.get("postcard") or body).get("metadata") or {}
            if collection == "printers.lob.pieces" and "recipient_id" in metadata:
                pieces[int(metadata["recipient_id"])] += 1
            else:
                pieces[-1] += 1  # a piece whose recipient this check cannot tell
        meter_ids = [
            json.loads(doc)["identifier"]
            for (doc,) in conn.execute("SELECT doc FROM docs WHERE collection = ?", (METER_EVENTS,))
        ]
    with sa.create_engine(setup.app_url).connect() as conn:
        mailed = {
            int(r)
            for (r,) in conn.execute(
                sa.text("SELECT id FROM recipients WHERE status IN ('Sent', 'Received')")
            )
        }
        # Stopped mid-run, a recipient may have its piece and meter event but not yet Sent.
        sending = {
            int(r)
            for (r,) in conn.execute(sa.text("SELECT id FROM recipients WHERE status = 'Sending'"))
        }
        billing: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT idempotency_key, recipient_id FROM side_effects WHERE kind LIKE :k"
                ),
                {"k": "billing%"},
            ).all()
        )
    meters: Counter[int] = Counter(int(billing.get(i, -1)) for i in meter_ids)
    return {
        "mailed": len(mailed),
        "pieces": sum(pieces.values()),
        "mailed_without_piece": sum(1 for r in mailed if pieces[r] == 0),
        "mailed_with_two_pieces": sum(1 for r in mailed if pieces[r] > 1),
        "pieces_of_sending": sum(n for r, n in pieces.items() if r in sending),
        "pieces_unaccounted": sum(
            n for r, n in pieces.items() if r not in mailed and r not in sending
        ),
        "meter_events": len(meter_ids),
        "mailed_without_meter": sum(1 for r in mailed if meters[r] == 0),
        "mailed_with_two_meters": sum(1 for r in mailed if meters[r] > 1),
    }


# -- report ---------------------------------------------------------------------------------


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def report(
    args: argparse.Namespace,
    seen: Observation,
    rec: dict[str, Any],
    dag: dict[str, Any],
    once: dict[str, int],
    plot: Path | None,
) -> str:
    n = args.recipients
    last = seen.samples[-1] if seen.samples else None
    cpu = max((s.cpu for s in seen.samples), default=0.0)
    vendor_cpu = max((s.vendor_cpu for s in seen.samples), default=0.0)
    peak_rss = max((s.rss for s in seen.samples), default=0)
    peak_procs = max((s.processes for s in seen.samples), default=0)
    final = ", ".join(f"{k} {v}" for k, v in sorted((last.counts if last else {}).items()))
    runs = dag["runs"]
    # Per mailed recipient (all of them when the run finished).
    per = max(once["mailed"], 1)
    # Unfinished, the percentiles are of the recipients sent before the timeout.
    of_sent = "sent" if seen.finished else f"of the {rec.get('sent', 0):,} sent by the timeout"
    jobs = sorted({job for job, _status in runs})
    run_cells = "; ".join(
        f"{job}: " + ", ".join(f"{runs[(job, st)]} {st}" for j, st in sorted(runs) if j == job)
        for job in jobs
    )
    lines = [
        f"## End to end (`benchmarks/pipeline.py`), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`{' '.join(['benchmarks/pipeline.py', *sys.argv[1:]])}` - {os.cpu_count()} cores "
        f"(`nproc` {len(os.sched_getaffinity(0))}), {_mem_gib():.0f} GiB RAM, "
        f"Python {platform.python_version()}; app database {args.app_db}, Dagster storage "
        f"{args.dagster_storage}; {args.organizations} organizations x {args.campaigns} "
        f"Active campaigns; sandbox server latency `{args.latency}`, no jitter.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| recipients | {n:,} ({'all done' if seen.finished else 'NOT finished'} after "
        f"{seen.elapsed:.0f} s: {final}) |",
        f"| throughput Pending -> Sent, 10 % to 90 % {of_sent} | "
        f"{rec.get('throughput', 0):.1f} recipients/s (Celery design: {CELERY_PACE:.1f}/s) |",
        f"| first Sent after daemon start | {rec.get('first_sent', float('nan')):.1f} s |",
        f"| {'last' if seen.finished else 'latest'} Sent after daemon start | "
        f"{rec.get('last_sent', float('nan')):.1f} s |",
        f"| latency seed -> Sent p50 / p99 | {rec.get('latency_p50', float('nan')):.0f} s / "
        f"{rec.get('latency_p99', float('nan')):.0f} s (bulk seed: queueing time; daemon "
        f"started {rec.get('daemon_start_after_seed', float('nan')):.1f} s after the seed) |",
        f"| runs | {sum(runs.values())} ({run_cells}) |",
        f"| Dagster event-log rows | {dag['event_rows']:,} ({dag['event_rows'] / per:.2f} per "
        f"mailed recipient) |",
        f"| CPU, daemon's process tree | {cpu:.0f} s ({cpu / per * 1000:.0f} ms per mailed "
        f"recipient) |",
        f"| CPU, sandbox server (vendors) | {vendor_cpu:.0f} s ({vendor_cpu / per * 1000:.0f} ms "
        f"per mailed recipient) |",
        f"| peak RSS, daemon's process tree | {peak_rss / 2**20:,.0f} MiB ({peak_procs} "
        f"processes at most) |",
        f"| exactly once | {once['mailed']:,} mailed; {once['pieces']:,} printer pieces "
        f"({once['mailed_without_piece']} mailed without, {once['mailed_with_two_pieces']} "
        f"with two, {once['pieces_of_sending']} of recipients still Sending, "
        f"{once['pieces_unaccounted']} unaccounted); {once['meter_events']:,} meter "
        f"events ({once['mailed_without_meter']} mailed without, "
        f"{once['mailed_with_two_meters']} with two) |",
    ]
    if rec.get("errors"):
        lines.append(
            "| Error reasons | "
            + "; ".join(f"{n} x {reason[:80]}" for reason, n in rec["errors"])
            + " |"
        )
    if plot is not None:
        lines += ["", f"![recipients per status over time]({plot.relative_to(ROOT / 'docs')})"]
    return "\n".join(lines) + "\n"


def draw(seen: Observation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    statuses = sorted({s for sample in seen.samples for s in sample.counts})
    t = [s.t for s in seen.samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for status in statuses:
        ax.plot(t, [s.counts.get(status, 0) for s in seen.samples], label=status)
    mailed = [s.counts.get("Sent", 0) + s.counts.get("Received", 0) for s in seen.samples]
    ax.plot(t, mailed, "k--", label="mailed (Sent + Received)")
    ax.set_xlabel("seconds since dagster-daemon started")
    ax.set_ylabel("recipients")
    ax.set_title("Recipients per status (benchmarks/pipeline.py)")
    ax.legend(fontsize="small", ncol=2)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--organizations", type=int, default=4)
    parser.add_argument("--campaigns", type=int, default=2, help="Active campaigns per org")
    parser.add_argument("--app-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--dagster-storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--latency", default=LATENCY, help="the sandbox server's --latency")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--plot", type=Path, help="PNG path (default with --record: docs/img)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    plot = args.plot
    if plot is None and args.record:
        plot = ROOT / "docs" / "img" / f"pipeline-{datetime.now(UTC):%Y-%m-%d}.png"
    if plot is not None:
        plot = plot.resolve()

    setup = set_up(args.app_db, args.dagster_storage)
    print(f"work folder {setup.work}", flush=True)
    server, url = start_sandbox(setup, args.latency)
    setup.env["MAIL_PIPELINE_SANDBOX_URL"] = url
    try:
        seeded_at = seed(
            setup.app_url,
            setup.data / "sandbox.sqlite",
            args.recipients,
            args.organizations,
            args.campaigns,
        )
        print(f"seeded {args.recipients:,} Pending; sandbox server at {url}", flush=True)
        seen = run_daemon(setup, server, args.recipients, args.timeout)
    finally:
        stop_group(server, grace=10)
    rec = recipient_figures(setup.app_url, seen.started_at, seeded_at)
    dag = dagster_figures(setup)
    once = exactly_once(setup)
    if plot is not None:
        draw(seen, plot)
    inside_docs = plot is not None and plot.is_relative_to(ROOT / "docs")
    text = report(args, seen, rec, dag, once, plot if inside_docs else None)
    print()
    print(text)
    if args.record:
        with (ROOT / "docs" / "benchmarks.md").open("a") as docs:
            docs.write("\n" + text)
    (setup.work / "samples.json").write_text(
        json.dumps([s.__dict__ for s in seen.samples], default=str)
    )
    if args.keep:
        print(f"kept {setup.work}")
    else:
        shutil.rmtree(setup.work, ignore_errors=True)
    return 0 if seen.finished else 1


if __name__ == "__main__":
    sys.exit(main())
