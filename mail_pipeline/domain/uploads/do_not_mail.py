"""An uploaded do-not-mail list (CSV): the people an organization must never mail.

The file is read like a recipient list (:mod:`.files`: encodings, separators, quoted fields,
line numbers; :mod:`.columns`: the same header spellings), but only the columns that name a
person matter: an email, and a postal address (address line 1, postal code, and country;
line 2 if there is one; the organization's home country stands in for a missing one). A
row gives an email entry, an address entry, or both (as their matching keys,
``domain.addresses.email_key`` and ``address_key``); a row with neither is rejected with
the reason. As for recipient lists, any rejected row rejects the batch (the uploader fixes
the file); rows repeating an earlier row's entries are skipped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from mail_pipeline.domain.addresses import address_key, email_key, normalize_country
from mail_pipeline.domain.uploads.batch import RowOutcome, RowStatus
from mail_pipeline.domain.uploads.columns import Column, column_of
from mail_pipeline.domain.uploads.files import (
    FileRejected,
    decode_upload,
    find_layout,
    read_records,
)

EMAIL = "email"
ADDRESS = "address"


@dataclass(frozen=True)
class DoNotMailEntry:
    line: int
    kind: str
    key: str


@dataclass(frozen=True)
class DoNotMailVerdict:
    entries: tuple[DoNotMailEntry, ...] = ()
    skipped: tuple[RowOutcome, ...] = ()
    rejected: tuple[RowOutcome, ...] = ()
    file_problem: str | None = None

    @property
    def problem(self) -> str | None:
        if self.file_problem:
            return self.file_problem
        if self.rejected:
            return f"{len(self.rejected)} rows name nobody (no usable email or address)"
        if not self.entries:
            return "the file names nobody"
        return None

    @property
    def committable(self) -> bool:
        return self.problem is None


def read_do_not_mail(data: bytes, home_country: str | None) -> DoNotMailVerdict:
    """Judge a do-not-mail file (see the module). Pure and deterministic."""
    try:
        layout = find_layout(decode_upload(data).text)
        records = read_records(layout)
        header = next(records, None)
        if header is None:
            raise FileRejected("the file has no header line")
        columns: dict[Column, int] = {}
        for index, cell in enumerate(header[1]):
            column = column_of(cell.strip().removeprefix("\ufeff"))
            if column is not None and column not in columns:
                columns[column] = index
        if Column.EMAIL not in columns and not {Column.ADDRESS1, Column.POSTAL_CODE} <= set(
            columns
        ):
            raise FileRejected(
                "the file has no email column and no address (address line 1 and postal "
                "code) columns: nobody could be matched"
            )
        entries: list[DoNotMailEntry] = []
        skipped: list[RowOutcome] = []
        rejected: list[RowOutcome] = []
        seen: set[tuple[str, str]] = set()
        for line, cells in records:
            if not "".join(cells).strip():
                continue

            def value_of(column: Column, cells: list[str] = cells) -> str | None:
                index = columns.get(column)
                value = cells[index].strip() if index is not None and index < len(cells) else ""
                return value or None

            keys: list[tuple[str, str]] = []
            email = email_key(value_of(Column.EMAIL))
            if email:
                keys.append((EMAIL, email))
            country = normalize_country(value_of(Column.COUNTRY)) or home_country
            address = address_key(
                value_of(Column.ADDRESS1),
                value_of(Column.POSTAL_CODE),
                country,
                value_of(Column.ADDRESS2),
            )
            if address:
                keys.append((ADDRESS, address))
            if not keys:
                rejected.append(
                    RowOutcome(
                        line,
                        RowStatus.REJECTED,
                        "no usable email (one with an @) and no address (line 1 and postal code)",
                        None,
                    )
                )
                continue
            new = [k for k in keys if k not in seen]
            if not new:
                skipped.append(
                    RowOutcome(line, RowStatus.DUPLICATE, "repeats an earlier row", None)
                )
                continue
            seen.update(new)
            entries.extend(DoNotMailEntry(line, kind, key) for kind, key in new)
    except FileRejected as exc:
        return DoNotMailVerdict(file_problem=str(exc))
    return DoNotMailVerdict(tuple(entries), tuple(skipped), tuple(rejected))


def do_not_mail_report(verdict: DoNotMailVerdict) -> tuple[str, str]:
    """The per-row report (CSV: line, status, reason) and a Markdown summary."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("line", "status", "reason"))
    if verdict.file_problem:
        writer.writerow(("", "file rejected", verdict.file_problem))
    lines = sorted({e.line for e in verdict.entries})
    rows = [(line, "accepted", "") for line in lines] + [
        (r.line, r.status.value, r.reason or "") for r in (*verdict.skipped, *verdict.rejected)
    ]
    writer.writerows(sorted(rows))
    problem = verdict.problem
    summary = [f"**Rejected**: {problem}" if problem else "**Committable**"]
    summary.append(
        f"{len(verdict.entries)} entries from {len(lines)} rows; {len(verdict.skipped)} "
        f"skipped, {len(verdict.rejected)} rejected"
    )
    summary += [f"- line {r.line}: {r.reason}" for r in verdict.rejected[:20]]
    return out.getvalue(), "\n\n".join(summary[:2]) + (
        "\n" + "\n".join(summary[2:]) if summary[2:] else ""
    )
