"""Daily metrics over a year of orders, on PostgreSQL.

    .venv/bin/python benchmarks/daily_metrics.py
    .venv/bin/python benchmarks/daily_metrics.py --record \\
        --server postgresql://postgres@127.0.0.1:5432/postgres --orders 10000000

Creates its own database (``mp_bench_daily_metrics``) on the server, migrates it and fills
it in SQL: 100 organizations, 500 campaigns, ``--recipients`` recipients (mailed, received,
failed, held out, waiting; a mailpiece per mailed one, some in pounds, some returned),
``--orders`` orders over the last 365 New York days (refunds, cancellations, two
currencies), one in ten attributed (offer code, email, address) and one in two hundred
matched to a holdout recipient. Then it times:

1. the 365-day backfill of both daily metrics, as the one call a single-run backfill makes
   (``services.metrics.refresh_order_metrics`` / ``refresh_recipient_metrics`` over the
   whole range), then the same through Dagster: one run of both assets over every daily
   partition that exists (they start on ``partitions.HISTORY_START``), as a single-run
   backfill launches it - the range tags, the code location's executor, a Dagster instance
   with PostgreSQL storage and batched event writes as production has
   (``--dagster-storage sqlite``: SQLite storage as ``make run`` has) - timed as the run's
   duration (start to end, as the UI shows it) and from launch to result; every partition
   must then be recorded as materialized;
2. a refresh of today's partition with all the orders in the table, as the call and as a
   Dagster run of both assets;
3. the campaign results.

Each timing includes the checks that run with it. ``--record`` appends the figures to
docs/benchmarks.md. The database is dropped at the end unless ``--keep`` (``--reuse`` then
times it again without filling it).
"""

from __future__ import annotations

import argparse
import os
import textwrap
import time
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from mail_pipeline.assets import metrics as assets
from mail_pipeline.db.engine import dispose_engine, normalize_url, unit_of_work
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.definitions import EXECUTOR
from mail_pipeline.domain.environments import Environment
from mail_pipeline.domain.metrics import DayRange, day_of, day_start
from mail_pipeline.partitions import HISTORY_START
from mail_pipeline.resources.database import Database
from mail_pipeline.services.metrics import (
    refresh_campaign_results,
    refresh_order_metrics,
    refresh_recipient_metrics,
)

DATABASE = "mp_bench_daily_metrics"
#: Dagster's switch for batched event writes (PostgreSQL storage), and production's value.
EVENT_BATCH_VAR = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = "1000"
#: The Dagster instance's own database with ``--dagster-storage postgres``.
DAGSTER_DATABASE = "mp_bench_dagster"
ORGANIZATIONS = 100
CAMPAIGNS_PER_ORGANIZATION = 5
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def fill(url: str, *, orders: int, recipients: int, start: datetime, now: datetime) -> None:
    """The base tables, generated in SQL (deterministic: the same arguments give the same
    rows)."""
    campaigns = ORGANIZATIONS * CAMPAIGNS_PER_ORGANIZATION
    year = (now - start).total_seconds()
    p = {"start": start, "now": now, "year": year, "n": orders, "r": recipients}
    statements = [
        f"""INSERT INTO organizations (id, name, slug, status, country, csm_cadence,
            auto_commit_uploads, timezone, created_at, updated_at)
            SELECT o, 'Brand ' || o, 'brand-' || o, 'active', 'US', 'weekly', false,
                   'America/New_York', :start, :start
            FROM generate_series(1, {ORGANIZATIONS}) o""",
        f"""INSERT INTO campaigns (id, organization_id, name, campaign_mode, status, design,
            postage, holdout_percentage, attribution_window_days, created_at, updated_at)
            SELECT c, (c - 1) / {CAMPAIGNS_PER_ORGANIZATION} + 1, 'Campaign ' || c,
                   'automated', 'Active', '{{}}', 'first_class', 10, 30, :start, :start
            FROM generate_series(1, {campaigns}) c""",
        # recipients: status by a hash of the id; milestones a day or more apart, never
        # after now
        f"""INSERT INTO recipients (id, organization_id, campaign_id, status, status_changed_at,
            source, email_key, attempts, properties, created_at, updated_at, proofed_at,
            sent_at, received_at)
            SELECT i, (c - 1) / {CAMPAIGNS_PER_ORGANIZATION} + 1, c, s,
                   LEAST(created + CASE s WHEN 'Received' THEN interval '6 days'
                                         WHEN 'Error' THEN interval '5 days'
                                         WHEN 'Sent' THEN interval '2 days'
                                         ELSE interval '0' END, :now),
                   'cdp', 'r' || i || '@example.com', 1, '{{}}', created, created,
                   CASE WHEN s IN ('Sent', 'Received', 'Error')
                        THEN LEAST(created + interval '1 day', :now) END,
                   CASE WHEN s IN ('Sent', 'Received', 'Error')
                        THEN LEAST(created + interval '2 days', :now) END,
                   CASE WHEN s = 'Received' THEN LEAST(created + interval '6 days', :now) END
            FROM (
                SELECT i, i % {campaigns} + 1 AS c,
                       :start + make_interval(secs => (i::bigint * 104729) % (:year)::bigint)
                           AS created,
                       CASE WHEN (i * 7919) % 100 < 10 THEN 'Holdout'
                            WHEN (i * 7919) % 100 < 13 THEN 'Error'
                            WHEN (i * 7919) % 100 < 40 THEN 'Sent'
                            WHEN (i * 7919) % 100 < 95 THEN 'Received'
                            ELSE 'Pending' END AS s
                FROM generate_series(1::bigint, :r) i
            ) g""",
        """INSERT INTO mailpieces (recipient_id, attempt, organization_id, campaign_id, printer,
            idempotency_key, status, postage, cost_minor, currency, accepted_at, last_event_at,
            created_at, updated_at)
            SELECT id, 1, organization_id, campaign_id,
                   CASE WHEN id % 20 = 0 THEN 'stannp' ELSE 'lob' END, 'bench-' || id,
                   CASE WHEN status = 'Error' THEN 'failed'
                        WHEN id % 100 = 1 THEN 'returned'
                        WHEN status = 'Received' THEN 'delivered' ELSE 'mailed' END,
                   'first_class', CASE WHEN id % 20 = 0 THEN 60 ELSE 65 END,
                   CASE WHEN id % 20 = 0 THEN 'GBP' ELSE 'USD' END,
                   sent_at, status_changed_at, sent_at, sent_at
            FROM recipients WHERE sent_at IS NOT NULL""",
        # orders: spread evenly over the year (with a jitter), one organization in turn
        f"""INSERT INTO orders (id, organization_id, source, external_order_id, email_key,
            discount_codes, total_minor, refunded_minor, currency, ordered_at, cancelled,
            created_at, updated_at)
            SELECT j, j % {ORGANIZATIONS} + 1, 'shopify', 'b' || j, 'c' || (j % 500000) || '@x',
                   '[]', 1000 + (j * 37) % 20000,
                   CASE WHEN j % 20 = 0 THEN (1000 + (j * 37) % 20000) / 2 ELSE 0 END,
                   CASE WHEN j % 50 = 3 THEN 'CAD' ELSE 'USD' END, t, j % 100 = 7, t, t
            FROM (
                SELECT j, :start + make_interval(
                    secs => (j::float8 / :n) * :year + ((j * 7) % 3600) - 1800) AS t
                FROM generate_series(1::bigint, :n) j
            ) g
            WHERE t < :now""",
        # attributions: every tenth order, to a recipient of one of its organization's
        # campaigns
        f"""INSERT INTO attributions (order_id, recipient_id, campaign_id, organization_id,
            match_type, revenue_minor, currency, attributed_at)
            SELECT o.id, r.id, r.campaign_id, o.organization_id,
                   (ARRAY['offer_code', 'email', 'address'])[o.id / 10 % 3 + 1],
                   o.total_minor - o.refunded_minor, o.currency, o.ordered_at
            FROM orders o
            JOIN recipients r ON r.id = ((o.id * 7) % ((:r - 1) / {campaigns} - 1)) * {campaigns}
                 + ((o.organization_id - 1) * {CAMPAIGNS_PER_ORGANIZATION}
                    + (o.id / 1000) % {CAMPAIGNS_PER_ORGANIZATION}) + {campaigns}
            WHERE o.id % 1000 < 100""",
        f"""INSERT INTO holdout_matches (order_id, recipient_id, campaign_id, organization_id,
            match_type, revenue_minor, currency, matched_at)
            SELECT o.id, r.id, r.campaign_id, o.organization_id, 'email',
                   o.total_minor - o.refunded_minor, o.currency, o.ordered_at
            FROM orders o
            JOIN recipients r ON r.id = ((o.id * 11) % ((:r - 1) / {campaigns} - 1)) * {campaigns}
                 + ((o.organization_id - 1) * {CAMPAIGNS_PER_ORGANIZATION}
                    + (o.id / 20000) % {CAMPAIGNS_PER_ORGANIZATION}) + {campaigns}
            WHERE o.id % 20000 < 100""",
    ]
    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        for statement in statements:
            started = time.perf_counter()
            result = conn.execute(sa.text(statement), p)
            table = statement.split()[2]
            print(f"  {table}: {result.rowcount:,} rows ({time.perf_counter() - started:.1f} s)")
        for table in ("organizations", "campaigns", "recipients", "mailpieces", "orders"):
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
        for table in ("attributions", "holdout_matches"):
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        started = time.perf_counter()
        conn.execute(sa.text("VACUUM ANALYZE"))
        print(f"  VACUUM ANALYZE ({time.perf_counter() - started:.1f} s)")
    engine.dispose()


def timed(what: str, work: Callable[[], Any], figures: list[tuple[str, float]]) -> Any:
    started = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - started
    figures.append((what, elapsed))
    print(f"{what}: {elapsed:.2f} s")
    return result


#: Where the run's processes find the benchmark's database (``backfill_job``).
URL_VAR = "MAIL_PIPELINE_BENCH_DATABASE_URL"
BACKFILL_JOB = "daily_metrics_backfill"


def backfill_job() -> dg.JobDefinition:
    """Both daily metrics as the code location runs an asset backfill (its executor:
    ``definitions.EXECUTOR``), on the benchmark's database."""
    selection = [assets.daily_order_metrics, assets.daily_recipient_metrics]
    defs = dg.Definitions(
        assets=selection,
        jobs=[dg.define_asset_job(BACKFILL_JOB, selection=selection)],
        resources={"database": Database(url=os.environ[URL_VAR], environment="test")},
        executor=EXECUTOR,
    )
    return defs.resolve_job_def(BACKFILL_JOB)


def _instance(dagster_storage_url: str | None) -> Any:
    """A temporary Dagster instance: SQLite storage as ``make run`` has, or PostgreSQL
    storage (``dagster-postgres``, as production has) at ``dagster_storage_url``."""
    if dagster_storage_url is None:
        return dg.DagsterInstance.local_temp()
    return dg.instance_for_test(
        overrides={"storage": {"postgres": {"postgres_url": dagster_storage_url}}}
    )


def run_backfill(
    url: str, span: DayRange, dagster_storage_url: str | None = None
) -> tuple[float, float]:
    """One run of ``backfill_job`` over ``span`` (the range tags a single-run backfill
    carries), on a temporary instance (:func:`_instance`). Returns the run's duration as
    Dagster records it (start to end, as the UI shows) and the seconds from launch to
    result."""
    os.environ[URL_VAR] = url
    tags = {
        assets.RANGE_START_TAG: span.first.isoformat(),
        assets.RANGE_END_TAG: span.last.isoformat(),
        "dagster/backfill": "benchmark",  # as the backfill daemon tags the run it launches
    }
    with warnings.catch_warnings(), _instance(dagster_storage_url) as instance:
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        launched = time.time()
        with dg.execute_job(
            dg.reconstructable(backfill_job), instance=instance, tags=tags
        ) as result:
            wall = time.perf_counter() - started
            assert result.success, "the backfill run failed"
            checks = result.get_asset_check_evaluations()
            failed = [c.check_name for c in checks if not c.passed]
            assert checks and not failed, f"checks failed: {failed}"
            for asset in (assets.daily_order_metrics, assets.daily_recipient_metrics):
                recorded = instance.get_materialized_partitions(asset.key)
                assert len(recorded) == len(span), f"{asset.key}: {len(recorded)} partitions"
            record = instance.get_run_record_by_id(result.run_id)
            assert record and record.start_time and record.end_time
            created = record.create_timestamp.timestamp()
            print(
                f"  launch -> run created {created - launched:.2f} s, created -> start "
                f"{record.start_time - created:.2f} s, end -> result "
                f"{launched + wall - record.end_time:.2f} s"
            )
            return record.end_time - record.start_time, wall


def materialize(url: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = dg.materialize(
            [assets.daily_order_metrics, assets.daily_recipient_metrics],
            resources={"database": Database(url=url, environment="test")},
            instance=dg.DagsterInstance.ephemeral(),
            **kwargs,
        )
    assert result.success
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert not failed, f"checks failed: {failed}"
    return result


def record(figures: list[tuple[str, float]], counts: str, load: float) -> None:
    def paragraph(text: str) -> str:
        return textwrap.fill(text, width=95, break_on_hyphens=False)

    lines = [
        "",
        f"## Daily metrics (`benchmarks/daily_metrics.py`), {date.today().isoformat()}",
        "",
        paragraph(
            f"PostgreSQL 15 on this machine (2 cores, shared: 1-minute load average {load:.1f} "
            f"when the timings began). {counts} Each figure includes the checks that run with "
            "it (reconciliation with the base tables, in the same transaction)."
        ),
        "",
        "| what | seconds |",
        "|---|---|",
        *(f"| {what} | {seconds:.2f} |" for what, seconds in figures),
        "",
        paragraph(
            "Targets: a 365-day backfill of both daily metrics as one run within 60 s, a "
            "refresh of today's partition within 2 s. \"One call\" is the work of the asset's "
            "run (`services.metrics.refresh_*` over the whole range); the Dagster run covers "
            f"the daily partitions that exist (from {HISTORY_START}) and adds Dagster's own "
            "bookkeeping (a planned and a recorded materialization per partition)."
        ),
        "",
    ]
    with DOCS.open("a") as docs:
        docs.write("\n".join(lines))
    print(f"appended to {DOCS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--reuse", action="store_true", help="time the database a --keep run left (no fill)"
    )
    parser.add_argument(
        "--dagster-storage",
        choices=["sqlite", "postgres"],
        default="postgres",
        help="the Dagster instance's storage for the backfill run: PostgreSQL (a database of "
        "its own on --server) with batched event writes, as production has, or SQLite as "
        "make run has",
    )
    args = parser.parse_args()

    admin = sa.create_engine(normalize_url(args.server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(
            sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": DATABASE}
        )
        fresh = not (args.reuse and exists)
        if fresh:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{DATABASE}"'))
    url = sa.engine.make_url(normalize_url(args.server)).set(database=DATABASE)
    url_text = url.render_as_string(hide_password=False)
    try:
        now = datetime.now(UTC)
        today = day_of(now)
        year = DayRange(today - timedelta(days=364), today)
        if fresh:
            upgrade(url_text, Environment.TEST)
            print(f"filling {DATABASE}: {args.orders:,} orders over {year} ...")
            fill(
                url_text, orders=args.orders, recipients=args.recipients, start=year.start, now=now
            )

        session = partial(unit_of_work, url_text)
        figures: list[tuple[str, float]] = []
        load = os.getloadavg()[0]
        print(f"1-minute load average before timing: {load:.2f}")
        orders = timed(
            f"backfill {len(year)} days: order metrics (one call)",
            lambda: refresh_order_metrics(session, year),
            figures,
        )
        recipients = timed(
            f"backfill {len(year)} days: recipient metrics (one call)",
            lambda: refresh_recipient_metrics(session, year),
            figures,
        )
        assert orders.reconciliation.passed and recipients.reconciliation.passed
        figures.append(
            (f"backfill {len(year)} days: both daily metrics", figures[-2][1] + figures[-1][1])
        )
        print(f"  = {figures[-1][1]:.2f} s; {orders.rows:,} + {recipients.rows:,} rows")
        first = max(date.fromisoformat(HISTORY_START), year.first)
        span = DayRange(first, today)
        storage_url = None
        if args.dagster_storage == "postgres":
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DAGSTER_DATABASE}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{DAGSTER_DATABASE}"'))
            # Production's setting (docs/operations.md): a ranged run's materializations are
            # written as one INSERT per asset, not one per partition.
            os.environ.setdefault(EVENT_BATCH_VAR, EVENT_BATCH_SIZE)
            # dagster-postgres binds NOTIFY's payload client-side: psycopg2, not psycopg 3
            # (SQLAlchemy 2.1's default for postgresql://).
            storage_url = (
                sa.engine.make_url(args.server)
                .set(drivername="postgresql+psycopg2", database=DAGSTER_DATABASE)
                .render_as_string(hide_password=False)
            )
        duration, wall = run_backfill(url_text, span, storage_url)
        what = (
            f"backfill {len(span)} days ({span}): both daily metrics, one Dagster run "
            f"({args.dagster_storage} Dagster storage"
            f"{', batched event writes' if storage_url else ''})"
        )
        figures.append((what, duration))
        figures.append(("the same run, launch to result", wall))
        print(f"{what}: {duration:.2f} s ({wall:.2f} s launch to result)")
        single = DayRange.single(today)
        timed(
            "today: order metrics (one call)",
            lambda: refresh_order_metrics(session, single),
            figures,
        )
        timed(
            "today: recipient metrics (one call)",
            lambda: refresh_recipient_metrics(session, single),
            figures,
        )
        figures.append(("today: both daily metrics", figures[-2][1] + figures[-1][1]))
        print(f"  = {figures[-1][1]:.2f} s")
        timed(
            "today: both daily metrics, one Dagster run (in-process, run overhead included)",
            lambda: materialize(url_text, partition_key=today.isoformat()),
            figures,
        )
        results = timed(
            "campaign results (every campaign)", lambda: refresh_campaign_results(session), figures
        )
        assert results.rates.passed

        with unit_of_work(url_text) as s:
            count = {
                t: s.scalar(sa.text(f"SELECT count(*) FROM {t}"))
                for t in ("orders", "attributions", "holdout_matches", "recipients", "mailpieces")
            }
        counts = (
            f"{count['orders']:,} orders over {len(year)} New York days ending {today} (UTC "
            f"{day_start(year.first):%Y-%m-%d %H:%M} on), {count['attributions']:,} "
            f"attributions, {count['holdout_matches']:,} holdout matches, "
            f"{count['recipients']:,} recipients in {ORGANIZATIONS * CAMPAIGNS_PER_ORGANIZATION} "
            f"campaigns of {ORGANIZATIONS} organizations, {count['mailpieces']:,} mailpieces."
        )
        print(counts)
        if args.record:
            record(figures, counts, load)
    finally:
        dispose_engine(url_text)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DAGSTER_DATABASE}" WITH (FORCE)'))
            if not (args.keep or args.reuse):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
