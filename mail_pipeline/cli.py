"""``mail-pipeline``: the few operations that are not Dagster runs.

mail-pipeline migrate        apply database migrations
mail-pipeline demo           migrate, then seed the demo brands, campaigns and profiles
mail-pipeline status         recipients by status (a quick look without the UI)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.settings import Environment, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mail-pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("demo", help="migrate and seed demo data (local/test only)")
    sub.add_parser("status", help="recipients by status")
    args = parser.parse_args(argv)

    settings = load_settings()
    if settings.environment is Environment.PRODUCTION:
        import os

        url = os.environ.get(settings.database_url)
        if not url:
            print(f"set {settings.database_url} to the production database URL", file=sys.stderr)
            return 2
    else:
        url = settings.database_url

    if args.command == "migrate":
        upgrade(url)
        print(f"database migrated ({settings.environment})")
    elif args.command == "demo":
        if settings.environment is Environment.PRODUCTION:
            print("refusing to seed demo data in production", file=sys.stderr)
            return 2
        from mail_pipeline.integrations.sandbox.store import SandboxStore
        from mail_pipeline.services.demo import seed_demo

        upgrade(url)
        store = SandboxStore(settings.sandbox_path)
        with unit_of_work(url) as session:
            summary = seed_demo(session, store)
        print(
            f"demo data: {summary.organizations} organizations, {summary.campaigns} campaigns, "
            f"{summary.profiles} sandbox CDP profiles in {len(summary.segments)} segments, "
            f"{summary.blocklist_entries} new blocklist entries"
        )
    elif args.command == "status":
        with unit_of_work(url) as session:
            counts = RecipientGateway(session).counts_by_status()
        for status, count in sorted(counts.items()):
            print(f"{status:<18} {count}")
        if not counts:
            print("no recipients yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
