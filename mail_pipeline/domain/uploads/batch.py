"""Judging an uploaded recipient list for a one_off campaign: which rows become recipients,
which are skipped, which are invalid, and whether the batch may be committed.

:func:`read_upload` reads the file (:mod:`~mail_pipeline.domain.uploads.files`), resolves its
columns (:mod:`~mail_pipeline.domain.uploads.columns`) and judges every row that is not blank,
in file order:

1. *rejected* when the row has values past the header's last column (an unquoted separator in
   a value shifts every column after it) or under a column without a header;
2. *rejected* with the reason of :func:`~mail_pipeline.domain.profiles.judge_profile` - the
   rules the CDP sync applies: every field fits its column, a name, an address valid for its
   country (a missing country is the organization's home country), a printer route and the
   printer's limits;
3. *rejected* without a full address (street, city and postal code): a CDP profile without
   one waits for address enrichment, an uploaded row is not enriched - the file must carry
   the address;
4. *duplicate* of an earlier row of the file with the same email key, then the same address
   key (the first valid occurrence is kept; invalid rows claim nothing, so a later valid row
   of the same person is kept);
5. *blocklisted* when its email or address key is on the organization's blocklist;
6. *already in campaign* when the campaign already holds its email or address key;
7. otherwise *accepted*, with its recipient values.

Steps 4-6 follow the order of the sync (:mod:`mail_pipeline.domain.sync`); they come after
the validity checks because a row's keys are its normal form, which only a valid row has.

The batch (:attr:`UploadVerdict.problem`) is committed or rejected as a whole. It is
rejected when the file is (:attr:`UploadVerdict.file_problem`), and when any row is
*rejected*: the uploader fixes the file and uploads it again, so nobody on the list is
silently left out. A caller may pass ``allow_invalid_rows=True`` (an operator's or a trusted
organization's explicit choice) to commit the accepted rows anyway; even then a batch in which
no row is valid is rejected. Skipped rows (duplicate, blocklisted, already in campaign) never
reject a batch: uploading the same file twice commits nothing the second time.

Profile ids (:func:`upload_profile_id`): ``upload:`` and 32 hex digits of the SHA-256 of the
campaign id and the person's key - the email key when the row has one, else its address key.
Within a campaign, accepted rows never share an email or address key (steps 4 and 6), so
their ids are unique; the same person uploaded again to the same campaign gets the same id
(the ``(campaign_id, external_profile_id)`` unique constraint backs the dedupe), and ids of
different campaigns cannot be linked. 39 characters, inside
:data:`~mail_pipeline.domain.fields.EXTERNAL_PROFILE_ID_MAX`.

Nothing here logs: rows carry their email for the uploader's report only.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mail_pipeline.domain.addresses import normalize_country
from mail_pipeline.domain.fields import (
    EXTERNAL_PROFILE_ID_MAX,
    SOURCE_MAX,
    InvalidField,
    check_text,
)
from mail_pipeline.domain.profiles import Destination, ProfileData, judge_profile
from mail_pipeline.domain.uploads.columns import Column, ColumnMap, resolve_columns, split_full_name
from mail_pipeline.domain.uploads.files import (
    MAX_ROWS,
    SEPARATOR_NAMES,
    FileRejected,
    count_lines,
    decode_upload,
    find_layout,
    read_records,
)

#: ``recipients.source`` of an uploaded recipient.
RECIPIENT_SOURCE = "upload"
PROFILE_ID_PREFIX = "upload:"
_PROFILE_ID_DIGITS = 32

NO_ADDRESS = (
    "no full address (street, city and postal code); an uploaded list is not sent to "
    "address enrichment"
)
#: The rejected lines a batch problem names.
_LINES_NAMED = 10
#: ``judge_profile`` echoes the id it is given; the row's id is known only once judged.
_UNJUDGED_ID = PROFILE_ID_PREFIX

assert len(RECIPIENT_SOURCE) <= SOURCE_MAX
assert len(PROFILE_ID_PREFIX) + _PROFILE_ID_DIGITS <= EXTERNAL_PROFILE_ID_MAX


class RowStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    BLOCKLISTED = "blocklisted"
    IN_CAMPAIGN = "already in campaign"
    REJECTED = "rejected"


#: Statuses of rows that are left out without rejecting the batch.
SKIPPED = frozenset({RowStatus.DUPLICATE, RowStatus.BLOCKLISTED, RowStatus.IN_CAMPAIGN})


@dataclass(frozen=True)
class UploadCampaign:
    """What the campaign and its organization add to judge an upload. The key sets hold
    normal forms (``email_key`` and ``address_key`` of the recipients and blocklist
    tables)."""

    campaign_id: int
    #: The organization's home country and printer preference.
    destination: Destination = field(default_factory=Destination)
    #: Keys of the people the campaign already holds (any status).
    email_keys: AbstractSet[str] = frozenset()
    address_keys: AbstractSet[str] = frozenset()
    #: Keys on the organization's (and the global) blocklist.
    blocked_emails: AbstractSet[str] = frozenset()
    blocked_addresses: AbstractSet[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """What became of one row of the file."""

    #: The line the row starts on (the header of a plain file is line 1).
    line: int
    status: RowStatus
    #: Why it was skipped or rejected (fields and problems, never values); ``None`` when
    #: accepted.
    reason: str | None
    #: The row's email when it is a valid field - for the uploader's report; never log it
    #: (``repr`` leaves it out).
    email: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AcceptedRow(RowOutcome):
    """A row that becomes a recipient: insert ``values`` (``judge_profile``'s, in normal
    form) with ``external_profile_id=profile_id`` and ``source=RECIPIENT_SOURCE``; it is
    ``Pending`` (it has a full, mailable address)."""

    profile_id: str
    #: The printer its route chose.
    printer: str
    #: ``repr`` leaves them out: they hold the person's email and address.
    values: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class UploadVerdict:
    """The judged batch: every row that is not blank, in one of three groups (each in file
    order), and why the file or the batch is refused, if it is."""

    accepted: tuple[AcceptedRow, ...] = ()
    skipped: tuple[RowOutcome, ...] = ()
    rejected: tuple[RowOutcome, ...] = ()
    #: Why the whole file was refused (nothing was judged), or ``None``.
    file_problem: str | None = None
    #: Whether the caller chose to commit the accepted rows despite rejected ones.
    allow_invalid_rows: bool = False
    #: What was read: the encoding and separator as a person calls them, the columns.
    encoding: str | None = None
    separator: str | None = None
    columns: ColumnMap | None = None
    #: Lines after the header with no value (ignored).
    blank_lines: int = 0

    @property
    def problem(self) -> str | None:
        """Why the batch must not be committed, or ``None`` (the rule is the module's)."""
        if self.file_problem is not None:
            return self.file_problem
        if not self.rejected:
            return None
        if not self.allow_invalid_rows:
            lines = ", ".join(str(row.line) for row in self.rejected[:_LINES_NAMED])
            more = "..." if len(self.rejected) > _LINES_NAMED else ""
            count = len(self.rejected)
            return (
                f"{count} row{'s' if count != 1 else ''} cannot be mailed (line"
                f"{'s' if count != 1 else ''} {lines}{more}); fix the file and upload it again"
            )
        if not self.accepted:
            return "no row of the file can be mailed"
        return None

    @property
    def committable(self) -> bool:
        return self.problem is None

    @property
    def rows(self) -> list[RowOutcome]:
        """Every row, in file order."""
        return list(
            heapq.merge(self.accepted, self.skipped, self.rejected, key=lambda row: row.line)
        )

    def counts(self) -> dict[RowStatus, int]:
        """Rows per status (every status, zeros included), in :class:`RowStatus` order."""
        found = Counter(row.status for row in (*self.skipped, *self.rejected))
        found[RowStatus.ACCEPTED] = len(self.accepted)
        return {status: found[status] for status in RowStatus}


def upload_profile_id(campaign_id: int, email_key: str | None, address_key: str | None) -> str:
    """The external profile id of an uploaded row (see the module); ``ValueError`` without a
    key."""
    if email_key:
        key = f"{campaign_id}\x1femail\x1f{email_key}"
    elif address_key:
        key = f"{campaign_id}\x1faddress\x1f{address_key}"
    else:
        raise ValueError("an uploaded row needs an email or address key for its profile id")
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return PROFILE_ID_PREFIX + digest[:_PROFILE_ID_DIGITS]


def read_upload(
    data: bytes, campaign: UploadCampaign, *, allow_invalid_rows: bool = False
) -> UploadVerdict:
    """Judge the uploaded file ``data`` for ``campaign`` (see the module for every rule).

    The verdict's :attr:`~UploadVerdict.problem` says whether the batch may be committed: not
    when the file is refused, nor when any row is rejected - unless ``allow_invalid_rows``,
    and then only when some row is accepted. Duplicates, blocklisted rows and people already
    in the campaign are skipped and never reject the batch.

    Pure and deterministic: the same bytes and campaign give the same verdict, so a sensor
    or a retried run may judge a file again. The whole file is read into memory (at most
    :data:`~mail_pipeline.domain.uploads.files.MAX_UPLOAD_BYTES`)."""
    encoding = separator = None
    try:
        decoded = decode_upload(data)
        encoding = decoded.encoding
        layout = find_layout(decoded.text)
        separator = SEPARATOR_NAMES.get(layout.separator, repr(layout.separator))
        records = read_records(layout)
        first = next(records, None)
        if first is None:
            raise FileRejected("the file has no header line")
        columns = resolve_columns(first[1])
        destination = campaign.destination
        if Column.COUNTRY not in columns.fields and not normalize_country(destination.home_country):
            raise FileRejected(
                "the file has no country column, and the organization has no home country "
                "to stand in for it; add a country column"
            )
        if count_lines(layout.body) - 1 > MAX_ROWS:
            _check_row_count(read_records(layout))
        judge = _RowJudge(campaign, columns)
        for line, cells in records:
            judge.judge(line, cells)
        if not (judge.accepted or judge.skipped or judge.rejected):
            raise FileRejected("the file has a header but no rows")
    except FileRejected as exc:
        return UploadVerdict(
            file_problem=str(exc),
            allow_invalid_rows=allow_invalid_rows,
            encoding=encoding,
            separator=separator,
        )
    return UploadVerdict(
        accepted=tuple(judge.accepted),
        skipped=tuple(judge.skipped),
        rejected=tuple(judge.rejected),
        allow_invalid_rows=allow_invalid_rows,
        encoding=encoding,
        separator=separator,
        columns=columns,
        blank_lines=judge.blank_lines,
    )


def _check_row_count(records: Iterator[tuple[int, list[str]]]) -> None:
    next(records)  # the header
    rows = 0
    for line, cells in records:
        if "".join(cells).strip():
            rows += 1
            if rows > MAX_ROWS:
                raise FileRejected(
                    f"the file has more than {MAX_ROWS:,} rows (line {line} is row "
                    f"{MAX_ROWS + 1:,}); split it into several files"
                )


class _RowJudge:
    """The per-row rules, with the keys the file's earlier rows claimed."""

    def __init__(self, campaign: UploadCampaign, columns: ColumnMap) -> None:
        self.campaign = campaign
        self.width = columns.width
        self.unnamed = columns.unnamed
        # A missing column reads the "" appended after the padded cells (index -1).
        self.index = {column: columns.fields.get(column, -1) for column in Column}
        self.properties = columns.properties
        self.accepted: list[AcceptedRow] = []
        self.skipped: list[RowOutcome] = []
        self.rejected: list[RowOutcome] = []
        self.blank_lines = 0
        self.emails: dict[str, int] = {}
        self.addresses: dict[str, int] = {}

    def judge(self, line: int, cells: list[str]) -> None:
        if not "".join(cells).strip():
            self.blank_lines += 1
            return
        problem = self._shape_problem(cells)
        if problem is not None:
            self.rejected.append(RowOutcome(line, RowStatus.REJECTED, problem, None))
            return
        width = self.width
        if len(cells) < width:
            cells.extend([""] * (width - len(cells)))
        cells.append("")
        i = self.index
        first = cells[i[Column.FIRST_NAME]] or None
        last = cells[i[Column.LAST_NAME]] or None
        full = cells[i[Column.FULL_NAME]]
        if full and not (first and first.strip()) and not (last and last.strip()):
            try:
                check_text("full name", full, len(full))
            except InvalidField as exc:
                self.rejected.append(RowOutcome(line, RowStatus.REJECTED, str(exc), None))
                return
            first, last = split_full_name(full)
        properties = {
            header: value for index, header in self.properties if (value := cells[index].strip())
        }
        judged = judge_profile(
            ProfileData(
                _UNJUDGED_ID,
                email=cells[i[Column.EMAIL]] or None,
                first_name=first,
                last_name=last,
                address1=cells[i[Column.ADDRESS1]] or None,
                address2=cells[i[Column.ADDRESS2]] or None,
                city=cells[i[Column.CITY]] or None,
                region=cells[i[Column.REGION]] or None,
                postal_code=cells[i[Column.POSTAL_CODE]] or None,
                country=cells[i[Column.COUNTRY]] or None,
                properties=properties,
            ),
            self.campaign.destination,
        )
        values = judged.values
        email = values["email"]
        if judged.problem is not None or not judged.has_address:
            reason = judged.problem or NO_ADDRESS
            self.rejected.append(RowOutcome(line, RowStatus.REJECTED, reason, email))
            return
        printer = judged.printer
        assert printer is not None  # judge_profile routes every address it finds mailable
        email_key: str | None = values["email_key"]
        address_key: str | None = values["address_key"]
        skip = self._skip(email_key, address_key)
        if email_key:
            self.emails.setdefault(email_key, line)
        if address_key:
            self.addresses.setdefault(address_key, line)
        if skip is not None:
            self.skipped.append(RowOutcome(line, skip[0], skip[1], email))
            return
        profile_id = upload_profile_id(self.campaign.campaign_id, email_key, address_key)
        self.accepted.append(
            AcceptedRow(line, RowStatus.ACCEPTED, None, email, profile_id, printer, values)
        )

    def _shape_problem(self, cells: list[str]) -> str | None:
        width = self.width
        if len(cells) > width and "".join(cells[width:]).strip():
            last = max(n for n, cell in enumerate(cells) if cell.strip()) + 1
            return (
                f"the row has a value in column {last}, past the header's {width} columns "
                "(a separator inside a value that is not in double quotes?)"
            )
        for index in self.unnamed:
            if index < len(cells) and cells[index].strip():
                return f"the row has a value in column {index + 1}, which has no header"
        return None

    def _skip(self, email_key: str | None, address_key: str | None) -> tuple[RowStatus, str] | None:
        campaign = self.campaign
        if email_key and email_key in self.emails:
            return RowStatus.DUPLICATE, f"duplicate of line {self.emails[email_key]} (same email)"
        if address_key and address_key in self.addresses:
            line = self.addresses[address_key]
            return RowStatus.DUPLICATE, f"duplicate of line {line} (same address)"
        if email_key and email_key in campaign.blocked_emails:
            return RowStatus.BLOCKLISTED, "email address is on the blocklist"
        if address_key and address_key in campaign.blocked_addresses:
            return RowStatus.BLOCKLISTED, "postal address is on the blocklist"
        if email_key and email_key in campaign.email_keys:
            return RowStatus.IN_CAMPAIGN, "already in the campaign (same email)"
        if address_key and address_key in campaign.address_keys:
            return RowStatus.IN_CAMPAIGN, "already in the campaign (same address)"
        return None
