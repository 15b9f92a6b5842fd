"""Run-failure alerts: which failures become which notifications, and what a message may say.

The run-failure sensor records each failed run as a :class:`Failure` and calls
:func:`plan_notifications` once per tick with the run ids it already notified. The rules:

- **once per run**: a run id that was already notified, or that appears twice in one tick,
  never produces a second message. Every :class:`Notification` names the run ids it covers;
  the caller marks them notified only after the send succeeded, so a failed send is retried
  on a later tick and a successful one is never repeated.
- **digest**: more than :data:`DIGEST_THRESHOLD` new failures in one tick become a single
  digest grouped by stage and organization (a count per group, the first
  :data:`DIGEST_SAMPLES` runs with their errors, "and N more") instead of one message each.
  At most :data:`DIGEST_GROUPS` groups are listed, so a digest stays readable and within
  Slack's block limits however many runs fail.
- **no secrets, no addresses**: a failure's error is reduced to one line (the first non-blank
  line; for a Python traceback, its last line, the exception), redacted by :func:`redact` and
  cut to :data:`ERROR_SUMMARY_LIMIT` characters. Rendered subjects and bodies are redacted
  once more, so an organization name or job name cannot carry an address either.

A run link (``{ui_base_url}/runs/{run_id}``) is added when the Dagster UI's base URL is known.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

#: More new failures than this in one tick are sent as one digest.
DIGEST_THRESHOLD = 3
#: Runs listed (id, job, error) for each stage/organization group of a digest.
DIGEST_SAMPLES = 3
#: Groups listed in a digest; the rest are counted in one line.
DIGEST_GROUPS = 10
#: Characters of a failure's one-line error summary (after redaction), the ellipsis included.
ERROR_SUMMARY_LIMIT = 300
SUBJECT_PREFIX = "[mail_pipeline]"

EMAIL_PLACEHOLDER = "[email]"
SECRET_PLACEHOLDER = "[redacted]"

_SECRET_NAMES = r"[\w-]*(?:key|token|secret|password|passwd|pwd|signature|credentials?)"
#: ``(pattern, replacement)``, applied in order. Every replacement is left alone by every
#: pattern, so redacting twice gives what redacting once gave.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack incoming webhook URLs are credentials in themselves.
    (
        re.compile(r"(https?://hooks\.slack(?:-gov)?\.com/)[^\s\"'<>|]+", re.IGNORECASE),
        rf"\1{SECRET_PLACEHOLDER}",
    ),
    # user:password@ in a URL (before the address rule, which would keep the password).
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/:@\"'<>]+:[^\s/@\"'<>]+@", re.IGNORECASE),
        rf"\1{SECRET_PLACEHOLDER}@",
    ),
    # Authorization header values: any bearer token, and basic credentials (base64: a digit,
    # "+", "/", "=" or a capital after a small letter, which "Basic authentication" has not).
    (
        re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
        rf"\1{SECRET_PLACEHOLDER}",
    ),
    (
        re.compile(r"\b((?i:basic)\s+)(?=[A-Za-z0-9+/]*(?:[0-9+/=]|[a-z][A-Z]))[A-Za-z0-9+/]+=*"),
        rf"\1{SECRET_PLACEHOLDER}",
    ),
    # Vendor keys by their prefixes: Stripe, Klaviyo private keys, Shopify, webhook secrets,
    # Slack tokens.
    (
        re.compile(
            r"\b(?:(?:sk|rk|pk)_(?:live|test)_\w+|pk_[A-Za-z0-9]{16,}|shp(?:at|ss|ca|pa)_\w+"
            r"|whsec_\w+|xox[abposr]-[\w-]+)"
        ),
        SECRET_PLACEHOLDER,
    ),
    # key=value, api_key=..., password=... (query strings, log lines).
    (
        re.compile(rf"\b({_SECRET_NAMES})=[^\s&\"',;]+", re.IGNORECASE),
        rf"\1={SECRET_PLACEHOLDER}",
    ),
    # "api_key": "value" (JSON bodies quoted in an error).
    (
        re.compile(rf"([\"']{_SECRET_NAMES}[\"']\s*:\s*)[\"'][^\"']*[\"']", re.IGNORECASE),
        rf'\1"{SECRET_PLACEHOLDER}"',
    ),
    # Email addresses.
    (
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        EMAIL_PLACEHOLDER,
    ),
)


def redact(text: str) -> str:
    """``text`` without email addresses, credentials and anything that looks like one."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def summarize_error(error: str, limit: int = ERROR_SUMMARY_LIMIT) -> str:
    """One redacted line of at most ``limit`` characters that says what went wrong.

    The first non-blank line, or for a Python traceback its last line (the exception);
    whitespace runs become one space. Redaction comes before the cut, so a secret is never
    shortened into something the patterns no longer recognise.
    """
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "(no error message)"
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    line = redact(" ".join(line.split()))
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Failure:
    """One failed run, as the run-failure sensor saw it.

    ``error`` may be given raw: it is stored as its :func:`summarize_error` summary, so a
    ``Failure`` never holds a second line, an address or a credential.
    """

    run_id: str
    job: str
    #: The run's ``mail_pipeline/stage`` tag (``sync``, ``proofing``, ``mailing``, ...).
    stage: str | None
    organization_id: int | None
    organization_name: str | None
    error: str
    failed_at: datetime

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ValueError("a failure needs the run id")
        if self.failed_at.tzinfo is None:
            raise ValueError("a failure's failed_at must be timezone-aware")
        object.__setattr__(self, "error", summarize_error(self.error))

    @property
    def stage_label(self) -> str:
        return self.stage or "no stage"

    @property
    def organization_label(self) -> str:
        if self.organization_id is None:
            return self.organization_name or "no organization"
        if self.organization_name:
            return f"{self.organization_name} (org {self.organization_id})"
        return f"org {self.organization_id}"


@dataclass(frozen=True)
class Notification:
    """A message to people: the same facts as plain text and as Slack mrkdwn.

    ``run_ids`` are the runs this message reports; mark them notified once it was sent.
    """

    subject: str
    body: str
    mrkdwn: str
    run_ids: tuple[str, ...]
    digest: bool = False

    def __post_init__(self) -> None:
        if not self.run_ids:
            raise ValueError("a notification reports at least one run")
        if "\n" in self.subject or "\r" in self.subject:
            raise ValueError("a notification subject is one line")


def run_url(ui_base_url: str | None, run_id: str) -> str | None:
    """The run's page in the Dagster UI, or ``None`` without a base URL."""
    if not ui_base_url:
        return None
    return f"{ui_base_url.rstrip('/')}/runs/{quote(run_id, safe='')}"


def plan_notifications(
    failures: Iterable[Failure],
    already_notified: Collection[str] = (),
    *,
    ui_base_url: str | None = None,
    digest_threshold: int = DIGEST_THRESHOLD,
) -> list[Notification]:
    """The notifications for the failures seen in one tick: one per new run, or one digest.

    Failures of runs in ``already_notified`` are dropped, and a run seen twice counts once
    (its earliest failure). Up to ``digest_threshold`` new runs get a message each, oldest
    first; more get one digest covering them all. No new runs, no notifications.
    """
    new: dict[str, Failure] = {}
    for failure in sorted(failures, key=lambda f: (f.failed_at, f.run_id)):
        if failure.run_id not in already_notified and failure.run_id not in new:
            new[failure.run_id] = failure
    fresh = list(new.values())
    if not fresh:
        return []
    if len(fresh) > digest_threshold:
        return [_digest(fresh, ui_base_url)]
    return [_single(failure, ui_base_url) for failure in fresh]


# -- rendering ----------------------------------------------------------------------------------


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mrkdwn_escape(text: str) -> str:
    """Slack's control characters; everything else is shown as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn_code(text: str) -> str:
    return "`" + _mrkdwn_escape(text).replace("`", "'") + "`"


def _finish(
    subject: str, body: list[str], mrkdwn: list[str], run_ids: Iterable[str], digest: bool
) -> Notification:
    return Notification(
        subject=redact(subject),
        body=redact("\n".join(body)),
        mrkdwn=redact("\n".join(mrkdwn)),
        run_ids=tuple(run_ids),
        digest=digest,
    )


def _single(failure: Failure, ui_base_url: str | None) -> Notification:
    url = run_url(ui_base_url, failure.run_id)
    subject = (
        f"{SUBJECT_PREFIX} Run failed: {failure.job} "
        f"({failure.stage_label}, {failure.organization_label})"
    )
    body = [
        f"Run {failure.run_id} failed.",
        "",
        f"Job: {failure.job}",
        f"Stage: {failure.stage_label}",
        f"Organization: {failure.organization_label}",
        f"Failed at: {_when(failure.failed_at)}",
        f"Error: {failure.error}",
    ]
    mrkdwn = [
        f":rotating_light: *Run failed:* {_mrkdwn_code(failure.job)}",
        f"*Stage:* {_mrkdwn_escape(failure.stage_label)}"
        f"    *Organization:* {_mrkdwn_escape(failure.organization_label)}",
        f"*Failed at:* {_when(failure.failed_at)}",
        f"*Error:* {_mrkdwn_code(failure.error)}",
    ]
    if url:
        body.append(f"Run: {url}")
        mrkdwn.append(f"<{url}|Open run {_mrkdwn_escape(failure.run_id)}>")
    else:
        mrkdwn.append(f"*Run:* {_mrkdwn_code(failure.run_id)}")
    return _finish(subject, body, mrkdwn, [failure.run_id], digest=False)


def _digest(failures: list[Failure], ui_base_url: str | None) -> Notification:
    groups: dict[tuple[str, str], list[Failure]] = {}
    for failure in failures:
        groups.setdefault((failure.stage_label, failure.organization_label), []).append(failure)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    per_stage = Counter(failure.stage_label for failure in failures)
    stages = ", ".join(f"{stage} {count}" for stage, count in sorted(per_stage.items()))
    subject = f"{SUBJECT_PREFIX} {len(failures)} runs failed ({stages})"
    first, last = failures[0].failed_at, failures[-1].failed_at
    span = _when(first) if first == last else f"{_when(first)} and {_when(last)}"

    body = [f"{len(failures)} runs failed between {span}.", ""]
    mrkdwn = [f":rotating_light: *{len(failures)} runs failed* between {span}"]
    for (stage, organization), members in ordered[:DIGEST_GROUPS]:
        heading = f"{stage}, {organization}: {len(members)} failed"
        body.append(heading)
        mrkdwn += [
            "",
            f"*{_mrkdwn_escape(stage)}, {_mrkdwn_escape(organization)}*: {len(members)} failed",
        ]
        for failure in members[:DIGEST_SAMPLES]:
            url = run_url(ui_base_url, failure.run_id)
            body.append(
                f"  - {failure.run_id} ({failure.job}): {failure.error}"
                + (f"\n    {url}" if url else "")
            )
            run = (
                f"<{url}|{_mrkdwn_escape(failure.run_id)}>" if url else _mrkdwn_code(failure.run_id)
            )
            mrkdwn.append(f"• {run} ({_mrkdwn_escape(failure.job)}): {_mrkdwn_code(failure.error)}")
        if len(members) > DIGEST_SAMPLES:
            more = f"and {len(members) - DIGEST_SAMPLES} more"
            body.append(f"  - {more}")
            mrkdwn.append(f"• _{more}_")
        body.append("")
    hidden = ordered[DIGEST_GROUPS:]
    if hidden:
        runs = sum(len(members) for _, members in hidden)
        line = f"and {len(hidden)} more groups ({runs} runs)"
        body.append(line)
        mrkdwn += ["", f"_{line}_"]
    return _finish(subject, body, mrkdwn, (f.run_id for f in failures), digest=True)
