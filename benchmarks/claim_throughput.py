"""How fast batch claims move recipients (Pending -> ProofingStaged), with N claimers.

    .venv/bin/python benchmarks/claim_throughput.py --url sqlite:////tmp/bench.sqlite
    .venv/bin/python benchmarks/claim_throughput.py --url postgresql://postgres@127.0.0.1/bench

The database is migrated and filled with ``--recipients`` Pending rows first (the database
must be empty or disposable: its recipients are deleted). Prints recipients/s and claims/s.
"""

from __future__ import annotations

import argparse
import threading
import time

import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.db.models import Campaign, Organization, Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.environments import Environment
from mail_pipeline.domain.recipients import RecipientStatus


def fill(url: str, n: int) -> None:
    upgrade(url, Environment.TEST)  # refuses a production database
    with unit_of_work(url) as session:
        session.execute(sa.delete(Recipient))
        org = session.scalar(sa.select(Organization).where(Organization.slug == "bench"))
        if org is None:
            org = Organization(name="Bench", slug="bench", country="US")
            session.add(org)
            session.flush()
        campaign = Campaign(organization_id=org.id, name="bench", campaign_mode="automated")
        session.add(campaign)
        session.flush()
        rows = [
            {
                "organization_id": org.id,
                "campaign_id": campaign.id,
                "status": RecipientStatus.PENDING,
                "email": f"b{i}@example.com",
            }
            for i in range(n)
        ]
        session.execute(sa.insert(Recipient), rows)


def run(url: str, claimers: int, batch: int) -> tuple[int, int, float]:
    totals = [0] * claimers
    claims = [0] * claimers

    def work(i: int) -> None:
        while True:
            with unit_of_work(url) as session:
                claim = RecipientGateway(session).claim_batch(
                    RecipientStatus.PENDING, RecipientStatus.PROOFING_STAGED, batch
                )
            if not claim.ids:
                return
            totals[i] += len(claim)
            claims[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(claimers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals), sum(claims), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--claimers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    fill(args.url, args.recipients)
    moved, claims, seconds = run(args.url, args.claimers, args.batch)
    print(
        f"{moved} recipients in {claims} claims by {args.claimers} claimers "
        f"(batch {args.batch}) in {seconds:.2f}s: {moved / seconds:,.0f} recipients/s, "
        f"{claims / seconds:,.0f} claims/s"
    )


if __name__ == "__main__":
    main()
