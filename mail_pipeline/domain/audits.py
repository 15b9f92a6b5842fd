"""Organization audits (SPEC §3 ``audits.process_audits``): what is checked, how bad each
finding is, and the verdict - pure rules over plain facts.

``services.audits`` gathers the facts (the database, one harmless read per vendor) and these
rules judge them. Every finding has a severity, an area, a sentence a person can read and what
to do about it; an audit's verdict is its worst finding (:func:`verdict`). The rules, area by
area (docs/audits.md lists them for people):

- **organization**: a churned or disabled organization is a warning (nothing of a disabled
  one is synced or mailed).
- **integrations**: each *enabled* integration's credentials are tried with one harmless
  read. Refused credentials, an account or shop the vendor does not know, or a request the
  vendor refuses (a bad setting) are errors; a vendor that could not be reached is a warning
  (nothing was learnt; ask again later). No enabled integration at all is a warning.
- **segments**: each live campaign's segment is looked up in the organization's CDP
  (Klaviyo). A segment that does not exist is an error ("segment X of campaign Y does not
  exist"), so is a segment with no enabled Klaviyo integration to read it from, or one the
  key may not read; an unreachable CDP is a warning, and segments not checked because the
  CDP's credentials failed are one warning.
- **campaigns** (live ones: Pending, Active, Paused; a Completed campaign is history): a
  missing or unrenderable design, an automated campaign without a segment, a cap that is not
  positive and a start date after the mail date are errors; a daily cap above the total cap
  and an Active one-off campaign whose mail date has passed are warnings.
- **printing**: a printer must mail to the organization's country (``domain.routing``) and
  be configured in this deployment; it must print each live campaign's postcard size. A
  preferred printer that cannot be used there is a warning.
- **recipients**: a recipient in Error without a reason is an error (SPEC §2: every Error
  carries one), so is one held in a claimed state (:data:`STUCK_STATES`) for longer than
  :data:`STUCK_AFTER`, or with no claim time at all; the counts per state are reported.
- **billing**: no Stripe customer (postcards would be mailed and never billed), or a value
  that is not a Stripe customer id (``cus_...``), is an error. Whether Stripe knows the
  customer is not checked (the billing client records meter events only).

An area with nothing wrong says so in one ``ok`` finding, so a report lists what was checked
as well as what failed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    IntegrationKind,
    OrganizationStatus,
)
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.routing import (
    DEFAULT_ROUTES,
    NoRoute,
    choose_printer,
    normalize_preference,
)

S = RecipientStatus

#: A recipient claimed longer ago than this is stuck: recovery returns a dead run's batch
#: within minutes (``domain.claims``), so two hours means recovery is not doing its job.
STUCK_AFTER = timedelta(hours=2)
#: The claimed states judged by :data:`STUCK_AFTER`, in pipeline order. AddressEnriching is
#: left out: an enrichment batch legitimately waits hours for Faraday.
STUCK_STATES = (S.PROOFING_STAGED, S.PROOFING, S.SENDING_STAGED, S.SENDING)
#: At most this many recipient ids are named in one finding.
MAX_EXAMPLES = 5

VENDOR_NAMES: Mapping[str, str] = {
    IntegrationKind.KLAVIYO: "Klaviyo",
    IntegrationKind.OMETRIA: "Ometria",
    IntegrationKind.SHOPIFY: "Shopify",
}
PRINTER_NAMES: Mapping[str, str] = {
    "lob": "Lob",
    "stannp": "Stannp",
    "intelliprint": "IntelliPrint",
}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    OK = "ok"


#: Worst first: how findings are ordered in a report.
SEVERITY_ORDER = (Severity.ERROR, Severity.WARNING, Severity.OK)


class Area(StrEnum):
    ORGANIZATION = "organization"
    INTEGRATIONS = "integrations"
    SEGMENTS = "segments"
    CAMPAIGNS = "campaigns"
    PRINTING = "printing"
    RECIPIENTS = "recipients"
    BILLING = "billing"
    #: The audit itself could not run (the report of a failed audit).
    AUDIT = "audit"


class Verdict(StrEnum):
    PASSED = "passed"
    HAS_WARNINGS = "has warnings"
    HAS_ERRORS = "has errors"


class AuditStatus(StrEnum):
    """``audits.status``: the audit ran (whatever it found), or could not run."""

    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    area: Area
    #: A sentence a person can read.
    message: str
    #: What to do about it (empty for ``ok``).
    action: str = ""

    def to_json(self) -> dict[str, str]:
        """The form stored in ``audits.findings``."""
        return {
            "severity": self.severity.value,
            "area": self.area.value,
            "message": self.message,
            "action": self.action,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Finding:
        return cls(
            Severity(doc["severity"]),
            Area(doc["area"]),
            str(doc["message"]),
            str(doc.get("action") or ""),
        )


def verdict(findings: Iterable[Finding]) -> Verdict:
    """Has errors if any finding is an error, else has warnings if any is a warning, else
    passed."""
    severities = {f.severity for f in findings}
    if Severity.ERROR in severities:
        return Verdict.HAS_ERRORS
    if Severity.WARNING in severities:
        return Verdict.HAS_WARNINGS
    return Verdict.PASSED


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    """Errors, then warnings, then ok; the order within a severity is kept."""
    return sorted(findings, key=lambda f: SEVERITY_ORDER.index(f.severity))


# -- facts ------------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What a harmless read at a vendor came back with."""

    OK = "ok"
    AUTH_REFUSED = "auth refused"
    NOT_FOUND = "not found"
    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    #: Not tried: the CDP's own credential check failed first.
    NOT_CHECKED = "not checked"
    #: Not tried: the organization has no enabled Klaviyo integration.
    NO_CDP = "no CDP"


@dataclass(frozen=True)
class IntegrationCheck:
    """One enabled integration's credential check: what was read, or the vendor's reason."""

    kind: IntegrationKind
    outcome: Outcome
    detail: str = ""
    #: Where the credential lives (named in the advice; never the credential).
    secret_ref: str = ""


@dataclass(frozen=True)
class SegmentCheck:
    campaign_id: int
    campaign_name: str
    segment_id: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class CampaignFacts:
    id: int
    name: str
    mode: CampaignMode
    status: CampaignStatus
    segment_id: str | None = None
    #: The design JSON is not empty.
    has_design: bool = True
    #: What the renderer would refuse in the design (``PostcardDesign.from_mapping``).
    design_problems: tuple[str, ...] = ()
    #: The postcard size the design asks for ("4x6" when it names none).
    size: str = "4x6"
    start_date: date | None = None
    mail_date: date | None = None
    daily_send_cap: int | None = None
    total_send_cap: int | None = None

    @property
    def label(self) -> str:
        return f"campaign {self.name!r} ({self.id})"


@dataclass(frozen=True)
class PrintingFacts:
    country: str
    preference: str | None = None
    #: The printers this deployment can mail with (None: not known, every printer counts).
    available: frozenset[str] | None = None
    #: printer -> the postcard sizes it prints (a printer not listed is not judged).
    sizes: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StuckClaim:
    """Recipients of one claimed state whose claim is older than the cutoff (or has no
    claim time)."""

    status: RecipientStatus
    count: int
    oldest_claimed_at: datetime | None = None
    examples: tuple[int, ...] = ()


@dataclass(frozen=True)
class RecipientFacts:
    counts: Mapping[str, int] = field(default_factory=dict)
    errors_without_reason: int = 0
    error_examples: tuple[int, ...] = ()
    stuck: tuple[StuckClaim, ...] = ()


@dataclass(frozen=True)
class OrganizationFacts:
    id: int
    name: str
    slug: str
    status: OrganizationStatus
    country: str
    printer_preference: str | None = None
    stripe_customer_id: str | None = None


# -- the rules, area by area -------------------------------------------------------------------


def organization_findings(status: OrganizationStatus) -> list[Finding]:
    if status is OrganizationStatus.DISABLED:
        return [
            Finding(
                Severity.WARNING,
                Area.ORGANIZATION,
                "The organization is disabled: none of its campaigns is synced and none of its "
                "recipients is mailed.",
                "If the brand is back, set the organization active again; otherwise nothing "
                "is needed.",
            )
        ]
    if status is OrganizationStatus.CHURNED:
        return [
            Finding(
                Severity.WARNING,
                Area.ORGANIZATION,
                "The organization has churned: it will be disabled 180 days after churning.",
                "If the brand stays, set the organization active again.",
            )
        ]
    return []


def _vendor(kind: str) -> str:
    return VENDOR_NAMES.get(kind, str(kind))


def integration_findings(checks: Sequence[IntegrationCheck]) -> list[Finding]:
    """One finding per enabled integration (see the module docstring)."""
    if not checks:
        return [
            Finding(
                Severity.WARNING,
                Area.INTEGRATIONS,
                "The organization has no enabled integration: no segment can be read and no "
                "order can be attributed.",
                "Connect the brand's Klaviyo (and its store) in the app.",
            )
        ]
    return [_integration_finding(check) for check in checks]


def _integration_finding(check: IntegrationCheck) -> Finding:
    vendor = _vendor(check.kind)
    where = f" (secret {check.secret_ref!r})" if check.secret_ref else ""
    if check.outcome is Outcome.OK:
        return Finding(
            Severity.OK, Area.INTEGRATIONS, f"{vendor}: the credentials work ({check.detail})."
        )
    if check.outcome is Outcome.AUTH_REFUSED:
        return Finding(
            Severity.ERROR,
            Area.INTEGRATIONS,
            f"{vendor} refused the organization's credentials: {check.detail}",
            f"Ask the brand to reconnect {vendor}, or store a valid key{where}.",
        )
    if check.outcome is Outcome.NOT_FOUND:
        return Finding(
            Severity.ERROR,
            Area.INTEGRATIONS,
            f"{vendor} does not know the organization's account: {check.detail}",
            f"Check the integration's settings (the account or shop it names){where}.",
        )
    if check.outcome is Outcome.UNAVAILABLE:
        return Finding(
            Severity.WARNING,
            Area.INTEGRATIONS,
            f"{vendor} could not be reached, so its credentials were not checked: {check.detail}",
            "Request the audit again later.",
        )
    return Finding(
        Severity.ERROR,
        Area.INTEGRATIONS,
        f"{vendor} refused the check request: {check.detail}",
        f"Check the integration's settings{where}.",
    )


def segment_findings(checks: Sequence[SegmentCheck]) -> list[Finding]:
    """One finding per segment problem; the segments that exist and those not checked are
    each summed up in one finding."""
    findings: list[Finding] = []
    found = [c for c in checks if c.outcome is Outcome.OK]
    skipped = [c for c in checks if c.outcome is Outcome.NOT_CHECKED]
    for check in checks:
        label = f"campaign {check.campaign_name!r} ({check.campaign_id})"
        if check.outcome is Outcome.NOT_FOUND:
            findings.append(
                Finding(
                    Severity.ERROR,
                    Area.SEGMENTS,
                    f"Segment {check.segment_id} of {label} does not exist in Klaviyo.",
                    "Choose an existing segment for the campaign, or pause it.",
                )
            )
        elif check.outcome is Outcome.NO_CDP:
            findings.append(
                Finding(
                    Severity.ERROR,
                    Area.SEGMENTS,
                    f"{_upper_first(label)} targets segment {check.segment_id}, but the "
                    "organization has no enabled Klaviyo integration to read it from.",
                    "Connect (or enable) the brand's Klaviyo, or remove the segment.",
                )
            )
        elif check.outcome is Outcome.AUTH_REFUSED:
            findings.append(
                Finding(
                    Severity.ERROR,
                    Area.SEGMENTS,
                    f"Klaviyo refused to read segment {check.segment_id} of {label}: "
                    f"{check.detail}",
                    "Give the Klaviyo key the segments:read scope.",
                )
            )
        elif check.outcome is Outcome.UNAVAILABLE:
            findings.append(
                Finding(
                    Severity.WARNING,
                    Area.SEGMENTS,
                    f"Segment {check.segment_id} of {label} could not be checked: {check.detail}",
                    "Request the audit again later.",
                )
            )
        elif check.outcome is Outcome.REJECTED:
            findings.append(
                Finding(
                    Severity.ERROR,
                    Area.SEGMENTS,
                    f"Klaviyo refused to look up segment {check.segment_id} of {label}: "
                    f"{check.detail}",
                    "Check the campaign's segment id.",
                )
            )
    if skipped:
        findings.append(
            Finding(
                Severity.WARNING,
                Area.SEGMENTS,
                f"The segments of {_count(len(skipped), 'campaign')} were not checked: "
                f"{skipped[0].detail}",
                "Fix the Klaviyo integration (see integrations), then request the audit again.",
            )
        )
    if not checks:
        findings.append(Finding(Severity.OK, Area.SEGMENTS, "No live campaign targets a segment."))
    elif len(found) == len(checks):
        findings.append(
            Finding(
                Severity.OK,
                Area.SEGMENTS,
                f"Every live campaign's segment exists in Klaviyo "
                f"({_count(len(found), 'campaign')} checked).",
            )
        )
    return findings


def campaign_findings(campaign: CampaignFacts, today: date) -> list[Finding]:
    """What is wrong with one live campaign's configuration (``today``: the New York day)."""
    findings: list[Finding] = []
    label = campaign.label
    if not campaign.has_design:
        findings.append(
            Finding(
                Severity.ERROR,
                Area.CAMPAIGNS,
                f"{_upper_first(label)} has no design: no postcard can be rendered.",
                "Design the postcard in the campaign editor (template, headline and brand "
                "name are required).",
            )
        )
    elif campaign.design_problems:
        findings.append(
            Finding(
                Severity.ERROR,
                Area.CAMPAIGNS,
                f"The design of {label} cannot be rendered: "
                + "; ".join(campaign.design_problems)
                + ".",
                "Fix the design in the campaign editor.",
            )
        )
    if campaign.mode is CampaignMode.AUTOMATED and not campaign.segment_id:
        findings.append(
            Finding(
                Severity.ERROR,
                Area.CAMPAIGNS,
                f"Automated {label} has no segment: it can never sync anyone.",
                "Choose the campaign's segment, or make it a one-off campaign with an "
                "uploaded list.",
            )
        )
    findings.extend(_cap_findings(campaign))
    findings.extend(_date_findings(campaign, today))
    return findings


def _cap_findings(campaign: CampaignFacts) -> list[Finding]:
    findings: list[Finding] = []
    caps = (("daily", campaign.daily_send_cap), ("total", campaign.total_send_cap))
    for name, cap in caps:
        if cap is not None and cap <= 0:
            findings.append(
                Finding(
                    Severity.ERROR,
                    Area.CAMPAIGNS,
                    f"The {name} send cap of {campaign.label} is {cap}: nothing would be mailed.",
                    "Set a positive cap, or clear it for no limit (pause the campaign to stop "
                    "mailing).",
                )
            )
    daily, total = campaign.daily_send_cap, campaign.total_send_cap
    if daily is not None and total is not None and 0 < total < daily:
        findings.append(
            Finding(
                Severity.WARNING,
                Area.CAMPAIGNS,
                f"The daily send cap of {campaign.label} ({daily}) is above its total send cap "
                f"({total}): the daily cap never applies.",
                "Check the two caps (they may be swapped).",
            )
        )
    return findings


def _date_findings(campaign: CampaignFacts, today: date) -> list[Finding]:
    start, mail = campaign.start_date, campaign.mail_date
    if start is not None and mail is not None and start > mail:
        return [
            Finding(
                Severity.ERROR,
                Area.CAMPAIGNS,
                f"{_upper_first(campaign.label)} starts on {start.isoformat()}, after its mail "
                f"date {mail.isoformat()}.",
                "Fix the campaign's dates.",
            )
        ]
    if (
        campaign.mode is CampaignMode.ONE_OFF
        and campaign.status is CampaignStatus.ACTIVE
        and mail is not None
        and mail < today
    ):
        return [
            Finding(
                Severity.WARNING,
                Area.CAMPAIGNS,
                f"One-off {campaign.label} is still Active although its mail date "
                f"{mail.isoformat()} has passed.",
                "The nightly switch-off (3:30) completes it; if it stays Active after that, "
                "look at the nightly_job runs.",
            )
        ]
    return []


def campaigns_findings(campaigns: Sequence[CampaignFacts], today: date) -> list[Finding]:
    """Every live campaign's findings; one ``ok`` finding when none has any."""
    findings = [f for c in campaigns for f in campaign_findings(c, today)]
    if findings:
        return findings
    if not campaigns:
        return [Finding(Severity.OK, Area.CAMPAIGNS, "The organization has no live campaign.")]
    return [
        Finding(
            Severity.OK,
            Area.CAMPAIGNS,
            "Every live campaign is complete: design, segment, caps and dates "
            f"({_count(len(campaigns), 'campaign')} checked).",
        )
    ]


def printing_findings(printing: PrintingFacts, campaigns: Sequence[CampaignFacts]) -> list[Finding]:
    """Whether postcards to the organization's country can be printed, and in the live
    campaigns' sizes."""
    country = (printing.country or "").strip().upper()
    try:
        printer = choose_printer(country, printing.preference, available=printing.available)
    except NoRoute:
        return [
            Finding(
                Severity.ERROR,
                Area.PRINTING,
                f"No printer mails to {country or 'an unknown country'}, the organization's "
                "country.",
                "Check the organization's country (postcards are mailed in "
                + ", ".join(sorted(DEFAULT_ROUTES))
                + ").",
            )
        ]
    name = PRINTER_NAMES.get(printer, printer)
    findings: list[Finding] = []
    if printing.available is not None and printer not in printing.available:
        findings.append(
            Finding(
                Severity.ERROR,
                Area.PRINTING,
                f"{name} mails postcards to {country}, but it is not configured in this "
                "deployment.",
                f"Configure {name}'s API key and webhook secret, or set a preferred printer "
                f"that mails to {country}.",
            )
        )
    preferred = normalize_preference(printing.preference)
    if preferred is not None and preferred != printer:
        findings.append(
            Finding(
                Severity.WARNING,
                Area.PRINTING,
                f"The preferred printer {PRINTER_NAMES.get(preferred, preferred)} does not "
                f"mail to {country} here; {name} is used instead.",
                "Change the organization's preferred printer, or clear it.",
            )
        )
    sizes = printing.sizes.get(printer)
    for campaign in campaigns:
        if sizes is None or campaign.design_problems or not campaign.has_design:
            continue
        if campaign.size not in sizes:
            findings.append(
                Finding(
                    Severity.ERROR,
                    Area.PRINTING,
                    f"{name} does not print {campaign.size} postcards, the size of "
                    f"{campaign.label}: every recipient would fail at mailing.",
                    f"Change the design's size to one {name} prints ("
                    + ", ".join(sorted(sizes))
                    + ").",
                )
            )
    if not findings:
        findings.append(
            Finding(Severity.OK, Area.PRINTING, f"Postcards to {country} are printed by {name}.")
        )
    return findings


def recipient_findings(
    facts: RecipientFacts, stuck_after: timedelta = STUCK_AFTER
) -> list[Finding]:
    """Errors without a reason and stuck claims are errors; the counts per state are
    reported in an ``ok`` finding."""
    findings: list[Finding] = []
    if facts.errors_without_reason:
        findings.append(
            Finding(
                Severity.ERROR,
                Area.RECIPIENTS,
                f"{_count(facts.errors_without_reason, 'recipient')} in Error without a reason"
                f"{_examples(facts.error_examples)}.",
                "Every Error must say why: report the run that failed them as a bug, then "
                "look at them with `mail-pipeline errors` and retry them with "
                "`mail-pipeline retry`.",
            )
        )
    hours = stuck_after.total_seconds() / 3600
    for stuck in facts.stuck:
        if not stuck.count:
            continue
        since = (
            f" (the oldest since {stuck.oldest_claimed_at:%Y-%m-%d %H:%M} UTC)"
            if stuck.oldest_claimed_at is not None
            else " (without a claim time)"
        )
        action = (
            "Check that recovery_sensor is running: it resumes these through the printer's "
            "idempotency key. Do not edit them by hand: the printer may have the postcard."
            if stuck.status in (S.SENDING, S.SENDING_STAGED)
            else "Check that recovery_sensor is running: it returns these to their stage."
        )
        findings.append(
            Finding(
                Severity.ERROR,
                Area.RECIPIENTS,
                f"{_count(stuck.count, 'recipient')} stuck in {stuck.status.value} for more "
                f"than {hours:g} hours{since}{_examples(stuck.examples)}.",
                action,
            )
        )
    counts = {status: n for status, n in facts.counts.items() if n}
    if counts:
        listed = ", ".join(f"{status} {counts[status]}" for status in _status_order(counts))
        summary = f"Recipients by state: {listed}."
    else:
        summary = "The organization has no recipients yet."
    findings.append(Finding(Severity.OK, Area.RECIPIENTS, summary))
    return findings


def _status_order(counts: Mapping[str, int]) -> list[str]:
    order = [s.value for s in RecipientStatus]
    return sorted(counts, key=lambda s: order.index(s) if s in order else len(order))


def billing_findings(stripe_customer_id: str | None) -> list[Finding]:
    """The Stripe customer must be set and look like one; Stripe itself is not asked."""
    customer = (stripe_customer_id or "").strip()
    if not customer:
        return [
            Finding(
                Severity.ERROR,
                Area.BILLING,
                "The organization has no Stripe customer: the postcards it mails are never billed.",
                "Set the organization's Stripe customer id (cus_...).",
            )
        ]
    if not customer.startswith("cus_"):
        return [
            Finding(
                Severity.ERROR,
                Area.BILLING,
                f"The organization's Stripe customer {customer!r} is not a Stripe customer id "
                "(cus_...): usage would be refused.",
                "Set the organization's Stripe customer id to the brand's cus_... id.",
            )
        ]
    return [
        Finding(
            Severity.OK,
            Area.BILLING,
            f"Stripe customer {customer} is set (whether Stripe knows it is not checked).",
        )
    ]


def audit_findings(
    organization: OrganizationFacts,
    *,
    integrations: Sequence[IntegrationCheck],
    segments: Sequence[SegmentCheck],
    campaigns: Sequence[CampaignFacts],
    printing: PrintingFacts,
    recipients: RecipientFacts,
    today: date,
    stuck_after: timedelta = STUCK_AFTER,
) -> list[Finding]:
    """Every rule over one organization's facts, worst first."""
    return worst_first(
        [
            *organization_findings(organization.status),
            *integration_findings(integrations),
            *segment_findings(segments),
            *campaigns_findings(campaigns, today),
            *printing_findings(printing, campaigns),
            *recipient_findings(recipients, stuck_after),
            *billing_findings(organization.stripe_customer_id),
        ]
    )


def failure_findings(reason: str) -> list[Finding]:
    """The report of an audit that could not run."""
    return [
        Finding(
            Severity.ERROR,
            Area.AUDIT,
            f"The audit could not be completed: {reason}",
            "Request the audit again; if it fails the same way, report it as a bug.",
        )
    ]


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditReport:
    organization_id: int
    organization_name: str
    findings: tuple[Finding, ...]
    status: AuditStatus = AuditStatus.COMPLETED
    requested_by: str | None = None
    audited_at: datetime | None = None
    #: The stored audit's id (None until stored).
    audit_id: int | None = None

    @property
    def verdict(self) -> Verdict:
        return verdict(self.findings)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    def markdown(self) -> str:
        """The report as Markdown: a heading with the verdict, who asked and when, and one
        table row per finding (worst first)."""
        title = f"Audit of {self.organization_name} (organization {self.organization_id})"
        if self.audit_id is not None:
            title += f", audit {self.audit_id}"
        status = self.verdict.value if self.status is AuditStatus.COMPLETED else "failed"
        lines = [f"### {_cell(title)}: {status}", ""]
        asked = []
        if self.requested_by:
            asked.append(f"requested by {self.requested_by}")
        if self.audited_at is not None:
            asked.append(f"audited {self.audited_at:%Y-%m-%d %H:%M} UTC")
        counts = (
            f"{_count(self.count(Severity.ERROR), 'error')}, "
            f"{_count(self.count(Severity.WARNING), 'warning')}, "
            f"{self.count(Severity.OK)} ok"
        )
        lines.append(_upper_first(_cell("; ".join([*asked, counts]))) + ".")
        lines += ["", "| severity | area | finding | what to do |", "|---|---|---|---|"]
        for finding in worst_first(self.findings):
            lines.append(
                f"| {finding.severity.value} | {finding.area.value} | {_cell(finding.message)} "
                f"| {_cell(finding.action)} |"
            )
        return "\n".join(lines)


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no bare pipe."""
    return " ".join(text.split()).replace("|", "\\|")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _examples(ids: Collection[int]) -> str:
    if not ids:
        return ""
    return " (e.g. " + ", ".join(str(i) for i in list(ids)[:MAX_EXAMPLES]) + ")"
