"""Attribution of 1,000,000 orders against 1,000,000 mailed recipients, on PostgreSQL.

    .venv/bin/python benchmarks/attribution.py
    .venv/bin/python benchmarks/attribution.py \
        --server postgresql://postgres@127.0.0.1:5432/postgres --orders 1000000 --recipients 1000000

Creates a fresh database on the server (dropped at the end unless ``--keep``), migrates it,
and fills it with ``COPY``: 20 organizations of 5 campaigns each (windows of 30 to 90 days),
the mailed recipients (Sent or Received, some people mailed by two campaigns) plus 10% more
holdout recipients, and the orders - about 12% redeeming a recipient's offer code, 25% from
a mailed recipient's email, 8% from a mailed address only, 5% from holdout recipients, the
rest from people never mailed (some with a shop-wide code); 3% cancelled, 6% partly
refunded, 2% free. Orders fall before, inside and after the windows.

Then, in a fresh process (so its peak RSS is the attribution's own), one run of
``services.attribution.attribute_orders`` over everything: load, match, write, advance the
watermarks; then the asset checks' queries; then a second run, which must find nothing to
do; then a run after 10,000 new orders arrived (an incremental tick against the full
tables). Prints the figures; the targets are 30 s and 2 GiB for the first run.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import resource
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mail_pipeline.db.attribution import AttributionGateway
from mail_pipeline.db.engine import dispose_engine, engine_for, normalize_url, unit_of_work
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.db.models import Campaign, Organization
from mail_pipeline.domain.environments import Environment
from mail_pipeline.services.attribution import attribute_orders

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ORGANIZATIONS = 20
CAMPAIGNS_PER_ORGANIZATION = 5
DAY_US = 86_400 * 1_000_000
TICK_ORDERS = 10_000


def _copy(url: str, table: str, frame: pd.DataFrame) -> None:
    data = frame.to_csv(index=False, header=False)
    with engine_for(url).begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT csv)") as c:
            c.write(data)


def _times(epoch_us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(epoch_us, unit="us", utc=True)).astype(str)


def fill(url: str, n_orders: int, n_recipients: int, out: Any, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    now_us = int(NOW.timestamp() * 1_000_000)
    with unit_of_work(url) as session:
        campaigns: list[tuple[int, int, int]] = []  # (org, campaign, window)
        for o in range(ORGANIZATIONS):
            org = Organization(name=f"Bench {o}", slug=f"bench-{o}", country="US")
            session.add(org)
            session.flush()
            for c in range(CAMPAIGNS_PER_ORGANIZATION):
                window = int(rng.choice([30, 45, 60, 90]))
                campaign = Campaign(
                    organization_id=org.id,
                    name=f"Bench {o}.{c}",
                    campaign_mode="one_off" if c % 2 else "automated",
                    status="Active",
                    attribution_window_days=window,
                )
                session.add(campaign)
                session.flush()
                campaigns.append((org.id, campaign.id, window))
    table = np.array(campaigns, dtype=np.int64)
    base_us = now_us - rng.integers(20, 220, len(table)) * DAY_US  # each campaign's first mailing

    # Mailed recipients; 5% are people another recipient of the organization also is.
    n = n_recipients
    pick = rng.integers(0, len(table), n)
    person = np.arange(n)
    reused = rng.random(n) < 0.05
    person[reused] = rng.integers(0, n, reused.sum())
    sent_us = base_us[pick] + rng.integers(0, 14 * DAY_US, n)
    ids = pd.Series(np.arange(n))
    people = pd.Series(person).astype(str)
    recipients = pd.DataFrame(
        {
            "organization_id": table[pick, 0],
            "campaign_id": table[pick, 1],
            "status": np.where(rng.random(n) < 0.7, "Sent", "Received"),
            "status_changed_at": _times(sent_us),
            "source": "cdp",
            "properties": "{}",
            "attempts": 1,
            "email_key": "p" + people + "@example.com",
            "address_key": people + " main st|" + (people.str[-5:].str.zfill(5)) + "|US",
            "offer_code": "MP" + ids.astype(str).str.zfill(8),
            "sent_at": _times(sent_us),
            "created_at": _times(sent_us - 3 * DAY_US),
            "updated_at": _times(sent_us),
        }
    )
    # Holdout recipients: 10% more, never mailed, people of their own.
    h = n // 10
    hpick = rng.integers(0, len(table), h)
    hpeople = pd.Series(np.arange(n, n + h)).astype(str)
    hcreated = base_us[hpick] - DAY_US + rng.integers(0, 7 * DAY_US, h)
    holdouts = pd.DataFrame(
        {
            "organization_id": table[hpick, 0],
            "campaign_id": table[hpick, 1],
            "status": "Holdout",
            "status_changed_at": _times(hcreated),
            "source": "cdp",
            "properties": "{}",
            "attempts": 0,
            "email_key": "p" + hpeople + "@example.com",
            "address_key": hpeople + " main st|" + hpeople.str[-5:].str.zfill(5) + "|US",
            "offer_code": None,
            "sent_at": None,
            "created_at": _times(hcreated),
            "updated_at": _times(hcreated),
        }
    )
    _copy(url, "recipients", pd.concat([recipients, holdouts], ignore_index=True))

    # Orders.
    m = n_orders
    kind = rng.choice(
        ["code", "email", "address", "holdout", "other"], m, p=[0.12, 0.25, 0.08, 0.05, 0.50]
    )
    who = rng.integers(0, n, m)
    hwho = rng.integers(0, h, m)
    offset = rng.integers(-10 * DAY_US, 100 * DAY_US, m)
    is_holdout = kind == "holdout"
    org = np.where(is_holdout, table[hpick[hwho], 0], table[pick[who], 0])
    start = np.where(is_holdout, hcreated[hwho] + 7 * DAY_US, sent_us[who])
    unrelated = kind == "other"
    org[unrelated] = table[rng.integers(0, len(table), unrelated.sum()), 0]
    ordered = np.where(unrelated, now_us - rng.integers(0, 200 * DAY_US, m), start + offset)
    ordered = np.minimum(ordered, now_us - 1_000_000)
    strangers = pd.Series(rng.integers(10 * n, 20 * n, m)).astype(str)
    mailed_people = pd.Series(person[who]).astype(str)
    held_people = pd.Series(np.arange(n, n + h)[hwho]).astype(str)
    email = np.select(
        [kind == "email", is_holdout, unrelated],
        [
            "p" + mailed_people + "@example.com",
            "p" + held_people + "@example.com",
            "p" + strangers + "@example.com",
        ],
        default="",
    )
    email = np.where(
        (kind == "code") & (rng.random(m) < 0.5), "p" + strangers + "@example.com", email
    )
    address = np.where(
        kind == "address",
        mailed_people + " main st|" + mailed_people.str[-5:].str.zfill(5) + "|US",
        strangers + " elm st|" + strangers.str[-5:].str.zfill(5) + "|US",
    )
    code = "MP" + pd.Series(who).astype(str).str.zfill(8)
    codes = np.where(
        kind == "code",
        '["' + code + '"]',
        np.where(unrelated & (rng.random(m) < 0.1), '["WELCOME10"]', "[]"),
    )
    total = rng.integers(1_000, 30_000, m)
    total[rng.random(m) < 0.02] = 0
    refunded = np.where(rng.random(m) < 0.06, total // 3, 0)
    orders = pd.DataFrame(
        {
            "organization_id": org,
            "source": "shopify",
            "external_order_id": "bench-" + pd.Series(np.arange(m)).astype(str),
            "email_key": pd.Series(email).replace("", None),
            "address_key": address,
            "discount_codes": codes,
            "total_minor": total,
            "refunded_minor": refunded,
            "currency": "USD",
            "ordered_at": _times(ordered),
            "cancelled": rng.random(m) < 0.03,
            "created_at": _times(ordered),
            "updated_at": _times(ordered),
        }
    )
    _copy(url, "orders", orders)
    # As a database in use would be: hint bits set, statistics known.
    with engine_for(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    out.put({"orders": m, "mailed": n, "holdouts": h})


def measure(url: str, out: Any) -> None:
    """One attribution run, its checks and a second run, in this process."""
    sessions = functools.partial(unit_of_work, url)
    started = time.perf_counter()
    result = attribute_orders(sessions, now=NOW)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    checks_started = time.perf_counter()
    with sessions() as session:
        gateway = AttributionGateway(session)
        violations = sum(
            v.count
            for v in (
                gateway.orders_credited_twice(),
                gateway.credits_across_organizations(),
                gateway.negative_revenue(),
                gateway.outside_window(),
            )
        )
    checks = time.perf_counter() - checks_started
    again_started = time.perf_counter()
    again = attribute_orders(sessions, now=NOW)
    again_seconds = time.perf_counter() - again_started
    # A tick's worth of new orders (far more than 5 minutes bring) against the full tables.
    with engine_for(url).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (organization_id, source, external_order_id, email_key, "
                "address_key, discount_codes, total_minor, refunded_minor, currency, ordered_at, "
                "cancelled, created_at, updated_at) "
                "SELECT organization_id, source, 'tick-' || id, email_key, address_key, "
                "discount_codes, total_minor, refunded_minor, currency, ordered_at, cancelled, "
                "now(), now() FROM orders ORDER BY id LIMIT :n"
            ),
            {"n": TICK_ORDERS},
        )
    tick_started = time.perf_counter()
    tick = attribute_orders(sessions, now=NOW)
    tick_seconds = time.perf_counter() - tick_started
    out.put(
        {
            "seconds": seconds,
            "peak_mib": peak_mib,
            "load": result.seconds_loading,
            "match": result.seconds_matching,
            "write": result.seconds_writing,
            "examined": result.orders_examined,
            "attributed": dict(result.attributed),
            "holdout": result.holdout_matched,
            "revenue": dict(result.revenue_minor),
            "checks_seconds": checks,
            "violations": violations,
            "second_run_seconds": again_seconds,
            "second_run_examined": again.orders_examined,
            "tick_seconds": tick_seconds,
            "tick_examined": tick.orders_examined,
            "tick_load": tick.seconds_loading,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    name = f"mp_bench_attribution_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(normalize_url(args.server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = (
        sa.engine.make_url(normalize_url(args.server))
        .set(database=name)
        .render_as_string(hide_password=False)
    )
    try:
        upgrade(url, Environment.TEST)
        # Each step in a fresh process: the peak RSS measured is the attribution's alone
        # (a child starts with its parent's high-water mark).
        spawn = multiprocessing.get_context("spawn")
        queue = spawn.Queue()
        started = time.perf_counter()
        filler = spawn.Process(target=fill, args=(url, args.orders, args.recipients, queue))
        filler.start()
        sizes = queue.get()
        filler.join()
        print(
            f"filled {sizes['orders']:,} orders, {sizes['mailed']:,} mailed and "
            f"{sizes['holdouts']:,} holdout recipients in {time.perf_counter() - started:.1f} s"
        )
        child = spawn.Process(target=measure, args=(url, queue))
        child.start()
        figures = queue.get()
        child.join()
        print(
            f"attribution: {figures['seconds']:.1f} s (load {figures['load']:.1f} s, match "
            f"{figures['match']:.1f} s, write {figures['write']:.1f} s, summed over the groups "
            f"worked at once), "
            f"peak RSS {figures['peak_mib']:,.0f} MiB"
        )
        print(
            f"  {figures['examined']:,} orders examined; attributed {figures['attributed']}; "
            f"{figures['holdout']:,} holdout matches; revenue {figures['revenue']}"
        )
        print(
            f"  asset checks' queries: {figures['checks_seconds']:.1f} s, "
            f"{figures['violations']} violations"
        )
        print(
            f"  second run: {figures['second_run_seconds']:.1f} s, "
            f"{figures['second_run_examined']} orders examined"
        )
        print(
            f"  a tick with {figures['tick_examined']:,} new orders: "
            f"{figures['tick_seconds']:.1f} s (load {figures['tick_load']:.1f} s)"
        )
    finally:
        dispose_engine(url)
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
