"""``mail-pipeline``: the few operations that are not Dagster runs.

mail-pipeline migrate        apply database migrations; stamp a new database with this
                             process's environment (MAIL_PIPELINE_ENV)
mail-pipeline demo           migrate, then seed the demo brands, campaigns and profiles
mail-pipeline status         recipients by status (a quick look without the UI)

Every command refuses a database that serves another kind of environment (a production
database from a local or test process, a local or test database from production).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.environment import DatabaseEnvironmentRefused, check_database_environment
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.services.manual_sync import request_sync
from mail_pipeline.services.operations import error_recipients, retry_errors
from mail_pipeline.settings import DATABASE_URL_VAR, Environment, load_settings


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
    request = sub.add_parser("request-sync", help="ask for a sync of one campaign now")
    request.add_argument("campaign_id", type=int)
    request.add_argument("--by", required=True, help="who asks (kept on the run's tags)")
    request.add_argument("--reason", default=None)
    errors = sub.add_parser("errors", help="recipients in Error, with their reasons")
    errors.add_argument("--campaign", type=int, default=None)
    retry = sub.add_parser(
        "retry",
        help="retry Error recipients whose data can be mailed; says why others stay "
        "(exit status 1 when any stays)",
    )
    retry.add_argument("recipient_ids", type=int, nargs="+")
    retry.add_argument("--by", required=True)
    args = parser.parse_args(argv)

    settings = load_settings()
    url = settings.database_url
    if not url:
        print(f"set {DATABASE_URL_VAR} to the production database URL", file=sys.stderr)
        return 2
    # Migrations check (and stamp) the database's environment themselves; every other
    # command checks it before its first unit of work.
    try:
        if args.command == "migrate":
            upgrade(url, settings.environment)
        elif args.command != "demo":
            check_database_environment(url, settings.environment)
    except DatabaseEnvironmentRefused as refused:
        print(refused, file=sys.stderr)
        return 2

    if args.command == "migrate":
        print(f"database migrated ({settings.environment})")
    elif args.command == "demo":
        if settings.environment is Environment.PRODUCTION:
            print("refusing to seed demo data in production", file=sys.stderr)
            return 2
        from mail_pipeline.integrations.sandbox.store import SandboxStore
        from mail_pipeline.services.demo import request_demo_syncs, seed_demo

        try:
            upgrade(url, settings.environment)
        except DatabaseEnvironmentRefused as refused:
            print(refused, file=sys.stderr)
            return 2
        store = SandboxStore(settings.sandbox_path)
        with unit_of_work(url) as session:
            summary = seed_demo(session, store)
            syncs = request_demo_syncs(session)
        print(
            f"demo data: {summary.organizations} organizations, {summary.campaigns} campaigns, "
            f"{summary.profiles} sandbox CDP profiles in {len(summary.segments)} segments, "
            f"{summary.blocklist_entries} new blocklist entries; {syncs} first syncs requested"
        )
    elif args.command == "status":
        with unit_of_work(url) as session:
            counts = RecipientGateway(session).counts_by_status()
        for status, count in sorted(counts.items()):
            print(f"{status:<18} {count}")
        if not counts:
            print("no recipients yet")
    elif args.command == "request-sync":
        trigger = request_sync(partial(unit_of_work, url), args.campaign_id, args.by, args.reason)
        print(f"sync request {trigger} filed; the manual-sync sensor launches it")
    elif args.command == "errors":
        rows = error_recipients(partial(unit_of_work, url), campaign_id=args.campaign)
        for row in rows:
            print(
                f"{row.id:>8}  campaign {row.campaign_id:<5} "
                f"{(row.failed_in or 'sync'):<10} {row.reason}"
            )
        if not rows:
            print("no recipient is in Error")
    elif args.command == "retry":
        retried = retry_errors(partial(unit_of_work, url), args.recipient_ids, by=args.by)
        for line in retried.lines():
            print(line)
        print(f"{len(retried.moved)} recipients sent back: {retried.moved}")
        if retried.not_moved:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
