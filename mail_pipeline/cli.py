"""``mail-pipeline``: the few operations that are not Dagster runs.

mail-pipeline migrate        apply database migrations; stamp a new database with this
                             process's environment (MAIL_PIPELINE_ENV)
mail-pipeline demo           migrate, then seed the demo brands, campaigns and profiles
                             (local, test, and a staging deployment on a sandbox server)
mail-pipeline status         recipients by status (a quick look without the UI)
mail-pipeline offer-codes ORG FILE [--campaign ID]
                             add an organization's offer codes (one a line, or a CSV's first
                             column; FILE "-" reads standard input) to its pool, or to one
                             campaign's; prints every line not added and why (exit status 1
                             when any was refused); repeating an upload adds nothing
mail-pipeline reattribute ORG [ORG ...]
                             have the next attribution run examine every order of these
                             organizations again (after a campaign's attribution window
                             changed); it rewrites only what its decision changes
mail-pipeline audit ORG [--by WHO] [--request]
                             audit an organization (id or slug) now with this environment's
                             vendors, store the report and print it as Markdown (exit status
                             1 when it has errors); with --request (and --by), put an audit
                             request on the audit queue instead, for audit_sensor to run
mail-pipeline audits ORG [--show ID] [--limit N]
                             the organization's stored audits, newest first; --show prints
                             one report
mail-pipeline sandbox-server [--port 8700] [--latency lob=0.3,...] [--store FILE]
                             serve every sandbox vendor over HTTP from this process (local
                             and test only; store: the data dir's sandbox.sqlite); point the
                             code location at it with MAIL_PIPELINE_SANDBOX_URL
mail-pipeline daemon [-w WORKSPACE] [--log-format json]
                             run dagster-daemon while holding the Dagster instance's lock
                             (PostgreSQL advisory lock, or a lock file in DAGSTER_HOME): a
                             second one refuses to start (exit status 3); see
                             docs/supervision.md
mail-pipeline daemon-check [--window 65]
                             watch the instance's daemon heartbeats: exit status 0 when one
                             daemon is alive, 1 when none, 3 when several
mail-pipeline purge-runs --older-than-days N [--dry-run]
                             delete finished Dagster runs (success, failure, canceled) created
                             more than N days ago, with their event logs (the instance of
                             DAGSTER_HOME); queued and running runs are never touched
mail-pipeline supervisor-health --server-url URL --check PROGRAM=CHECK ...
                             supervisord's health-check event listener (deploy/supervisord.conf)

Every command that uses the app database refuses one that serves another kind of environment
(a production database from a local or test process, a local or test database from
production); daemon, daemon-check, supervisor-health and purge-runs use none.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.environment import DatabaseEnvironmentRefused, check_database_environment
from mail_pipeline.db.migrate import upgrade
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.audits import AuditStatus, Severity, Verdict
from mail_pipeline.integrations.sandbox.server import add_arguments as add_sandbox_server_arguments
from mail_pipeline.integrations.sandbox.server import serve as serve_sandboxes
from mail_pipeline.services.attribution import reattribute
from mail_pipeline.services.manual_sync import request_sync
from mail_pipeline.services.offer_codes import UploadRefused, upload_pool
from mail_pipeline.services.operations import error_recipients, retry_errors
from mail_pipeline.settings import (
    DATABASE_URL_VAR,
    Environment,
    ProductionConfigError,
    Settings,
    load_settings,
)
from mail_pipeline.supervision import (
    add_daemon_arguments,
    add_daemon_check_arguments,
    add_supervisor_health_arguments,
    check_daemon,
    run_daemon,
    supervisor_health,
)


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
    codes = sub.add_parser(
        "offer-codes",
        help="add an organization's offer codes to its pool (exit status 1 when a line "
        "was refused)",
    )
    codes.add_argument("organization_id", type=int)
    codes.add_argument(
        "file", help='one code a line, or a CSV whose first column is the code; "-" for stdin'
    )
    codes.add_argument("--campaign", type=int, default=None, help="only this campaign draws them")
    again = sub.add_parser(
        "reattribute", help="have the next attribution run examine every order again"
    )
    again.add_argument("organization_ids", type=int, nargs="+")
    audit = sub.add_parser(
        "audit",
        help="audit an organization now and print the report (exit status 1 when it has "
        "errors), or --request one through the audit queue",
    )
    audit.add_argument("organization", help="organization id or slug")
    audit.add_argument("--by", default=None, help="who asks (kept on the report)")
    audit.add_argument(
        "--request",
        action="store_true",
        help="put a request on the audit queue (audit_sensor runs it) instead of auditing now",
    )
    audits = sub.add_parser("audits", help="an organization's stored audits, newest first")
    audits.add_argument("organization", help="organization id or slug")
    audits.add_argument("--show", type=int, default=None, metavar="ID", help="print one report")
    audits.add_argument("--limit", type=int, default=20)
    sandbox_server = sub.add_parser(
        "sandbox-server", help="serve the sandbox vendors over HTTP (local/test only)"
    )
    add_daemon_arguments(
        sub.add_parser(
            "daemon",
            help="run dagster-daemon under the instance's lock (a second one refuses, exit "
            "status 3)",
        )
    )
    add_daemon_check_arguments(
        sub.add_parser(
            "daemon-check",
            help="count the instance's live daemons from their heartbeats (exit status 0: one, "
            "1: none, 3: several)",
        )
    )
    add_supervisor_health_arguments(
        sub.add_parser("supervisor-health", help="supervisord's health-check event listener")
    )
    purge = sub.add_parser(
        "purge-runs",
        help="delete finished Dagster runs older than N days with their event logs",
    )
    purge.add_argument("--older-than-days", type=int, required=True, metavar="N")
    purge.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    settings = load_settings()
    add_sandbox_server_arguments(sandbox_server, default_store=str(settings.sandbox_path))
    args = parser.parse_args(argv)

    # The Dagster processes' commands use no app database.
    if args.command == "daemon":
        return run_daemon(args)
    if args.command == "daemon-check":
        return check_daemon(args)
    if args.command == "supervisor-health":
        return supervisor_health(args)
    if args.command == "purge-runs":
        return _purge_runs(args.older_than_days, dry_run=args.dry_run)
    if args.command == "sandbox-server":
        if settings.environment is Environment.PRODUCTION:
            print("refusing to serve sandbox vendors in production", file=sys.stderr)
            return 2
        return serve_sandboxes(args)
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
        if settings.environment is Environment.PRODUCTION and not (
            settings.staging and settings.sandbox_url
        ):
            print(
                "refusing to seed demo data in production (only a staging deployment on a "
                "sandbox server may have it)",
                file=sys.stderr,
            )
            return 2
        from mail_pipeline.integrations.sandbox.store import SandboxStore
        from mail_pipeline.services.demo import demo_upload, request_demo_syncs, seed_demo

        try:
            upgrade(url, settings.environment)
        except DatabaseEnvironmentRefused as refused:
            print(refused, file=sys.stderr)
            return 2
        store = SandboxStore(settings.sandbox_path)
        with unit_of_work(url) as session:
            summary = seed_demo(session, store)
            syncs = request_demo_syncs(session)
            upload = demo_upload(session)
        if upload is not None:
            path = settings.data_dir / "uploads" / upload[0]
            if not path.exists():  # the uploads sensor picks it up
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(upload[1])
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
    elif args.command == "offer-codes":
        return _upload_offer_codes(url, args.organization_id, args.file, args.campaign)
    elif args.command == "audit":
        try:
            return _audit(settings, url, args.organization, args.by, request=args.request)
        except ProductionConfigError as refused:  # the vendors cannot be bound
            print(refused, file=sys.stderr)
            return 2
    elif args.command == "audits":
        return _audits(url, args.organization, args.show, args.limit)
    elif args.command == "reattribute":
        held = reattribute(partial(unit_of_work, url), args.organization_ids)
        print(
            f"{held} of {len(set(args.organization_ids))} organizations had been examined; the "
            "next attribution run (every 5 minutes) examines all of their orders again"
        )
    return 0


def _upload_offer_codes(url: str, organization_id: int, path: str, campaign_id: int | None) -> int:
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8-sig", newline="") as handle:
                lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    try:
        upload = upload_pool(
            partial(unit_of_work, url), organization_id, lines, campaign_id=campaign_id
        )
    except UploadRefused as refused:
        print(refused, file=sys.stderr)
        return 2
    for line in upload.lines():
        print(line)
    scope = f"campaign {campaign_id}" if campaign_id is not None else "every campaign"
    print(
        f"{len(upload.added)} codes added to organization {organization_id}'s pool for {scope}; "
        f"{len(upload.already)} already there, {len(upload.refused)} refused"
    )
    return 1 if upload.refused else 0


def _bound_resources(settings: Settings, names: Sequence[str]) -> Any:
    """This environment's resources ``names`` (as the code location binds them), built:
    a context manager. Loading the definitions is quiet about Dagster's beta features."""
    import dagster as dg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        from mail_pipeline.definitions import build_definitions

        bound = build_definitions(settings).resources or {}
    return dg.build_resources({name: bound[name] for name in names})


def _audit(settings: Settings, url: str, key: str, by: str | None, *, request: bool = False) -> int:
    from mail_pipeline.jobs.audits import audit_vendors
    from mail_pipeline.services.audits import (
        MalformedAuditRequest,
        find_organization,
        request_audit,
        run_audit,
    )

    sessions = partial(unit_of_work, url)
    organization = find_organization(sessions, key)
    if organization is None:
        print(f"no organization {key!r} (give its id or slug)", file=sys.stderr)
        return 2
    if request:
        if not by:
            print("--request needs --by: who asks", file=sys.stderr)
            return 2
        try:
            with _bound_resources(settings, ["queues"]) as built:
                message_id = request_audit(built.queues.audit_queue(), organization.id, by)
        except MalformedAuditRequest as refused:
            print(refused, file=sys.stderr)
            return 2
        print(
            f"audit of {organization.name} (organization {organization.id}) requested as "
            f"message {message_id}; audit_sensor launches it within a minute "
            f"(then: mail-pipeline audits {organization.id})"
        )
        return 0
    with _bound_resources(settings, ["cdp", "order_sources", "printers"]) as built:
        vendors = audit_vendors(built.cdp, built.order_sources, built.printers)
        report = run_audit(sessions, organization.id, vendors, requested_by=by)
    print(report.markdown())
    return 1 if report.verdict is Verdict.HAS_ERRORS else 0


def _audits(url: str, key: str, show: int | None, limit: int) -> int:
    from mail_pipeline.services.audits import find_organization, recent_audits, stored_report

    sessions = partial(unit_of_work, url)
    organization = find_organization(sessions, key)
    if organization is None:
        print(f"no organization {key!r} (give its id or slug)", file=sys.stderr)
        return 2
    if show is not None:
        report = stored_report(sessions, show)
        if report is None or report.organization_id != organization.id:
            print(f"organization {organization.id} has no audit {show}", file=sys.stderr)
            return 2
        print(report.markdown())
        return 0
    reports = recent_audits(sessions, organization.id, limit=limit)
    for report in reports:
        when = f"{report.audited_at:%Y-%m-%d %H:%M}" if report.audited_at else "-"
        outcome = report.verdict.value if report.status is AuditStatus.COMPLETED else "failed"
        print(
            f"{report.audit_id:>6}  {when}  {report.status.value:<9}  {outcome:<12}  "
            f"{report.count(Severity.ERROR)} errors, {report.count(Severity.WARNING)} "
            f"warnings  {report.requested_by or '-'}"
        )
    if not reports:
        print(f"no audit of {organization.name} yet (mail-pipeline audit {organization.id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _purge_runs(older_than_days: int, *, dry_run: bool) -> int:
    import dagster as dg

    from mail_pipeline.jobs.runs import purge_finished_runs

    if older_than_days < 1:
        print("--older-than-days must be at least 1", file=sys.stderr)
        return 2
    before = datetime.now(UTC) - timedelta(days=older_than_days)
    with dg.DagsterInstance.get() as instance:
        run_ids = purge_finished_runs(instance, created_before=before, dry_run=dry_run)
    for run_id in run_ids:
        print(run_id)
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {len(run_ids)} finished runs created before {before:%Y-%m-%d %H:%M} UTC")
    return 0
