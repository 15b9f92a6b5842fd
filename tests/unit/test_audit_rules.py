"""The audit's rules (``domain.audits``): each fact judged on its own, the verdict, and the
report as Markdown; plus the audit request's message contract (``services.audits``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from mail_pipeline.domain.audits import (
    STUCK_AFTER,
    Area,
    AuditReport,
    AuditStatus,
    CampaignFacts,
    Finding,
    IntegrationCheck,
    Outcome,
    PrintingFacts,
    RecipientFacts,
    SegmentCheck,
    Severity,
    StuckClaim,
    Verdict,
    billing_findings,
    campaign_findings,
    campaigns_findings,
    failure_findings,
    integration_findings,
    organization_findings,
    printing_findings,
    recipient_findings,
    segment_findings,
    verdict,
    worst_first,
)
from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    IntegrationKind,
    OrganizationStatus,
)
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.services.audits import (
    MalformedAuditRequest,
    audit_request_message,
    parse_audit_request,
)

E, W, OK = Severity.ERROR, Severity.WARNING, Severity.OK
TODAY = date(2026, 11, 30)
CAMPAIGN = CampaignFacts(
    id=7,
    name="Spring Sale",
    mode=CampaignMode.AUTOMATED,
    status=CampaignStatus.ACTIVE,
    segment_id="SEG1",
)
SIZES = {"lob": frozenset({"4x6", "6x9"}), "stannp": frozenset({"A6", "4x6"})}


def _severities(findings: list[Finding]) -> list[Severity]:
    return [f.severity for f in findings]


# -- organization -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (OrganizationStatus.ACTIVE, []),
        (OrganizationStatus.CHURNED, [W]),
        (OrganizationStatus.DISABLED, [W]),
    ],
)
def test_an_inactive_organization_is_a_warning(
    status: OrganizationStatus, expected: list[Severity]
) -> None:
    assert _severities(organization_findings(status)) == expected


# -- integrations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "severity", "says"),
    [
        (Outcome.OK, OK, "Klaviyo: the credentials work (read the account A)."),
        (Outcome.AUTH_REFUSED, E, "Klaviyo refused the organization's credentials: read the"),
        (Outcome.NOT_FOUND, E, "Klaviyo does not know the organization's account"),
        (Outcome.UNAVAILABLE, W, "Klaviyo could not be reached"),
        (Outcome.REJECTED, E, "Klaviyo refused the check request"),
    ],
)
def test_each_integration_outcome_has_its_severity(
    outcome: Outcome, severity: Severity, says: str
) -> None:
    check = IntegrationCheck(
        IntegrationKind.KLAVIYO, outcome, "read the account A", "KLAVIYO_API_KEY"
    )
    (finding,) = integration_findings([check])
    assert finding.severity is severity and finding.area is Area.INTEGRATIONS
    assert finding.message.startswith(says)
    assert bool(finding.action) is (severity is not OK)
    if outcome is Outcome.AUTH_REFUSED:
        assert "'KLAVIYO_API_KEY'" in finding.action


def test_no_enabled_integration_is_a_warning() -> None:
    (finding,) = integration_findings([])
    assert finding.severity is W and "no enabled integration" in finding.message


def test_every_integration_is_reported() -> None:
    checks = [
        IntegrationCheck(IntegrationKind.KLAVIYO, Outcome.OK, "read"),
        IntegrationCheck(IntegrationKind.SHOPIFY, Outcome.AUTH_REFUSED, "Invalid token"),
    ]
    findings = integration_findings(checks)
    assert _severities(findings) == [OK, E]
    assert findings[1].message == "Shopify refused the organization's credentials: Invalid token"


# -- segments ---------------------------------------------------------------------------------


def _segment(outcome: Outcome, segment_id: str = "SEG1", detail: str = "") -> SegmentCheck:
    return SegmentCheck(7, "Spring Sale", segment_id, outcome, detail)


@pytest.mark.parametrize(
    ("outcome", "severity", "says"),
    [
        (Outcome.NOT_FOUND, E, "Segment SEG1 of campaign 'Spring Sale' (7) does not exist"),
        (Outcome.NO_CDP, E, "Campaign 'Spring Sale' (7) targets segment SEG1, but the"),
        (Outcome.AUTH_REFUSED, E, "Klaviyo refused to read segment SEG1"),
        (Outcome.UNAVAILABLE, W, "Segment SEG1 of campaign 'Spring Sale' (7) could not be"),
        (Outcome.REJECTED, E, "Klaviyo refused to look up segment SEG1"),
        (Outcome.NOT_CHECKED, W, "The segments of 1 campaign were not checked: why"),
        (Outcome.OK, OK, "Every live campaign's segment exists in Klaviyo (1 campaign checked)"),
    ],
)
def test_each_segment_outcome_has_its_severity(
    outcome: Outcome, severity: Severity, says: str
) -> None:
    (finding,) = segment_findings([_segment(outcome, detail="why")])
    assert finding.severity is severity and finding.area is Area.SEGMENTS
    assert finding.message.startswith(says), finding.message


def test_segments_not_checked_are_one_warning_and_a_missing_one_names_its_campaign() -> None:
    skipped = segment_findings(
        [_segment(Outcome.NOT_CHECKED, f"S{n}", "Klaviyo refused") for n in range(3)]
    )
    assert len(skipped) == 1 and skipped[0].message.startswith(
        "The segments of 3 campaigns were not"
    )
    mixed = segment_findings([_segment(Outcome.OK, "A"), _segment(Outcome.NOT_FOUND, "B")])
    assert _severities(mixed) == [E], "no all-clear when one segment is missing"
    assert segment_findings([])[0].message == "No live campaign targets a segment."


# -- campaigns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected", "says"),
    [
        ({}, [], ""),
        ({"has_design": False}, [E], "has no design"),
        (
            {"design_problems": ("headline is missing", "size 'A4' is not one of 4x6, A6")},
            [E],
            "cannot be rendered: headline is missing; size 'A4' is not one of 4x6, A6.",
        ),
        ({"segment_id": None}, [E], "Automated campaign 'Spring Sale' (7) has no segment"),
        ({"segment_id": None, "mode": CampaignMode.ONE_OFF}, [], ""),
        ({"daily_send_cap": 0}, [E], "The daily send cap of campaign 'Spring Sale' (7) is 0"),
        ({"total_send_cap": -5}, [E], "The total send cap"),
        ({"daily_send_cap": 500, "total_send_cap": 100}, [W], "never applies"),
        ({"daily_send_cap": 100, "total_send_cap": 100}, [], ""),
        ({"daily_send_cap": 50, "total_send_cap": 1000}, [], ""),
        (
            {"start_date": date(2026, 12, 5), "mail_date": date(2026, 12, 1)},
            [E],
            "starts on 2026-12-05, after its mail date 2026-12-01",
        ),
        ({"start_date": date(2026, 12, 1), "mail_date": date(2026, 12, 1)}, [], ""),
        (
            {"mode": CampaignMode.ONE_OFF, "mail_date": date(2026, 11, 29)},
            [W],
            "still Active although its mail date 2026-11-29 has passed",
        ),
        ({"mode": CampaignMode.ONE_OFF, "mail_date": TODAY}, [], ""),
        (
            {
                "mode": CampaignMode.ONE_OFF,
                "status": CampaignStatus.PAUSED,
                "mail_date": date(2026, 11, 1),
            },
            [],
            "",
        ),
    ],
)
def test_each_campaign_rule(
    changes: dict[str, object], expected: list[Severity], says: str
) -> None:
    findings = campaign_findings(replace(CAMPAIGN, **changes), TODAY)  # type: ignore[arg-type]
    assert _severities(findings) == expected, findings
    if says:
        assert says in findings[0].message
        assert all(f.area is Area.CAMPAIGNS and f.action for f in findings)


def test_complete_campaigns_are_summed_up_in_one_ok() -> None:
    (finding,) = campaigns_findings([CAMPAIGN, replace(CAMPAIGN, id=8)], TODAY)
    assert finding.severity is OK and "(2 campaigns checked)" in finding.message
    assert campaigns_findings([], TODAY)[0].message == "The organization has no live campaign."


# -- printing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("printing", "campaigns", "expected", "says"),
    [
        (PrintingFacts("US", sizes=SIZES), [CAMPAIGN], [OK], "printed by Lob"),
        (
            PrintingFacts("gb", sizes=SIZES),
            [CAMPAIGN],
            [OK],
            "Postcards to GB are printed by Stannp",
        ),
        (PrintingFacts("FR", sizes=SIZES), [], [E], "No printer mails to FR"),
        (PrintingFacts("", sizes=SIZES), [], [E], "No printer mails to an unknown country"),
        (
            PrintingFacts("US", available=frozenset({"stannp"}), sizes=SIZES),
            [],
            [E],
            "Lob mails postcards to US, but it is not configured",
        ),
        (
            PrintingFacts("US", "intelliprint", available=frozenset({"intelliprint"})),
            [],
            [OK],
            "printed by IntelliPrint",
        ),
        (
            PrintingFacts("US", "stannp", sizes=SIZES),
            [],
            [W],
            "The preferred printer Stannp does not mail to US here; Lob is used instead",
        ),
        (
            PrintingFacts("US", sizes=SIZES),
            [replace(CAMPAIGN, size="A6")],
            [E],
            "Lob does not print A6 postcards, the size of campaign 'Spring Sale' (7)",
        ),
        (
            PrintingFacts("US", sizes=SIZES),
            [replace(CAMPAIGN, size="A6", design_problems=("bad",))],
            [OK],
            "",
        ),
    ],
)
def test_printing_rules(
    printing: PrintingFacts,
    campaigns: list[CampaignFacts],
    expected: list[Severity],
    says: str,
) -> None:
    findings = printing_findings(printing, campaigns)
    assert _severities(findings) == expected, findings
    assert all(f.area is Area.PRINTING for f in findings)
    if says:
        assert says in findings[0].message


# -- recipients -------------------------------------------------------------------------------

SENDING = RecipientStatus.SENDING


@pytest.mark.parametrize(
    ("facts", "expected", "says"),
    [
        (RecipientFacts(), [OK], "The organization has no recipients yet."),
        (
            RecipientFacts(counts={"Sent": 10, "Pending": 3, "Error": 2}),
            [OK],
            "Recipients by state: Pending 3, Sent 10, Error 2.",
        ),
        (
            RecipientFacts(counts={"Error": 2}, errors_without_reason=2, error_examples=(4, 9)),
            [E, OK],
            "2 recipients in Error without a reason (e.g. 4, 9).",
        ),
        (
            RecipientFacts(
                counts={"Sending": 1},
                stuck=(StuckClaim(SENDING, 1, datetime(2026, 11, 30, 9, 5, tzinfo=UTC), (3,)),),
            ),
            [E, OK],
            "1 recipient stuck in Sending for more than 2 hours (the oldest since 2026-11-30 "
            "09:05 UTC) (e.g. 3).",
        ),
        (
            RecipientFacts(
                counts={"ProofingStaged": 2},
                stuck=(StuckClaim(RecipientStatus.PROOFING_STAGED, 2, None, (5, 6)),),
            ),
            [E, OK],
            "2 recipients stuck in ProofingStaged for more than 2 hours (without a claim time)",
        ),
    ],
)
def test_recipient_rules(facts: RecipientFacts, expected: list[Severity], says: str) -> None:
    findings = recipient_findings(facts)
    assert _severities(findings) == expected
    assert says in findings[0].message, findings[0].message


def test_a_stuck_sending_recipient_must_not_be_edited_by_hand() -> None:
    stuck = RecipientFacts(stuck=(StuckClaim(SENDING, 1, None, (3,)),))
    assert "Do not edit them by hand" in recipient_findings(stuck)[0].action
    assert STUCK_AFTER.total_seconds() == 2 * 3600


# -- billing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer", "severity", "says"),
    [
        (None, E, "no Stripe customer"),
        ("  ", E, "no Stripe customer"),
        ("acct_123", E, "'acct_123' is not a Stripe customer id"),
        ("cus_123", OK, "Stripe customer cus_123 is set"),
    ],
)
def test_billing_rules(customer: str | None, severity: Severity, says: str) -> None:
    (finding,) = billing_findings(customer)
    assert finding.severity is severity and says in finding.message


# -- verdict and report -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severities", "expected"),
    [
        ([], Verdict.PASSED),
        ([OK, OK], Verdict.PASSED),
        ([OK, W], Verdict.HAS_WARNINGS),
        ([W, E, OK], Verdict.HAS_ERRORS),
    ],
)
def test_the_verdict_is_the_worst_finding(severities: list[Severity], expected: Verdict) -> None:
    assert verdict([Finding(s, Area.BILLING, "x") for s in severities]) is expected


def test_findings_round_trip_through_json_and_sort_worst_first() -> None:
    findings = [
        Finding(OK, Area.BILLING, "fine"),
        Finding(E, Area.SEGMENTS, "gone", "fix it"),
        Finding(W, Area.INTEGRATIONS, "slow", "later"),
    ]
    stored = json.loads(json.dumps([f.to_json() for f in findings]))
    assert [Finding.from_json(doc) for doc in stored] == findings
    assert _severities(worst_first(findings)) == [E, W, OK]


def test_the_markdown_report_is_one_table_row_per_finding_worst_first() -> None:
    report = AuditReport(
        12,
        "Juniper | Trail",
        (
            Finding(OK, Area.BILLING, "Stripe customer cus_1 is set."),
            Finding(E, Area.SEGMENTS, "Segment A | B\nis gone.", "Pick one."),
        ),
        requested_by="ana@brand.com",
        audited_at=datetime(2026, 11, 30, 14, 2, tzinfo=UTC),
        audit_id=3,
    )
    lines = report.markdown().splitlines()
    assert lines[0] == "### Audit of Juniper \\| Trail (organization 12), audit 3: has errors"
    assert lines[2] == (
        "Requested by ana@brand.com; audited 2026-11-30 14:02 UTC; 1 error, 0 warnings, 1 ok."
    )
    assert lines[4:] == [
        "| severity | area | finding | what to do |",
        "|---|---|---|---|",
        "| error | segments | Segment A \\| B is gone. | Pick one. |",
        "| ok | billing | Stripe customer cus_1 is set. |  |",
    ]
    failed = replace(report, status=AuditStatus.FAILED, findings=tuple(failure_findings("boom")))
    assert failed.markdown().splitlines()[0].endswith(": failed")


# -- the audit request --------------------------------------------------------------------------


def test_a_request_message_reads_back() -> None:
    body = audit_request_message(12, "  ana@brand.com ")
    assert json.loads(body) == {"organization_id": 12, "requested_by": "ana@brand.com"}
    request = parse_audit_request(body)
    assert (request.organization_id, request.requested_by) == (12, "ana@brand.com")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "the audit request is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"organization_id": 1, "requested_by": "a", "org": 2}', "unknown keys 'org'"),
        ('{"requested_by": "a"}', "positive integer organization_id, not None"),
        ('{"organization_id": "12", "requested_by": "a"}', "not '12'"),
        ('{"organization_id": true, "requested_by": "a"}', "not True"),
        ('{"organization_id": 0, "requested_by": "a"}', "not 0"),
        ('{"organization_id": 1.5, "requested_by": "a"}', "not 1.5"),
        ('{"organization_id": 99999999999999999999, "requested_by": "a"}', "organization_id"),
        ('{"organization_id": 1}', "needs requested_by"),
        ('{"organization_id": 1, "requested_by": " "}', "needs requested_by"),
        ('{"organization_id": 1, "requested_by": 5}', "needs requested_by"),
        (json.dumps({"organization_id": 1, "requested_by": "a" * 201}), "201 characters"),
        (json.dumps({"organization_id": 1, "requested_by": "a\nb"}), "not one line of text"),
        (json.dumps({"organization_id": 1, "requested_by": "a\x00b"}), "not one line of text"),
    ],
)
def test_a_malformed_request_says_what_is_wrong(body: str, says: str) -> None:
    with pytest.raises(MalformedAuditRequest) as refused:
        parse_audit_request(body)
    assert says in str(refused.value)
