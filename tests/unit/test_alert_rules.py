"""Run-failure alert rules: once per run, the digest, what a message may say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mail_pipeline.domain.alerts import (
    DIGEST_GROUPS,
    DIGEST_SAMPLES,
    DIGEST_THRESHOLD,
    ERROR_SUMMARY_LIMIT,
    Failure,
    Notification,
    plan_notifications,
    redact,
    run_url,
    summarize_error,
)

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
UI = "https://dagster.example.com/"


def failure(
    n: int,
    *,
    stage: str | None = "sync",
    organization_id: int | None = 7,
    organization_name: str | None = "Acme",
    error: str = "ValueError: segment not found",
    job: str = "sync_organization_job",
) -> Failure:
    return Failure(
        run_id=f"run-{n:02d}",
        job=job,
        stage=stage,
        organization_id=organization_id,
        organization_name=organization_name,
        error=error,
        failed_at=T0 + timedelta(seconds=n),
    )


def covered(notifications: list[Notification]) -> list[str]:
    return [run_id for notification in notifications for run_id in notification.run_ids]


# -- once per run -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("already_notified", "expected"),
    [
        (set(), ["run-01", "run-02", "run-03"]),
        ({"run-02"}, ["run-01", "run-03"]),
        ({"run-01", "run-02", "run-03"}, []),
        ({"run-99"}, ["run-01", "run-02", "run-03"]),
    ],
)
def test_a_run_already_notified_is_never_notified_again(
    already_notified: set[str], expected: list[str]
) -> None:
    notifications = plan_notifications([failure(1), failure(2), failure(3)], already_notified)
    assert covered(notifications) == expected
    assert all(not notification.digest for notification in notifications)


def test_a_run_seen_twice_in_one_tick_gets_one_message() -> None:
    later = Failure(
        "run-01", "sync_organization_job", "sync", 7, "Acme", "second report", T0 + timedelta(1)
    )
    notifications = plan_notifications([later, failure(1), failure(1)])
    assert covered(notifications) == ["run-01"]
    assert "segment not found" in notifications[0].body  # the earliest report wins


def test_messages_come_oldest_first_one_run_each() -> None:
    notifications = plan_notifications([failure(3), failure(1), failure(2)])
    assert [notification.run_ids for notification in notifications] == [
        ("run-01",),
        ("run-02",),
        ("run-03",),
    ]


def test_replanning_with_what_was_sent_sends_nothing() -> None:
    failures = [failure(n) for n in range(1, 8)]
    first = plan_notifications(failures)
    assert plan_notifications(failures, set(covered(first))) == []


# -- the digest ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "messages", "digest"),
    [
        (0, 0, False),
        (1, 1, False),
        (DIGEST_THRESHOLD, DIGEST_THRESHOLD, False),
        (DIGEST_THRESHOLD + 1, 1, True),
        (40, 1, True),
    ],
)
def test_more_than_the_threshold_in_one_tick_is_one_digest(
    count: int, messages: int, digest: bool
) -> None:
    failures = [failure(n) for n in range(count)]
    notifications = plan_notifications(failures)
    assert len(notifications) == messages
    assert all(notification.digest is digest for notification in notifications)
    assert sorted(covered(notifications)) == sorted(f.run_id for f in failures)


def test_the_threshold_counts_only_runs_not_yet_notified() -> None:
    failures = [failure(n) for n in range(1, 6)]
    notifications = plan_notifications(failures, {"run-01", "run-02"})
    assert [n.digest for n in notifications] == [False, False, False]
    assert covered(notifications) == ["run-03", "run-04", "run-05"]


def test_a_custom_threshold() -> None:
    notifications = plan_notifications([failure(1), failure(2)], digest_threshold=1)
    assert len(notifications) == 1 and notifications[0].digest


def test_a_digest_groups_by_stage_and_organization_with_counts() -> None:
    failures = [failure(n, organization_id=7, organization_name="Acme") for n in range(5)] + [
        failure(
            10, stage="mailing", organization_id=9, organization_name="Birch", job="mailing_job"
        ),
        failure(11, stage="orders", organization_id=None, organization_name=None, job="orders_job"),
    ]
    [digest] = plan_notifications(failures)
    assert digest.subject == "[mail_pipeline] 7 runs failed (mailing 1, orders 1, sync 5)"
    assert "sync, Acme (org 7): 5 failed" in digest.body
    assert "mailing, Birch (org 9): 1 failed" in digest.body
    assert "orders, no organization: 1 failed" in digest.body
    # the biggest group first
    assert digest.body.index("sync, Acme") < digest.body.index("mailing, Birch")
    assert "*sync, Acme (org 7)*: 5 failed" in digest.mrkdwn


def test_a_digest_lists_the_first_runs_of_a_group_and_counts_the_rest() -> None:
    failures = [failure(n, error=f"KeyError: 'field_{n}'") for n in range(DIGEST_SAMPLES + 4)]
    [digest] = plan_notifications(failures)
    for n in range(DIGEST_SAMPLES):
        assert f"run-{n:02d} (sync_organization_job): KeyError: 'field_{n}'" in digest.body
    assert f"run-{DIGEST_SAMPLES:02d}" not in digest.body
    assert "and 4 more" in digest.body and "and 4 more" in digest.mrkdwn
    assert len(digest.run_ids) == DIGEST_SAMPLES + 4


def test_a_digest_lists_at_most_the_group_limit() -> None:
    failures = [failure(n, organization_id=n, organization_name=None) for n in range(25)]
    [digest] = plan_notifications(failures)
    assert digest.body.count(": 1 failed") == DIGEST_GROUPS
    assert f"and {25 - DIGEST_GROUPS} more groups ({25 - DIGEST_GROUPS} runs)" in digest.body
    assert len(digest.run_ids) == 25


def test_a_digest_states_the_time_span() -> None:
    [digest] = plan_notifications([failure(n) for n in range(5)])
    assert digest.body.startswith(
        "5 runs failed between 2026-03-02 09:30:00 UTC and 2026-03-02 09:30:04 UTC."
    )


# -- links --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://dagster.example.com", "https://dagster.example.com/runs/run-01"),
        ("https://dagster.example.com/", "https://dagster.example.com/runs/run-01"),
        ("http://localhost:3000/prefix/", "http://localhost:3000/prefix/runs/run-01"),
        (None, None),
        ("", None),
    ],
)
def test_run_url(base: str | None, expected: str | None) -> None:
    assert run_url(base, "run-01") == expected


def test_a_message_links_the_run_when_the_ui_is_known() -> None:
    [single] = plan_notifications([failure(1)], ui_base_url=UI)
    assert "Run: https://dagster.example.com/runs/run-01" in single.body
    assert "<https://dagster.example.com/runs/run-01|Open run run-01>" in single.mrkdwn
    [digest] = plan_notifications([failure(n) for n in range(5)], ui_base_url=UI)
    assert "https://dagster.example.com/runs/run-02" in digest.body
    assert "<https://dagster.example.com/runs/run-02|run-02>" in digest.mrkdwn


def test_without_the_ui_a_message_names_the_run_only() -> None:
    [single] = plan_notifications([failure(1)])
    assert "/runs/" not in single.body + single.mrkdwn
    assert "run-01" in single.body and "`run-01`" in single.mrkdwn


# -- what a single message says -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "subject", "organization"),
    [
        ({}, "Run failed: sync_organization_job (sync, Acme (org 7))", "Acme (org 7)"),
        ({"organization_name": None}, "(sync, org 7)", "org 7"),
        (
            {"organization_id": None, "organization_name": None, "stage": None},
            "(no stage, no organization)",
            "no organization",
        ),
    ],
)
def test_a_single_message_names_job_stage_and_organization(
    kwargs: dict[str, object], subject: str, organization: str
) -> None:
    [single] = plan_notifications([failure(1, **kwargs)])  # type: ignore[arg-type]
    assert single.subject.startswith("[mail_pipeline] ")
    assert subject in single.subject
    assert f"Organization: {organization}" in single.body
    assert "Failed at: 2026-03-02 09:30:01 UTC" in single.body
    assert "Error: ValueError: segment not found" in single.body


def test_failure_times_are_shown_in_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    moment = datetime(2026, 3, 2, 4, 0, tzinfo=eastern)
    [single] = plan_notifications([Failure("r", "j", "sync", 1, None, "boom", moment)])
    assert "2026-03-02 09:00:00 UTC" in single.body


def test_mrkdwn_escapes_slacks_control_characters_and_the_text_body_does_not() -> None:
    [single] = plan_notifications([failure(1, error="bad <tag> & `tick`")])
    assert "bad &lt;tag&gt; &amp; 'tick'" in single.mrkdwn
    assert "<tag>" not in single.mrkdwn
    assert "Error: bad <tag> & `tick`" in single.body


# -- errors: one line, cut, redacted ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "summary"),
    [
        ("ValueError: x\nmore detail\n", "ValueError: x"),
        ("\n\n   spaced    out   \n", "spaced out"),
        (
            "Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'id'\n",
            "KeyError: 'id'",
        ),
        ("", "(no error message)"),
        ("   \n", "(no error message)"),
    ],
)
def test_an_error_is_summarized_to_one_line(raw: str, summary: str) -> None:
    assert summarize_error(raw) == summary


def test_a_long_error_is_cut_to_the_limit_with_an_ellipsis() -> None:
    summary = summarize_error("E" * 1000)
    assert len(summary) == ERROR_SUMMARY_LIMIT
    assert summary.endswith("…")
    assert summarize_error("E" * ERROR_SUMMARY_LIMIT) == "E" * ERROR_SUMMARY_LIMIT


def test_redaction_comes_before_the_cut() -> None:
    secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    raw = "x" * (ERROR_SUMMARY_LIMIT - 10) + " " + secret
    summary = summarize_error(raw)
    assert "sk_live" not in summary and "4eC39" not in summary


def test_a_failure_stores_the_summary_not_the_raw_error() -> None:
    stored = failure(1, error="Stripe refused sk_live_abcdefghijklmnop\nfor ana@example.com")
    assert stored.error == "Stripe refused [redacted]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("refused for ana.lopez+vip@example.co.uk", "refused for [email]"),
        ("key sk_live_51HxYzAbC failed", "key [redacted] failed"),
        ("rk_test_abc123 and pk_live_XYZ", "[redacted] and [redacted]"),
        ("Klaviyo pk_0123456789abcdef0123 rejected", "Klaviyo [redacted] rejected"),
        ("Authorization: Bearer eyJhbGciOi.J9.sig", "Authorization: Bearer [redacted]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [redacted]"),
        ("Basic authentication failed", "Basic authentication failed"),
        ("GET /v1?key=abc123&page=2", "GET /v1?key=[redacted]&page=2"),
        ("api_key=abc123 access_token=zzz", "api_key=[redacted] access_token=[redacted]"),
        ('body {"password": "hunter2", "id": 4}', 'body {"password": "[redacted]", "id": 4}'),
        ("postgresql://app:s3cret@db.internal/app", "postgresql://[redacted]@db.internal/app"),
        (
            "posting to https://hooks.slack.com/services/T000/B000/XXXX failed",
            "posting to https://hooks.slack.com/[redacted] failed",
        ),
        ("whsec_abc123 shpat_0011 xoxb-1-2-abc", "[redacted] [redacted] [redacted]"),
        ("KeyError: 'organization_id'", "KeyError: 'organization_id'"),
        ("batch 12 of campaign 3 failed", "batch 12 of campaign 3 failed"),
    ],
)
def test_redaction(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # redacting twice changes nothing


def test_no_secret_or_address_reaches_any_part_of_a_message() -> None:
    secrets = ["ops@acme.com", "sk_live_abcdefghij123", "tok3n.value", "abc123secret"]
    error = "Stripe: sk_live_abcdefghij123 Bearer tok3n.value key=abc123secret ops@acme.com"
    singles = plan_notifications(
        [failure(1, error=error, organization_name="Acme <ops@acme.com>")], ui_base_url=UI
    )
    digests = plan_notifications(
        [failure(n, error=error, organization_name="ops@acme.com") for n in range(6)],
        ui_base_url=UI,
    )
    for notification in singles + digests:
        for part in (notification.subject, notification.body, notification.mrkdwn):
            for secret in secrets:
                assert secret not in part


# -- the records ----------------------------------------------------------------------------------


def test_a_failure_needs_an_aware_time_and_a_run_id() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Failure("r", "j", "sync", 1, None, "boom", datetime(2026, 3, 2, 9, 30))
    with pytest.raises(ValueError, match="run id"):
        Failure("", "j", "sync", 1, None, "boom", T0)


def test_a_notification_reports_runs_under_a_one_line_subject() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        Notification("s", "b", "m", ())
    with pytest.raises(ValueError, match="one line"):
        Notification("s\nBcc: someone", "b", "m", ("r",))


def test_records_are_frozen() -> None:
    stored = failure(1)
    with pytest.raises(AttributeError):
        stored.run_id = "other"  # type: ignore[misc]
