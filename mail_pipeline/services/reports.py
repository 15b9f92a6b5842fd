"""Brand reports: generate one per organization and period, keep its charts and page, send it
by email at most once, and apply the delivery events SES reports about it.

:func:`run_reports` processes every active organization for one partition (a week ending a
Friday, or a BFCM day), each on its own: an organization whose report fails is named in the
result and the others go on. Per organization:

1. **Due?** ``period_for(organization)`` names the period, or ``None`` (the cadence says
   not this week): skipped.
2. **Generate** (one transaction, :func:`generate_report`): the ``reports`` row for
   (organization, kind, period start) is claimed (inserted or found: the unique key makes a
   re-run find the same row), the figures computed from the metrics rows of the period, the
   previous period and the charts' days; a ``generated`` report gets them as ``content``
   (JSON, checked to hold no NaN). A report found ``sending`` was left by a run that died
   between its two commits: it becomes ``unknown`` and is never sent automatically
   (``domain.report_delivery``). A report in any other status keeps its content.
3. **Keep** the charts (PNG) and the standalone HTML in ``<folder>/<slug>/``.
4. **Send** (:func:`send_report`) only a ``generated`` report, by the double-send rule of
   docs/email_delivery.md: mark ``sending`` and commit; send with the idempotency key
   ``report-<id>``; record ``sent`` with the provider's message id. A retryable error puts
   it back to ``generated`` (the next run sends it, same key); a rejection makes it
   ``failed`` with the reason; an unknown outcome (no answer, or any unexpected error
   after ``sending`` was committed) makes it ``unknown``. So re-running a partition never
   sends a brand the same report twice: a row already past ``generated`` is not sent.

Recipients: the caller's ``ReportDelivery.recipients(organization)`` (the resources decide;
see docs/reports.md "Delivery and operations").

:func:`apply_email_event` records one SES event once per ``event_id`` and moves its report
forward; :func:`process_report_email_events` is one pass over the events queue.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.errors import is_outage
from mail_pipeline.db.models import Report
from mail_pipeline.db.reports import ReportGateway, ReportOrganization
from mail_pipeline.domain.email_events import (
    EmailEvent,
    MalformedEmailEvent,
    UnsupportedEmailEvent,
    parse_ses_notification,
)
from mail_pipeline.domain.report_delivery import (
    CRASHED_REASON,
    SENDABLE,
    ReportStatus,
    report_id_of,
    report_key,
    status_after_event,
)
from mail_pipeline.domain.reports import (
    COMPARED_FIGURES,
    ReportFigures,
    ReportPeriod,
    input_days,
    previous,
    report_figures,
)
from mail_pipeline.integrations.email_delivery import EmailSender, SendOutcomeUnknown
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.queues.base import MessageQueue, QueueMessage
from mail_pipeline.services.draining import dead_letter, delete_processed, receive_pages
from mail_pipeline.services.report_rendering import (
    ReportChart,
    report_charts,
    report_email,
    standalone_html,
)

logger = logging.getLogger(__name__)

#: Longest reason stored on a report.
MAX_REASON = 500


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _reason(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:MAX_REASON]


# --- content ----------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Dates as ISO text, enums as their value, NaN and infinities as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        return _json_safe(value.item())
    return value


def _period(period: ReportPeriod) -> dict[str, str]:
    return {
        "kind": str(period.kind),
        "first": period.first.isoformat(),
        "last": period.last.isoformat(),
    }


def figures_summary(figures: ReportFigures) -> dict[str, Any]:
    """The report's figures as the JSON stored in ``reports.content``: totals of the period
    and the previous one, each compared figure's change, the other currencies, the lifts and
    the chart days. Raises ValueError if anything would not be strict JSON (NaN)."""

    def totals(t: Any) -> dict[str, Any]:
        return {figure: getattr(t, figure) for figure in COMPARED_FIGURES}

    content = _json_safe(
        {
            "period": _period(figures.period),
            "previous_period": _period(figures.previous_period),
            "currency": figures.currency,
            "current": totals(figures.current),
            "previous": totals(figures.previous),
            "changes": [
                {"figure": c.figure, "delta": c.delta, "percent": c.percent}
                for c in figures.changes
            ],
            "other_currencies": [asdict(o) for o in figures.other_currencies],
            "lifts": [asdict(lift) for lift in figures.lifts],
            "daily": [asdict(day) for day in figures.daily],
        }
    )
    json.dumps(content, allow_nan=False)  # raises ValueError on NaN or infinity
    return content


# --- generate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedReport:
    report_id: int
    status: ReportStatus
    figures: ReportFigures
    campaign_names: dict[int, str]
    #: Whether this call wrote the content (the report was ``generated``).
    regenerated: bool
    #: Whether this call found it ``sending`` and made it ``unknown``.
    found_crashed: bool


def generate_report(
    sessions: SessionFactory, organization: ReportOrganization, period: ReportPeriod
) -> GeneratedReport:
    """Claim the report row and compute its figures (one transaction; see the module)."""
    before = previous(period)
    with sessions() as session:
        gateway = ReportGateway(session)
        report = gateway.claim(organization.id, str(period.kind), period.first, period.last)
        frames = gateway.metrics_frames(organization.id, input_days(period, before))
        figures = report_figures(
            frames.orders,
            frames.recipients,
            frames.spend,
            frames.campaign_results,
            period,
            before,
        )
        status = ReportStatus(report.status)
        regenerated = crashed = False
        if status in SENDABLE:
            report.content = figures_summary(figures)
            regenerated = True
        elif status is ReportStatus.SENDING:
            report.status = status = ReportStatus.UNKNOWN
            report.status_reason = CRASHED_REASON
            crashed = True
        return GeneratedReport(
            report.id,
            status,
            figures,
            gateway.campaign_names(organization.id),
            regenerated,
            crashed,
        )


def write_report_files(
    folder: Path,
    figures: ReportFigures,
    brand: str,
    charts: Sequence[ReportChart],
    campaign_names: dict[int, str],
) -> list[Path]:
    """The charts as ``<name>.png`` and the page as ``report.html`` (charts inline) in
    ``folder``, replacing what a previous run wrote there."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for chart in charts:
        path = folder / f"{chart.name}.png"
        path.write_bytes(chart.png)
        paths.append(path)
    page = folder / "report.html"
    page.write_text(
        standalone_html(figures, brand, charts=charts, campaign_names=campaign_names),
        encoding="utf-8",
    )
    paths.append(page)
    return paths


# --- send -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportDelivery:
    """How reports are sent: the sender, the From address, and who gets an
    organization's reports."""

    sender: EmailSender
    from_address: str
    recipients: Callable[[ReportOrganization], list[str]]


def send_report(
    sessions: SessionFactory,
    report_id: int,
    message: Any,
    sender: EmailSender,
    *,
    clock: Callable[[], datetime] = _utcnow,
) -> ReportStatus:
    """Send a ``generated`` report's ``message`` once, by the double-send rule; the report's
    status afterwards. A report in any other status is not sent (its status is returned)."""
    recipients = [a.strip() for a in str(message["To"] or "").split(",") if a.strip()]
    with sessions() as session:
        report = ReportGateway(session).get(report_id, lock=True)
        if report is None:
            raise LookupError(f"report {report_id} does not exist")
        if ReportStatus(report.status) not in SENDABLE:
            return ReportStatus(report.status)
        report.status = ReportStatus.SENDING
        report.sent_to = recipients
        report.status_reason = None
    try:
        sent = sender.send(message, idempotency_key=report_key(report_id))
    except SendOutcomeUnknown as exc:
        _settle(sessions, report_id, ReportStatus.UNKNOWN, _reason(exc))
        raise
    except IntegrationError as exc:
        status = ReportStatus.GENERATED if exc.retryable else ReportStatus.FAILED
        _settle(sessions, report_id, status, _reason(exc))
        raise
    except Exception as exc:
        # Whatever went wrong, the provider may have been called: never send it again.
        _settle(sessions, report_id, ReportStatus.UNKNOWN, _reason(exc))
        raise
    with sessions() as session:
        report = _get(session, report_id)
        if report.status == ReportStatus.SENDING:
            report.status = ReportStatus.SENT
        report.message_id = sent.message_id
        report.provider = sent.provider
        report.sent_to = list(sent.recipients)
        report.sent_at = clock()
        return ReportStatus(report.status)


def _get(session: Session, report_id: int) -> Report:
    report = ReportGateway(session).get(report_id, lock=True)
    if report is None:
        raise LookupError(f"report {report_id} does not exist")
    return report


def _settle(sessions: SessionFactory, report_id: int, status: ReportStatus, reason: str) -> None:
    with sessions() as session:
        report = _get(session, report_id)
        if report.status == ReportStatus.SENDING:
            report.status = status
            report.status_reason = reason


# --- one partition ----------------------------------------------------------------------------


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not due for its cadence
    SENT = "sent"  # sent by this run
    ALREADY_SENT = "already sent"  # past generated before this run: nothing sent
    RETRY = "retry"  # a retryable error: generated again, the next run sends it
    FAILED = "failed"


@dataclass(frozen=True)
class OrganizationReport:
    slug: str
    outcome: Outcome
    report_id: int | None = None
    status: str | None = None
    reason: str | None = None
    files: tuple[Path, ...] = ()
    figures: ReportFigures | None = None


@dataclass(frozen=True)
class ReportRunResult:
    reports: tuple[OrganizationReport, ...] = field(default_factory=tuple)

    def _count(self, *outcomes: Outcome) -> int:
        return sum(1 for r in self.reports if r.outcome in outcomes)

    @property
    def generated(self) -> int:
        return sum(1 for r in self.reports if r.report_id is not None)

    @property
    def sent(self) -> int:
        return self._count(Outcome.SENT)

    @property
    def skipped(self) -> int:
        return self._count(Outcome.SKIPPED)

    @property
    def already_sent(self) -> int:
        return self._count(Outcome.ALREADY_SENT)

    @property
    def failed(self) -> int:
        return self._count(Outcome.FAILED, Outcome.RETRY)

    @property
    def failures(self) -> dict[str, str]:
        """Organization slug -> reason, for those that failed (or wait for a retry)."""
        return {
            r.slug: r.reason or str(r.outcome)
            for r in self.reports
            if r.outcome in (Outcome.FAILED, Outcome.RETRY)
        }


def report_for_organization(
    sessions: SessionFactory,
    organization: ReportOrganization,
    period: ReportPeriod,
    delivery: ReportDelivery,
    folder: Path,
) -> OrganizationReport:
    """Generate, keep and (at most once) send one organization's report for ``period``."""
    generated = generate_report(sessions, organization, period)
    charts = report_charts(generated.figures)
    files = write_report_files(
        folder / organization.slug,
        generated.figures,
        organization.name,
        charts,
        generated.campaign_names,
    )
    base = OrganizationReport(
        organization.slug,
        Outcome.SENT,
        report_id=generated.report_id,
        status=str(generated.status),
        files=tuple(files),
        figures=generated.figures,
    )
    if generated.found_crashed:
        return replace(base, outcome=Outcome.FAILED, reason=CRASHED_REASON)
    if generated.status not in SENDABLE:
        return replace(base, outcome=Outcome.ALREADY_SENT)
    message = report_email(
        generated.figures,
        organization.name,
        sender=delivery.from_address,
        to=delivery.recipients(organization),
        charts=charts,
        campaign_names=generated.campaign_names,
    )
    try:
        status = send_report(sessions, generated.report_id, message, delivery.sender)
    except IntegrationError as exc:
        outcome = Outcome.RETRY if exc.retryable else Outcome.FAILED
        return replace(base, outcome=outcome, status=None, reason=_reason(exc))
    return replace(base, status=str(status))


def week_to_date_due(sessions: SessionFactory, first_day: date) -> bool:
    """Whether the local demo should send the week-to-date report of the week starting
    ``first_day``: postcards were mailed and orders attributed this week, and no report of
    it exists yet."""
    with sessions() as session:
        return ReportGateway(session).week_to_date_due(first_day)


def run_reports(
    sessions: SessionFactory,
    period_for: Callable[[ReportOrganization], ReportPeriod | None],
    delivery: ReportDelivery,
    folder: Path,
    *,
    log: logging.Logger = logger,
) -> ReportRunResult:
    """Every active organization's report for one partition, each isolated from the
    others' failures (see the module)."""
    with sessions() as session:
        organizations = ReportGateway(session).organizations()
    reports: list[OrganizationReport] = []
    for organization in organizations:
        period = period_for(organization)
        if period is None:
            reports.append(OrganizationReport(organization.slug, Outcome.SKIPPED))
            continue
        try:
            reports.append(
                report_for_organization(sessions, organization, period, delivery, folder)
            )
        except Exception as exc:  # one brand's failure must not stop the others
            log.exception("report of %s for %s failed", organization.slug, period)
            reports.append(
                OrganizationReport(organization.slug, Outcome.FAILED, reason=_reason(exc))
            )
    return ReportRunResult(tuple(reports))


# --- email events -----------------------------------------------------------------------------


class EventOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    UNMATCHED = "unmatched"  # no report has its key or message id: recorded, report_id NULL


def apply_email_event(
    session: Session, event: EmailEvent, *, now: datetime | None = None
) -> EventOutcome:
    """Record ``event`` once per ``event_id`` and move its report forward
    (``domain.report_delivery.status_after_event``). The report is found by the key in the
    email's header, else by the provider's message id; an event of no known report is
    recorded with no report, never an error. A repeated ``event_id`` changes nothing."""
    gateway = ReportGateway(session)
    report = None
    report_id = report_id_of(event.report_key)
    if report_id is not None:
        report = gateway.get(report_id, lock=True)
    if report is None:
        report = gateway.by_message_id(event.message_id)
    if not gateway.record_event(event, report.id if report else None, now or _utcnow()):
        return EventOutcome.DUPLICATE
    if report is None:
        return EventOutcome.UNMATCHED
    if report.message_id is None:
        report.message_id = event.message_id
    status = status_after_event(ReportStatus(report.status), event.kind)
    if status is ReportStatus.SENT:
        report.status, report.sent_at = status, report.sent_at or event.occurred_at
        report.status_reason = "sent: SES reported the message was sent"
    elif status is ReportStatus.DELIVERED:
        report.status, report.delivered_at = status, event.occurred_at
        report.sent_at = report.sent_at or event.occurred_at
    elif status is ReportStatus.BOUNCED:
        report.status, report.bounced_at = status, event.occurred_at
        report.status_reason = (event.detail or "bounced")[:MAX_REASON]
    return EventOutcome.APPLIED


def bounces_by_organization(session: Session) -> dict[int, int]:
    """Bounced reports per organization id (organizations with none are left out)."""
    return ReportGateway(session).bounces_by_organization()


@dataclass(frozen=True)
class EmailEventsRunResult:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    unmatched: int = 0
    unsupported: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: tuple[str, ...] = ()
    #: Messages that should have gone to the DLQ but could not be moved there; they come
    #: back after the visibility timeout.
    dead_letter_failures: int = 0
    messages_deleted: int = 0
    delete_failures: int = 0


def process_report_email_events(
    sessions: SessionFactory,
    queue: MessageQueue,
    *,
    max_receives: int = 5,
    visibility_timeout: int = 120,
    log: logging.Logger = logger,
) -> EmailEventsRunResult:
    """One pass over the report email events queue: receive; parse (malformed ->
    dead-letter with its reason, unsupported -> delete); apply every event in one
    transaction, each in its own savepoint; after the commit dead-letter the events that
    failed and delete the rest. A database outage propagates with nothing deleted."""
    messages = receive_pages(queue, max_receives, visibility_timeout, log)
    done: list[QueueMessage] = []
    parsed: list[tuple[QueueMessage, EmailEvent]] = []
    reasons: list[str] = []
    unsupported = unparked = 0
    for message in messages:
        try:
            parsed.append((message, parse_ses_notification(message.body)))
        except UnsupportedEmailEvent:
            unsupported += 1
            done.append(message)
        except MalformedEmailEvent as exc:
            if dead_letter(queue, message, str(exc), log, "report email event"):
                reasons.append(str(exc))
            else:
                unparked += 1
    outcomes: dict[EventOutcome, int] = dict.fromkeys(EventOutcome, 0)
    failed: list[tuple[QueueMessage, str]] = []
    if parsed:
        with sessions() as session:
            for message, event in parsed:
                try:
                    with session.begin_nested():
                        outcomes[apply_email_event(session, event)] += 1
                except Exception as exc:
                    if is_outage(exc):
                        raise
                    failed.append((message, _reason(exc)))
                    continue
                done.append(message)
    for message, reason in failed:
        if dead_letter(queue, message, reason, log, "report email event"):
            reasons.append(reason)
        else:
            unparked += 1
    delete_failures = delete_processed(queue, done, log, "report email event")
    return EmailEventsRunResult(
        received=len(messages),
        applied=outcomes[EventOutcome.APPLIED],
        duplicates=outcomes[EventOutcome.DUPLICATE],
        unmatched=outcomes[EventOutcome.UNMATCHED],
        unsupported=unsupported,
        dead_lettered=len(reasons),
        dead_letter_reasons=tuple(reasons),
        dead_letter_failures=unparked,
        messages_deleted=len(done) - delete_failures,
        delete_failures=delete_failures,
    )
