"""What a person reads about a judged upload: the per-row report for the uploader (CSV) and
a short summary for the run's metadata (Markdown).

The CSV report (:func:`report_csv`) has one row per row of the file, in file order: ``line``
(where the row starts in the uploaded file), ``status``, ``reason`` and ``email``. It goes
back to the uploader, who owns the data, so the email is shown unless ``mask_emails``; a
refused file is one row with an empty line and the status ``file rejected``. A cell that a
spreadsheet would run as a formula (starting ``=``, ``+``, ``-``, ``@``, tab or carriage
return) is prefixed with an apostrophe. Write the text as UTF-8 with a byte-order mark
(``utf-8-sig``) so Excel opens it in the right encoding.

The Markdown summary (:func:`report_markdown`) is for the platform's engineers (Dagster run
metadata): the verdict, the counts per status and the first problems - line, status and
reason only, never an email.
"""

from __future__ import annotations

import csv
import io

from mail_pipeline.domain.uploads.batch import RowOutcome, RowStatus, UploadVerdict

REPORT_COLUMNS = ("line", "status", "reason", "email")
FILE_REJECTED = "file rejected"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def mask_email(email: str | None) -> str | None:
    """``a***@example.com``: the first character of the local part and the domain."""
    if not email:
        return email
    local, at, domain = email.rpartition("@")
    if not at:
        return email[:1] + "***"
    return f"{local[:1]}***@{domain}"


def _cell(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def report_csv(verdict: UploadVerdict, *, mask_emails: bool = False) -> str:
    """The per-row report as CSV text (see the module)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_COLUMNS)
    if verdict.file_problem is not None:
        writer.writerow(("", FILE_REJECTED, _cell(verdict.file_problem), ""))
        return out.getvalue()
    for row in verdict.rows:
        email = mask_email(row.email) if mask_emails else row.email
        writer.writerow((row.line, row.status.value, _cell(row.reason), _cell(email)))
    return out.getvalue()


def _md(text: str) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def report_markdown(verdict: UploadVerdict, *, problems: int = 20) -> str:
    """A summary of the batch in Markdown: the verdict, the counts per status and the first
    ``problems`` rows that were not accepted (rejected rows first, then skipped ones)."""
    problem = verdict.problem
    if problem:
        lines = [f"**Rejected**: {_md(problem)}"]
    else:
        added = len(verdict.accepted)
        allowed = " (invalid rows left out, as the caller allowed)" if verdict.rejected else ""
        lines = [f"**Committable**: {added:,} row{'s' if added != 1 else ''} to add{allowed}"]
    read = [
        f"{name} {value}"
        for name, value in (("encoding", verdict.encoding), ("separator", verdict.separator))
        if value
    ]
    if read:
        lines.append(f"Read as {', '.join(read)}.")
    if verdict.file_problem is not None:
        return "\n\n".join(lines) + "\n"
    if verdict.columns is not None:
        lines.append(f"Columns: {_md(verdict.columns.describe())}.")
    counts = verdict.counts()
    table = ["| status | rows |", "|---|---|"]
    table += [f"| {status.value} | {counts[status]:,} |" for status in RowStatus]
    table.append(f"| blank lines (ignored) | {verdict.blank_lines:,} |")
    lines.append("\n".join(table))
    shown: list[RowOutcome] = [*verdict.rejected[:problems], *verdict.skipped][:problems]
    if shown:
        listed = ["| line | status | reason |", "|---|---|---|"]
        listed += [f"| {r.line} | {r.status.value} | {_md(r.reason or '')} |" for r in shown]
        total = len(verdict.rejected) + len(verdict.skipped)
        title = (
            f"First {len(shown)} of {total:,} rows not accepted:"
            if total > len(shown)
            else ("Rows not accepted:")
        )
        lines.append(title + "\n\n" + "\n".join(listed))
    return "\n\n".join(lines) + "\n"
