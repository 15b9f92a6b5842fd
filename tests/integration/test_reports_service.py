"""Reports generated, kept and sent at most once, and the SES events applied to them once
each, on a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import (
    DailyOrderMetrics,
    DailyRecipientMetrics,
    DailySpend,
    Organization,
    Report,
    ReportEmailEvent,
)
from mail_pipeline.db.reports import ReportOrganization
from mail_pipeline.domain.campaigns import CsmCadence
from mail_pipeline.domain.email_events import (
    EmailEventKind,
    parse_ses_notification,
    ses_notification,
    ses_notification_body,
)
from mail_pipeline.domain.reports import ReportPeriod, cadence_period, week_ending
from mail_pipeline.integrations.email_delivery import OutboxEmailSender, SentEmail
from mail_pipeline.integrations.errors import RequestRejected, VendorUnavailable
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.services.reports import (
    EventOutcome,
    Outcome,
    ReportDelivery,
    apply_email_event,
    bounces_by_organization,
    process_report_email_events,
    run_reports,
)

FRIDAY = date(2026, 11, 27)
NOW = datetime(2026, 11, 28, 8, tzinfo=UTC)


def seed_metrics(url: str, organization_id: int, campaign_id: int) -> None:
    """A few days of mailing, orders and spend around the week ending FRIDAY."""
    computed = datetime(2026, 11, 28, tzinfo=UTC)
    zeros = {
        c: 0
        for c in (
            "created",
            "proofed",
            "errored",
            "postcards_mailed",
            "unpriced_postcards",
            "recipients",
        )
    }
    with unit_of_work(url) as session:
        for offset, day in enumerate([date(2026, 11, 16), date(2026, 11, 23), FRIDAY]):
            status_columns = {
                c.name: 0
                for c in DailyRecipientMetrics.__table__.columns
                if c.name.startswith("status_")
            }
            session.add(
                DailyRecipientMetrics(
                    day=day,
                    campaign_id=campaign_id,
                    organization_id=organization_id,
                    mailed=10 + offset,
                    delivered=5,
                    returned=1,
                    **zeros,
                    **status_columns,
                    computed_at=computed,
                )
            )
            session.add(
                DailySpend(
                    day=day,
                    campaign_id=campaign_id,
                    currency="USD",
                    organization_id=organization_id,
                    postcards=10,
                    spend_minor=1000,
                    computed_at=computed,
                )
            )
            session.add(
                DailyOrderMetrics(
                    day=day,
                    organization_id=organization_id,
                    campaign_id=campaign_id,
                    currency="USD",
                    orders=3,
                    cancelled_orders=0,
                    gross_minor=3000,
                    refunded_minor=0,
                    revenue_minor=3000,
                    offer_code_orders=1,
                    offer_code_revenue_minor=1000,
                    email_orders=1,
                    email_revenue_minor=1000,
                    address_orders=0,
                    address_revenue_minor=0,
                    holdout_orders=0,
                    holdout_revenue_minor=0,
                    computed_at=computed,
                )
            )


class FakeSender:
    """An EmailSender that counts calls and can be told to fail."""

    provider = "fake"

    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, EmailMessage]] = []
        self.error = error

    def send(self, message: EmailMessage, *, idempotency_key: str) -> SentEmail:
        if self.error is not None:
            raise self.error
        self.sent.append((idempotency_key, message))
        return SentEmail(self.provider, f"msg-{len(self.sent)}", (str(message["To"]),))


def recipients(organization: ReportOrganization) -> list[str]:
    return [f"reports+{organization.slug}@example.com"]


def weekly(organization: ReportOrganization) -> ReportPeriod | None:
    return cadence_period(FRIDAY, organization.cadence)


@pytest.fixture
def org(db_url: str, make_campaign) -> int:  # type: ignore[no-untyped-def]
    organization_id, campaign_id = make_campaign()
    seed_metrics(db_url, organization_id, campaign_id)
    return int(organization_id)


def reports(url: str) -> list[Report]:
    with unit_of_work(url) as session:
        rows = session.scalars(sa.select(Report).order_by(Report.id)).all()
        session.expunge_all()
        return list(rows)


def test_generated_and_sent_once_and_a_rerun_sends_nothing(
    db_url: str, org: int, tmp_path: Path
) -> None:
    sender = FakeSender()
    delivery = ReportDelivery(sender, "reports@example.com", recipients)
    sessions = partial(unit_of_work, db_url)

    first = run_reports(sessions, weekly, delivery, tmp_path)
    assert [r.outcome for r in first.reports] == [Outcome.SENT]
    assert (first.generated, first.sent, first.failed) == (1, 1, 0)
    [report] = reports(db_url)
    assert (report.status, report.kind, report.period_start) == (
        "sent",
        "weekly",
        date(2026, 11, 21),
    )
    assert report.message_id == "msg-1" and report.sent_at is not None
    assert (
        report.content["current"]["sent"] == 11 + 12
    )  # Nov 23 and Nov 27 (Nov 16 is the week before)
    json.dumps(report.content, allow_nan=False)
    assert [key for key, _ in sender.sent] == [f"report-{report.id}"]
    files = sorted(p.name for p in (tmp_path / first.reports[0].slug).iterdir())
    assert files == ["cumulative_roas.png", "mailed_delivered.png", "report.html", "revenue.png"]

    again = run_reports(sessions, weekly, delivery, tmp_path)
    assert [r.outcome for r in again.reports] == [Outcome.ALREADY_SENT]
    assert len(sender.sent) == 1 and len(reports(db_url)) == 1


def test_a_report_found_sending_is_not_resent_but_left_for_a_person(
    db_url: str, org: int, tmp_path: Path
) -> None:
    with unit_of_work(db_url) as session:
        week = week_ending(FRIDAY)
        session.add(
            Report(
                organization_id=org,
                kind="weekly",
                period_start=week.first,
                period_end=week.last,
                status="sending",
                content={},
            )
        )
    sender = FakeSender()
    result = run_reports(
        partial(unit_of_work, db_url),
        weekly,
        ReportDelivery(sender, "reports@example.com", recipients),
        tmp_path,
    )
    assert sender.sent == []
    assert [r.outcome for r in result.reports] == [Outcome.FAILED]
    [report] = reports(db_url)
    assert report.status == "unknown" and "still sending" in (report.status_reason or "")
    # and it stays so: a later run sends nothing either
    run_reports(
        partial(unit_of_work, db_url),
        weekly,
        ReportDelivery(sender, "reports@example.com", recipients),
        tmp_path,
    )
    assert sender.sent == [] and reports(db_url)[0].status == "unknown"


def test_retryable_errors_go_back_to_generated_and_rejections_fail(
    db_url: str, org: int, tmp_path: Path
) -> None:
    sessions = partial(unit_of_work, db_url)
    busy = FakeSender(VendorUnavailable("ses", "503"))
    result = run_reports(
        sessions, weekly, ReportDelivery(busy, "r@example.com", recipients), tmp_path
    )
    assert [r.outcome for r in result.reports] == [Outcome.RETRY]
    assert reports(db_url)[0].status == "generated"

    rejected = FakeSender(RequestRejected("ses", "address not verified", code="MessageRejected"))
    run_reports(sessions, weekly, ReportDelivery(rejected, "r@example.com", recipients), tmp_path)
    [report] = reports(db_url)
    assert report.status == "failed" and "not verified" in (report.status_reason or "")


def test_a_biweekly_organization_is_skipped_on_an_off_week(
    db_url: str, org: int, tmp_path: Path
) -> None:
    with unit_of_work(db_url) as session:
        session.get_one(Organization, org).csm_cadence = CsmCadence.BIWEEKLY
    due = cadence_period(FRIDAY, CsmCadence.BIWEEKLY) is not None
    friday = FRIDAY if not due else date(2026, 12, 4)
    result = run_reports(
        partial(unit_of_work, db_url),
        lambda o: cadence_period(friday, o.cadence),
        ReportDelivery(FakeSender(), "r@example.com", recipients),
        tmp_path,
    )
    assert [r.outcome for r in result.reports] == [Outcome.SKIPPED]
    assert reports(db_url) == []


def _queue(tmp_path: Path) -> LocalQueue:
    return LocalQueue(tmp_path / "queues.sqlite", "report-email-events")


def test_outbox_delivery_and_bounce_events_are_applied_once_each(
    db_url: str,
    make_campaign,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    delivered_org, c1 = make_campaign()
    bounced_org, c2 = make_campaign()
    seed_metrics(db_url, delivered_org, c1)
    seed_metrics(db_url, bounced_org, c2)
    queue = _queue(tmp_path)
    sender = OutboxEmailSender(tmp_path / "outbox", queue.send)

    def to(organization: ReportOrganization) -> list[str]:
        domain = "bounce.example" if organization.id == bounced_org else "example.com"
        return [f"reports+{organization.slug}@{domain}"]

    sessions = partial(unit_of_work, db_url)
    result = run_reports(sessions, weekly, ReportDelivery(sender, "r@example.com", to), tmp_path)
    assert result.sent == 2
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2

    first = process_report_email_events(sessions, queue)
    assert (first.received, first.applied, first.messages_deleted) == (2, 2, 2)
    by_org = {r.organization_id: r for r in reports(db_url)}
    assert by_org[delivered_org].status == "delivered"
    assert by_org[delivered_org].delivered_at is not None
    assert by_org[bounced_org].status == "bounced"
    assert "550 5.1.1" in (by_org[bounced_org].status_reason or "")
    with unit_of_work(db_url) as session:
        assert bounces_by_organization(session) == {bounced_org: 1}

    # the sink is at-least-once: the same notifications again change nothing
    [entry] = [e for e in sender.entries() if "bounce" in e.sent.recipients[0]]
    for body in entry.notifications:
        queue.send(body)
    again = process_report_email_events(sessions, queue)
    assert (again.applied, again.duplicates, again.messages_deleted) == (0, 1, 1)
    with unit_of_work(db_url) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ReportEmailEvent)) == 2


def test_an_event_of_an_unknown_message_is_recorded_without_a_report(db_url: str) -> None:
    record = ses_notification(
        EmailEventKind.DELIVERED,
        message_id="nobody-knows-this",
        destination=["x@example.com"],
        sent_at=NOW,
    )
    event = parse_ses_notification(ses_notification_body(record, sns_message_id="sns-1"))
    with unit_of_work(db_url) as session:
        assert apply_email_event(session, event) is EventOutcome.UNMATCHED
    with unit_of_work(db_url) as session:
        assert apply_email_event(session, event) is EventOutcome.DUPLICATE
        row = session.get_one(ReportEmailEvent, "sns-1")
        assert (row.report_id, row.kind, row.message_id) == (
            None,
            "delivered",
            "nobody-knows-this",
        )


def test_malformed_events_are_dead_lettered_and_unsupported_ones_deleted(
    db_url: str, tmp_path: Path
) -> None:
    queue = _queue(tmp_path)
    queue.send("not json")
    queue.send(json.dumps({"Type": "SubscriptionConfirmation", "MessageId": "m"}))
    result = process_report_email_events(partial(unit_of_work, db_url), queue)
    assert (result.received, result.dead_lettered, result.unsupported) == (2, 1, 1)
    assert result.messages_deleted == 1
    assert queue.approximate_depth() == 0


def test_one_organization_failing_does_not_stop_the_others(
    db_url: str,
    make_campaign,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    good, c1 = make_campaign()
    bad, c2 = make_campaign()
    seed_metrics(db_url, good, c1)
    seed_metrics(db_url, bad, c2)

    def to(organization: ReportOrganization) -> list[str]:
        return ["no address"] if organization.id == bad else ["ok@example.com"]

    sender = OutboxEmailSender(tmp_path / "outbox")
    result = run_reports(
        partial(unit_of_work, db_url), weekly, ReportDelivery(sender, "r@example.com", to), tmp_path
    )
    outcomes = {r.slug: r.outcome for r in result.reports}
    assert sorted(outcomes.values()) == [Outcome.FAILED, Outcome.SENT]
    [failed_slug] = result.failures
    assert "RequestRejected" in result.failures[failed_slug]
    by_org = {r.organization_id: r.status for r in reports(db_url)}
    assert by_org == {good: "sent", bad: "failed"}
