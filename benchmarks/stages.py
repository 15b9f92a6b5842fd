"""The proofing and mailing stages' own cost, without Dagster around them.

    .venv/bin/python benchmarks/stages.py                          # 1,000 recipients, PostgreSQL
    .venv/bin/python benchmarks/stages.py --recipients 400 --app-db sqlite
    .venv/bin/python benchmarks/stages.py --profile /tmp/stages     # and where the CPU went

``benchmarks/pipeline.py`` measures the whole system (daemon, run workers, sensors); this
one measures what a run worker does per recipient, which is where most of that CPU is, in
a minute instead of ten, so a change to the services can be measured on its own:

- the app database is created for the run (PostgreSQL by default) and ``--recipients``
  Pending recipients written across 4 organizations x 2 Active campaigns, as the pipeline
  benchmark seeds them;
- every vendor is served by the sandbox server, a separate process at the pipeline
  benchmark's latencies with pre-rendered cards, client-side rate limits lifted (its
  throughput mode);
- the proofing stage: the recipients are claimed in batches of ``--batch-size`` as the
  sensors claim them, then ``--runs`` threads (the run slots) each take batches in turn and
  call ``services.proofing.proof_batch`` as a proofing run's op does; then the mailing stage
  the same way with ``services.mailing.mail_batch``.

Per stage it prints the wall time, recipients per second, and the CPU per recipient of this
process (the run workers' share) and of the sandbox server (the vendors'). ``--profile DIR``
samples this process with ``py-spy`` during each stage and prints where the samples fell:
by library (HTTP client, database, JSON, ...) and the busiest functions of the project.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline as bench

#: Where a py-spy sample's time is put: the first frame, from the leaf up, in one of these.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP client (httpx, httpcore, h11)", ("(httpx/", "(httpcore/", "(h11/")),
    ("sockets, ssl", ("(socket.py", "(ssl.py", "(selectors.py")),
    ("database (SQLAlchemy, drivers)", ("(sqlalchemy/", "(psycopg", "(sqlite3/")),
    ("JSON", ("(json/",)),
    ("logging", ("(logging/",)),
    ("threads, locks, queues", ("(threading.py", "(concurrent/", "(queue.py")),
    ("the project's own code", ("(mail_pipeline/",)),
)


@dataclass
class StageFigures:
    stage: str
    recipients: int
    wall: float
    cpu_ours: float
    cpu_vendors: float

    def row(self) -> str:
        n = max(self.recipients, 1)
        return (
            f"| {self.stage} | {self.recipients:,} | {self.wall:.1f} s | "
            f"{self.recipients / self.wall:.1f}/s | {self.cpu_ours / n * 1000:.1f} ms | "
            f"{self.cpu_vendors / n * 1000:.1f} ms |"
        )


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile_summary(raw: Path, top: int = 12) -> list[str]:
    """py-spy's ``raw`` output (``frame;frame;... count``, root first) summed by library and
    by the project's functions (inclusive: a sample counts once for each function on its
    stack)."""
    by_bucket: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        bucket = "other (Python, libraries)"
        for frame in reversed(frames):
            named = next((name for name, marks in BUCKETS if any(m in frame for m in marks)), None)
            if named is not None:
                bucket = named
                break
        by_bucket[bucket] += count
        for frame in {f.rsplit(":", 1)[0] for f in frames if "(mail_pipeline/" in f}:
            ours[frame + ")"] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total:,} busy samples", "", "| where | share |", "|---|---|"]
    lines += [f"| {name} | {n / total:.0%} |" for name, n in by_bucket.most_common()]
    lines += ["", "| project function (inclusive) | share |", "|---|---|"]
    lines += [f"| `{name}` | {n / total:.0%} |" for name, n in ours.most_common(top)]
    return lines


class Profiler:
    """``py-spy record`` of this process, sampling only the thread that holds the GIL: a
    thread blocked in ``recv`` is not always told from a busy one, and Python's own work
    is what runs under the GIL."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self.out is not None:
            self.process = subprocess.Popen(
                [
                    str(bench.BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(os.getpid()),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(self.out),
                    "--nonblocking",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)


def run_stage(
    name: str,
    batches: Sequence[str],
    runs: int,
    one: Callable[[str], Any],
    server_pid: int,
    profile: Path | None,
) -> tuple[StageFigures, list[str]]:
    """``runs`` threads take ``batches`` in turn and call ``one`` on each."""
    todo = list(batches)
    lock = threading.Lock()
    done: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                batch = todo.pop(0)
            try:
                result = one(batch)
            except BaseException as exc:  # noqa: BLE001 - reported after the stage
                errors.append(exc)
                return
            done.append(int(getattr(result, "taken", 0)))

    raw = profile / f"{name}.raw" if profile else None
    with Profiler(raw):
        cpu0, vendors0, wall0 = time.process_time(), process_cpu(server_pid), time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(runs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - wall0
        figures = StageFigures(
            name,
            sum(done),
            wall,
            time.process_time() - cpu0,
            process_cpu(server_pid) - vendors0,
        )
    if errors:
        raise RuntimeError(f"the {name} stage failed") from errors[0]
    return figures, profile_summary(raw) if raw and raw.exists() else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--app-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--runs", type=int, default=2, help="batches processed at once")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--latency", default=bench.LATENCY)
    parser.add_argument("--profile", type=Path, help="py-spy each stage into this folder")
    parser.add_argument("--keep", action="store_true", help="keep the databases and folder")
    args = parser.parse_args(argv)

    spec = bench.RunSpec("throughput", args.app_db, args.recipients)
    setup = bench.set_up(spec, "sqlite")
    server, url = bench.start_sandbox(setup, args.latency, spec.mode)
    setup.env["MAIL_PIPELINE_SANDBOX_URL"] = url
    os.environ.update(setup.env)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        from mail_pipeline.definitions import sandbox_resources
        from mail_pipeline.services.mailing import MailingServices, mail_batch
        from mail_pipeline.services.proofing import proof_batch
        from mail_pipeline.services.staging import MAILING, PROOFING, stage_batches
        from mail_pipeline.settings import load_settings

        campaigns = bench.seed_campaigns(setup.app_url, setup.data / "sandbox.sqlite", 4, 2)
        bench.seed_recipients(setup.app_url, campaigns, args.recipients)
        resources = sandbox_resources(load_settings())
        sessions = resources["database"].session
        renderer = resources["rendering"].renderer()
        image_host = resources["image_host"]
        images = image_host.client()
        services = MailingServices(
            printers=resources["printers"].strategy(),
            billing=resources["billing"].meter(),
            cdp=resources["cdp"],
            image_deletions=resources["queues"].image_deletion_queue(),
            test_mode=resources["printers"].test_mode,
        )

        def claim(stage: Any) -> list[str]:
            claims = stage_batches(sessions, stage, free_slots=10**6, batch_size=args.batch_size)
            return [c.batch_id for c in claims]

        rows, profiles = [], {}
        figures, summary = run_stage(
            "proofing",
            claim(PROOFING),
            args.runs,
            lambda batch: proof_batch(
                sessions, batch, renderer, images, id_key=image_host.proof_id_key, run_id=None
            ),
            server.pid,
            args.profile,
        )
        rows.append(figures.row())
        profiles["proofing"] = summary
        figures, summary = run_stage(
            "mailing",
            claim(MAILING),
            args.runs,
            lambda batch: mail_batch(sessions, batch, services, run_id=None),
            server.pid,
            args.profile,
        )
        rows.append(figures.row())
        profiles["mailing"] = summary
    finally:
        bench.stop_group(server, 5.0)
        bench.tear_down(setup, args.keep)

    print(
        f"\n{args.recipients:,} recipients, {args.app_db}, {args.runs} batches at once of "
        f"{args.batch_size}, latency {args.latency}\n"
    )
    print("| stage | recipients | wall | rate | CPU per recipient, ours | vendors |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for stage, summary in profiles.items():
        if summary:
            print(f"\n### {stage}: where this process's CPU went (py-spy)\n")
            print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
