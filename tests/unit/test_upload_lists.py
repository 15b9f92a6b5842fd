"""Uploaded recipient lists: messy real-world files -> a verdict per row and per batch."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import String

from mail_pipeline.db.models import Recipient
from mail_pipeline.domain.fields import EXTERNAL_PROFILE_ID_MAX, profile_id_problem
from mail_pipeline.domain.profiles import Destination
from mail_pipeline.domain.uploads import (
    MAX_ROWS,
    NO_ADDRESS,
    RECIPIENT_SOURCE,
    SPELLINGS,
    Column,
    RowStatus,
    UploadCampaign,
    UploadVerdict,
    column_of,
    decode_upload,
    detect_separator,
    mask_email,
    read_upload,
    report_csv,
    report_markdown,
    split_full_name,
    upload_profile_id,
)
from mail_pipeline.domain.uploads import batch as upload_batch
from mail_pipeline.domain.uploads import files as upload_files
from mail_pipeline.domain.uploads.files import SEPARATORS, FileRejected

S = RowStatus
US = UploadCampaign(campaign_id=7, destination=Destination(home_country="US"))
HEADER = "email,first name,last name,address,city,state,zip"


def lines(*rows: str, end: str = "\r\n") -> str:
    return end.join(rows) + end


def outcome(verdict: UploadVerdict) -> list[tuple[int, RowStatus, str | None]]:
    assert verdict.file_problem is None, verdict.file_problem
    return [(row.line, row.status, row.reason) for row in verdict.rows]


def only_accepted_values(verdict: UploadVerdict) -> dict[str, Any]:
    assert outcome(verdict) and [r.status for r in verdict.rows] == [S.ACCEPTED]
    return dict(verdict.accepted[0].values)


def assert_reasons(verdict: UploadVerdict, expected: list[tuple[int, RowStatus, str]]) -> None:
    """Each row's line and status exactly, and a fragment of its reason ("" when none)."""
    got = outcome(verdict)
    assert [(line, status) for line, status, _ in got] == [(n, status) for n, status, _ in expected]
    for (line, _status, reason), (_, _, fragment) in zip(got, expected, strict=True):
        if fragment:
            assert reason is not None and fragment in reason, (line, reason)
        else:
            assert reason is None, (line, reason)


# -- encodings -------------------------------------------------------------------------------
def test_utf8_with_bom_and_semicolons_excel_europe() -> None:
    text = lines(
        "E-Mail;Customer No;First Name;Last Name;Street;City;State;ZIP;Country",
        "ann@example.com;x;Ann;Lee;1 Main Street;New York;new york;10017 1234;U.S.A",
        '"bob@example.com";;Bob;"Smith; Jr";2 Elm St;Austin;Texas;78701;US',
    )
    verdict = read_upload(b"\xef\xbb\xbf" + text.encode("utf-8"), US)
    assert (verdict.encoding, verdict.separator) == ("UTF-8 with BOM", "semicolon")
    assert_reasons(verdict, [(2, S.ACCEPTED, ""), (3, S.ACCEPTED, "")])
    ann, bob = (row.values for row in verdict.accepted)
    assert {k: ann[k] for k in ("email", "first_name", "region", "postal_code", "country")} == {
        "email": "ann@example.com",
        "first_name": "Ann",
        "region": "NY",
        "postal_code": "10017-1234",
        "country": "US",
    }
    assert ann["properties"] == {"Customer No": "x"}
    assert bob["last_name"] == "Smith; Jr" and bob["properties"] == {}
    assert verdict.committable


@pytest.mark.parametrize(("codec", "name"), [("utf-16", "UTF-16 LE"), ("utf-16-be", "UTF-16 BE")])
def test_utf16_tab_separated_unicode_text_export(codec: str, name: str) -> None:
    text = lines(
        "Email\tFirst Name\tLast Name\tAddress 1\tAddress 2\tTown\tCounty\tPostcode\tCountry",
        "zoë@example.co.uk\tZoë\tBrontë\t10 Downing Street\t\tLondon\t\tsw1a2aa\tUnited Kingdom",
    )
    data = text.encode(codec) if codec == "utf-16" else b"\xfe\xff" + text.encode(codec)
    verdict = read_upload(data, US)
    assert (verdict.encoding, verdict.separator) == (name, "tab")
    values = only_accepted_values(verdict)
    assert (values["first_name"], values["last_name"]) == ("Zoë", "Brontë")
    assert (values["postal_code"], values["country"]) == ("SW1A 2AA", "GB")
    assert verdict.accepted[0].printer == "stannp"


def test_windows_1252_excel_csv_with_accents() -> None:
    text = lines(HEADER, "chloe@example.com,Chloé,Dupré,1 Main St,Montréal Heights,NY,10017")
    data = text.encode("cp1252")
    assert data.decode("cp1252") == text and b"\xe9" in data
    verdict = read_upload(data, US)
    assert verdict.encoding == "Windows-1252"
    values = only_accepted_values(verdict)
    assert (values["first_name"], values["last_name"], values["city"]) == (
        "Chloé",
        "Dupré",
        "Montréal Heights",
    )


def test_valid_utf8_wins_over_windows_1252() -> None:
    # "Ã©" written in Windows-1252 is the two bytes of "é" in UTF-8: the stated rule reads UTF-8.
    decoded = decode_upload("Ã©".encode("cp1252"))
    assert (decoded.text, decoded.encoding) == ("é", "UTF-8")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "the file is empty"),
        (b" \r\n\r\n\t", "the file is empty"),
        (b"\xef\xbb\xbf", "the file is empty"),
        ("\r\n".encode("utf-16"), "the file is empty"),
        (b"PK\x03\x04\x14\x00\x06\x00", "an Excel workbook (.xlsx)"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "Excel 97-2003 workbook (.xls)"),
        (b"\xff\xfe\x00\x00e\x00\x00\x00", "UTF-32"),
        (b"email,name\r\nann@x.com,A\x00nn\r\n", "NUL bytes (the first on line 2)"),
        (
            b"email,name\r\nann@x.com,\x81\r\n",
            "neither UTF-8 nor Windows-1252 (byte 0x81 on line 2)",
        ),
        (
            b"\xef\xbb\xbfemail\r\n\xe9\r\n",
            "byte-order mark for UTF-8 but is not valid UTF-8 (byte 0xE9 on line 2)",
        ),
        (
            b"\xff\xfe" + "a\n".encode("utf-16-le") + b"\x00\xd8",
            "byte-order mark for UTF-16 but is not valid UTF-16",
        ),
    ],
)
def test_files_that_are_not_readable_text_are_refused_whole(data: bytes, fragment: str) -> None:
    verdict = read_upload(data, US)
    assert verdict.file_problem is not None and fragment in verdict.file_problem
    assert verdict.problem == verdict.file_problem and not verdict.committable
    assert verdict.rows == []


def test_a_file_over_the_size_limit_is_refused_before_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upload_files, "MAX_UPLOAD_BYTES", 100)
    small = lines(HEADER, "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701").encode()
    assert read_upload(small, US).committable
    verdict = read_upload(small + b" " * (101 - len(small)), US)
    assert verdict.file_problem == (
        "the file is 101 bytes; at most 100 are accepted (split it into several files)"
    )


def test_a_file_over_the_row_limit_is_refused_naming_the_first_row_too_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upload_batch, "MAX_ROWS", 3)
    rows = [f"p{n}@example.com,Ann,Lee,{n} Main St,Austin,TX,78701" for n in range(1, 5)]
    assert read_upload(lines(HEADER, *rows[:3], "", ",,,").encode(), US).committable
    verdict = read_upload(lines(HEADER, *rows[:2], "", *rows[2:]).encode(), US)
    assert verdict.file_problem == (
        "the file has more than 3 rows (line 6 is row 4); split it into several files"
    )
    assert MAX_ROWS >= 100_000


def test_header_only_and_blank_only_rows_are_refused_whole() -> None:
    for text in (HEADER, lines(HEADER), lines(HEADER, "", ",,,,,,", "  ", ",,,,,,,,,,")):
        verdict = read_upload(text.encode(), US)
        assert verdict.file_problem == "the file has a header but no rows", text
    verdict = read_upload(b"sep=;\r\n", US)
    assert verdict.file_problem == "the file has no header line"


# -- separators and the csv layer ----------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "separator"),
    [
        ("email,name,address,city,zip", ","),
        ("email;name;address;city;zip", ";"),
        ("email\tname\taddress\tcity\tzip", "\t"),
        ("email|name|address|city|zip", "|"),
        ('"Name, full";"Street, line 1";City;Zip', ";"),  # commas in quotes do not count
        ('"a;b";"c;d",e,f', ","),
        ('"say ""hi"", ok";x;y', ";"),
        ("email,name;address", ","),  # a tie goes to the earlier of , ; tab |
        ("email", ","),  # no separator: one column
        ("email;name\nx,y,z,w,v,u", ";"),  # only the header line counts
    ],
)
def test_separator_is_the_most_frequent_outside_quotes_in_the_header(
    header: str, separator: str
) -> None:
    assert detect_separator(header) == separator


def test_quoted_values_hold_separators_doubled_quotes_and_line_breaks_with_true_line_numbers() -> (
    None
):
    text = lines(
        "email,first name,last name,address,address 2,city,state,zip,notes",
        'a@example.com,Ann,Lee,"12 Main St, Building 4",,Austin,TX,78701,"said ""hi"""',
        'b@example.com,Bob,Ray,"7 Oak Lane',  # a line break inside the street
        'Rear House",,Austin,TX,78702,"line one',
        "line two",
        'line three"',
        "c@example.com,Cy,Fox,9 Elm St,,Austin,TX,1234,",
    )
    verdict = read_upload(text.encode(), US)
    assert_reasons(
        verdict,
        [(2, S.ACCEPTED, ""), (3, S.ACCEPTED, ""), (7, S.REJECTED, "invalid ZIP code")],
    )
    a, b = (row.values for row in verdict.accepted)
    assert a["address1"] == "12 Main St, Building 4"
    assert a["properties"] == {"notes": 'said "hi"'}
    assert b["address1"] == "7 Oak Lane Rear House"  # whitespace collapsed, as the sync does
    assert b["properties"] == {"notes": "line one\r\nline two\r\nline three"}


@pytest.mark.parametrize("end", ["\r\n", "\n", "\r"])
def test_every_line_end_counts_lines_the_same(end: str) -> None:
    text = lines(
        HEADER,
        "",
        "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701",
        ",,,,,,",
        "b@example.com,Bob,Lee,2 Main St,Austin,ZZ,78701",
        end=end,
    )
    verdict = read_upload(text.encode(), US)
    assert_reasons(verdict, [(3, S.ACCEPTED, ""), (5, S.REJECTED, "unknown state")])
    assert verdict.blank_lines == 2


def test_blank_lines_before_the_header_and_excels_sep_line_keep_line_numbers() -> None:
    text = lines(
        "",
        ",,,",
        "sep=|",
        "email|name|address|city|state|zip",
        "",
        "a@example.com|Ann Lee|1 Main St|Austin|TX|78701",
    )
    verdict = read_upload(text.encode(), US)
    assert verdict.separator == "vertical bar"
    assert_reasons(verdict, [(6, S.ACCEPTED, "")])


def test_a_quote_never_closed_refuses_the_file_at_its_line() -> None:
    text = lines(
        HEADER,
        "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701",
        'b@example.com,Bob,Lee,"2 Main St,Austin,TX,78701',
        "c@example.com,Cy,Lee,3 Main St,Austin,TX,78701",
    )
    verdict = read_upload(text.encode(), US)
    assert verdict.file_problem is not None
    assert verdict.file_problem.startswith('line 3: a double quote (") opens a value there')


def test_a_runaway_field_longer_than_the_readers_limit_refuses_the_file() -> None:
    text = lines(HEADER, 'a@example.com,Ann,Lee,"' + "x" * 140_000, "b,c,d,e,f,g,h")
    verdict = read_upload(text.encode(), US)
    assert verdict.file_problem is not None
    assert verdict.file_problem.startswith("line 2: the reader stopped (field larger than")


def test_a_quote_inside_an_unquoted_value_is_kept_as_written() -> None:
    text = lines(HEADER, 'a@example.com,Ann,"O""Brien",1 "Old" Mill Rd,Austin,TX,78701')
    values = only_accepted_values(read_upload(text.encode(), US))
    assert (values["last_name"], values["address1"]) == ('O"Brien', '1 "Old" Mill Rd')


# -- columns ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "column"),
    [(spelling, column) for column, spellings in SPELLINGS.items() for spelling in spellings]
    + [
        ("  Email Address ", Column.EMAIL),
        ("E_MAIL", Column.EMAIL),
        ("FIRST-NAME", Column.FIRST_NAME),
        ("Surname", Column.LAST_NAME),
        ("Full Name", Column.FULL_NAME),
        ("Street Address", Column.ADDRESS1),
        ("Address Line 2", Column.ADDRESS2),
        ("State/Province", Column.REGION),
        ("State / Region", Column.REGION),
        ("Post Code", Column.POSTAL_CODE),
        ("Country Code", Column.COUNTRY),
        ("Default Address Zip", Column.POSTAL_CODE),  # Shopify's customer export
        ("Default Address Province Code", Column.REGION),
        ("\ufeffemail", Column.EMAIL),  # a byte-order mark inside a file's text
        ("Company", None),
        ("Default Address Company", None),
        ("Email Marketing Consent", None),
        ("", None),
    ],
)
def test_headers_resolve_by_usual_spellings_whatever_their_case_and_punctuation(
    header: str, column: Column | None
) -> None:
    assert column_of(header) == column


def test_the_docs_list_every_header_recognised_and_every_status() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "uploads.md").read_text()
    table = {line.split("|")[1].strip(): line for line in docs.splitlines() if line.count("|") == 3}
    for column, spellings in SPELLINGS.items():
        row = table[column.label]
        assert [part.strip(" `") for part in row.split("|")[2].split(", ")] == list(spellings)
    for status in RowStatus:
        assert f"**{status.value}**" in docs


def test_unknown_columns_become_properties_under_their_header_text() -> None:
    text = lines(
        " Email , First Name ,Last Name,Address,City,State,Zip, Favourite Colour ,Tier,VIP?,,,",
        "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701, teal ,,yes,,,",
    )
    verdict = read_upload(text.encode(), US)
    values = only_accepted_values(verdict)
    # trimmed, empty cells left out, trailing empty columns ignored
    assert values["properties"] == {"Favourite Colour": "teal", "VIP?": "yes"}
    assert verdict.columns is not None and verdict.columns.width == 10
    assert '"Favourite Colour" -> property' in verdict.columns.describe()


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (
            "email,name,address,city",
            'no column for the postal code (found: "email", "name", "address", "city")',
        ),
        (
            "Email,Phone,Zip",
            "no column for the name (a first name or full name), address line 1 and city"
            ' (found: "Email", "Phone", "Zip")',
        ),
        ("last name,address,city,zip", "no column for the name (a first name or full name)"),
        (
            "name,address,city,zip,postal code",
            'columns "zip" (column 4) and "postal code" (column 5) are both the postal code',
        ),
        (
            "E-mail,name,address,city,zip,Email",
            'columns "E-mail" (column 1) and "Email" (column 6) are both the email',
        ),
        ("name,address,city,zip,notes,notes", 'columns 5 and 6 are both named "notes"'),
    ],
)
def test_a_header_that_cannot_be_resolved_refuses_the_file(header: str, fragment: str) -> None:
    text = lines(header, ",".join(["x"] * (header.count(",") + 1)))
    verdict = read_upload(text.encode(), US)
    assert verdict.file_problem is not None and fragment in verdict.file_problem
    assert verdict.rows == []


def test_a_header_with_a_nul_refuses_the_file() -> None:
    text = lines("name,address,city,zip,no\x00te", "Ann,1 Main St,Austin,78701,x")
    verdict = read_upload(text.encode("utf-16"), US)
    assert verdict.file_problem is not None
    assert verdict.file_problem.startswith("the name of column 5 contains a NUL character")


def test_without_a_country_column_the_home_country_stands_in_and_is_needed() -> None:
    text = lines("name,address,city,postcode", "Ann Lee,10 Downing St,London,SW1A 2AA")
    uk = UploadCampaign(1, Destination(home_country="GB"))
    values = only_accepted_values(read_upload(text.encode(), uk))
    assert (values["country"], values["postal_code"]) == ("GB", "SW1A 2AA")
    verdict = read_upload(text.encode(), UploadCampaign(1, Destination()))
    assert verdict.file_problem is not None
    assert "no country column, and the organization has no home country" in verdict.file_problem


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("Ann Lee", "Ann", "Lee"),
        ("  Mary  Ann   Lee ", "Mary Ann", "Lee"),
        ("Lee, Ann", "Ann", "Lee"),
        ("Lee,Ann Marie", "Ann Marie", "Lee"),
        ("John Smith Jr.", "John", "Smith Jr."),
        ("John Smith, Jr.", "John", "Smith Jr."),
        ("Ann Lee III", "Ann", "Lee III"),
        ("Dr. Ann Lee", "Dr. Ann", "Lee"),
        ("Cher", "Cher", None),
        ("  ", None, None),
    ],
)
def test_a_full_name_splits_by_the_stated_rule(
    name: str, first: str | None, last: str | None
) -> None:
    assert split_full_name(name) == (first, last)


def test_a_full_name_fills_only_rows_without_first_and_last_name() -> None:
    text = lines(
        "email,name,first name,last name,address,city,state,zip",
        "a@example.com,Lee  Ann,,,1 Main St,Austin,TX,78701",
        "b@example.com,Bob Ray,Robert,,2 Main St,Austin,TX,78701",
        "c@example.com,Cy\x1bFox,,,3 Main St,Austin,TX,78701",
    )
    verdict = read_upload(text.encode(), US)
    assert_reasons(
        verdict,
        [
            (2, S.ACCEPTED, ""),
            (3, S.ACCEPTED, ""),
            (4, S.REJECTED, "full name contains a control character (U+001B)"),
        ],
    )
    a, b = (row.values for row in verdict.accepted)
    assert (a["first_name"], a["last_name"]) == ("Lee", "Ann")
    assert (b["first_name"], b["last_name"]) == ("Robert", None)


# -- rows --------------------------------------------------------------------------------------
def test_rows_are_judged_by_the_sync_rules_each_with_its_reason() -> None:
    text = lines(
        "email,first name,last name,address,address 2,city,state,zip,country",
        "ok@example.com,Ann,Lee,1 Main St,,Austin,TX,78701,US",
        "zip@example.com,Ann,Lee,2 Main St,,Austin,TX,1234,US",
        "uk@example.com,Ann,Lee,3 High St,,London,,ZZ99 NOPE,UK",
        "ct@example.com,Ann,Lee,4 Main St,,Hartford,CT,6103,US",  # lost its leading zero
        "nocity@example.com,Ann,Lee,5 Main St,,,TX,78701,US",
        "noname@example.com,,,6 Main St,,Austin,TX,78701,US",
        "fr@example.com,Ann,Lee,7 Rue Royale,,Paris,,75008,France",
        "long@example.com,Ann,Lee," + "8 " + "x" * 498 + ",,Austin,TX,78701,US",
        "lob@example.com,Ann,Lee,9 Very Long Street Name Boulevard,Apartment 1234567890123,"
        "Austin,TX,78701,US",
        "nowhere@example.com,Ann,Lee,10 Main St,,Austin,TX,78701,Narnia",
    )
    verdict = read_upload(text.encode(), US)
    assert_reasons(
        verdict,
        [
            (2, S.ACCEPTED, ""),
            (3, S.REJECTED, "US address has an invalid ZIP code (5 digits or ZIP+4)"),
            (4, S.REJECTED, "UK address has an invalid postcode"),
            (5, S.ACCEPTED, ""),
            (6, S.REJECTED, NO_ADDRESS),
            (7, S.REJECTED, "address is missing name"),
            (8, S.REJECTED, "no printer mails to FR"),
            (9, S.REJECTED, "address line 1 is 500 characters long; at most 200 fit"),
            (10, S.REJECTED, "Lob takes at most 50"),
            (11, S.REJECTED, "unknown country"),
        ],
    )
    assert verdict.accepted[1].values["postal_code"] == "06103"
    assert verdict.rejected[0].email == "zip@example.com"


def test_a_nul_inside_a_utf16_row_rejects_that_row_only() -> None:
    text = lines(
        "email\tfirst name\tlast name\taddress\tcity\tstate\tzip\tnote",
        "a@example.com\tA\x00nn\tLee\t1 Main St\tAustin\tTX\t78701\t",
        "b@example.com\tBob\tLee\t2 Main St\tAustin\tTX\t78701\tx\x00y",
        "c@example.com\tCy\tLee\t3 Main St\tAustin\tTX\t78701\t",
    )
    verdict = read_upload(text.encode("utf-16"), US)
    assert_reasons(
        verdict,
        [
            (2, S.REJECTED, "first name contains a NUL character (U+0000)"),
            (3, S.REJECTED, 'properties."note" contains a NUL character'),
            (4, S.ACCEPTED, ""),
        ],
    )


def test_values_past_the_header_or_under_no_header_reject_the_row_and_short_rows_are_fine() -> None:
    text = lines(
        "email,first name,last name,address,,city,state,zip",
        "a@example.com,Ann,Lee,12 Main St, Apt 4,Austin,TX,78701",  # unquoted comma: shifted
        "b@example.com,Bob,Lee,2 Main St,,Austin,TX,78701,,,",
        "c@example.com,Cy,Lee,3 Main St,,Austin,TX,78701,,,extra",
        "d@example.com,Di,Lee,4 Main St,",  # stops early: city, state and zip are empty
    )
    verdict = read_upload(text.encode(), US)
    assert_reasons(
        verdict,
        [
            (2, S.REJECTED, "the row has a value in column 5, which has no header"),
            (3, S.ACCEPTED, ""),
            (4, S.REJECTED, "a value in column 11, past the header's 8 columns"),
            (5, S.REJECTED, NO_ADDRESS),
        ],
    )


def test_duplicates_in_the_file_keep_the_first_valid_row() -> None:
    text = lines(
        HEADER,
        "ann@example.com,Ann,Lee,12 North Main Street,Austin,TX,78701",
        "ANN@Example.com ,Ann,Lee,99 Other Rd,Austin,TX,78701",  # same email, other case
        "bob@example.com,Bob,Lee,12 N Main St,Austin,TX,78701-1234",  # same address
        "cy@example.com,Cy,Lee,5 Elm St,Austin,TX,123",  # invalid: claims nothing
        "cy@example.com,Cy,Lee,5 Elm St,Austin,TX,78701",
        "dee@example.com,Dee,Lee,5 Elm Street,Austin,TX,78701",
    )
    verdict = read_upload(text.encode(), US)
    assert_reasons(
        verdict,
        [
            (2, S.ACCEPTED, ""),
            (3, S.DUPLICATE, "duplicate of line 2 (same email)"),
            (4, S.DUPLICATE, "duplicate of line 2 (same address)"),
            (5, S.REJECTED, "invalid ZIP code"),
            (6, S.ACCEPTED, ""),
            (7, S.DUPLICATE, "duplicate of line 6 (same address)"),
        ],
    )
    assert verdict.skipped[0].email == "ANN@Example.com"


def test_rows_already_in_the_campaign_or_blocklisted_are_skipped_not_errors() -> None:
    campaign = UploadCampaign(
        7,
        Destination(home_country="US"),
        email_keys=frozenset({"held@example.com"}),
        address_keys=frozenset({"US|78701|2 main st"}),
        blocked_emails=frozenset({"blocked@example.com"}),
        blocked_addresses=frozenset({"US|78701|4 main st"}),
    )
    text = lines(
        HEADER,
        "Held@Example.com,Ann,Lee,1 Main St,Austin,TX,78701",
        "new@example.com,Ann,Lee,2 Main Street,Austin,TX,78701",
        "blocked@example.com,Ann,Lee,3 Main St,Austin,TX,78701",
        ",Ann,Lee,4 Main Street,Austin,TX,78701-0001",
        "fresh@example.com,Ann,Lee,5 Main St,Austin,TX,78701",
        "again@example.com,Ann,Lee,4 Main St,Austin,TX,78701",
    )
    verdict = read_upload(text.encode(), campaign)
    assert_reasons(
        verdict,
        [
            (2, S.IN_CAMPAIGN, "already in the campaign (same email)"),
            (3, S.IN_CAMPAIGN, "already in the campaign (same address)"),
            (4, S.BLOCKLISTED, "email address is on the blocklist"),
            (5, S.BLOCKLISTED, "postal address is on the blocklist"),
            (6, S.ACCEPTED, ""),
            (7, S.DUPLICATE, "duplicate of line 5 (same address)"),
        ],
    )
    assert verdict.committable  # skipped rows never reject a batch
    assert [row.profile_id for row in verdict.accepted] == [
        upload_profile_id(7, "fresh@example.com", "US|78701|5 main st")
    ]


def test_accepted_rows_carry_values_ready_to_insert() -> None:
    text = lines(HEADER + ",tier", "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701,gold")
    verdict = read_upload(text.encode(), US)
    row = verdict.accepted[0]
    assert (row.line, row.status, row.reason, row.printer) == (2, S.ACCEPTED, None, "lob")
    assert row.values["email_key"] == "a@example.com"
    assert row.values["address_key"] == "US|78701|1 main st"
    assert set(row.values) == {
        "email",
        "email_key",
        "first_name",
        "last_name",
        "address1",
        "address2",
        "city",
        "region",
        "postal_code",
        "country",
        "address_key",
        "properties",
    }
    for column, value in row.values.items():
        column_type = Recipient.__table__.c[column].type
        if isinstance(column_type, String) and value is not None:
            assert len(value) <= (column_type.length or 0), column
    source = Recipient.__table__.c["source"].type
    assert isinstance(source, String) and len(RECIPIENT_SOURCE) <= (source.length or 0)


# -- profile ids -------------------------------------------------------------------------------
def test_profile_ids_are_stable_per_campaign_and_person_and_fit_their_column() -> None:
    by_email = upload_profile_id(7, "a@example.com", "US|78701|1 main st")
    assert by_email == upload_profile_id(7, "a@example.com", "US|10017|another st")
    assert by_email != upload_profile_id(8, "a@example.com", "US|78701|1 main st")
    assert by_email != upload_profile_id(7, "b@example.com", "US|78701|1 main st")
    by_address = upload_profile_id(7, None, "US|78701|1 main st")
    assert by_address not in (by_email, upload_profile_id(7, None, "US|78701|2 main st"))
    for profile_id in (by_email, by_address):
        assert profile_id.startswith("upload:") and len(profile_id) == 39
        assert profile_id_problem(profile_id) is None
        assert len(profile_id) <= EXTERNAL_PROFILE_ID_MAX
    with pytest.raises(ValueError, match="needs an email or address key"):
        upload_profile_id(7, None, None)


def test_the_same_file_gives_the_same_ids_and_a_second_upload_adds_nobody() -> None:
    text = lines(
        HEADER,
        "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701",
        ",Bob,Lee,2 Main St,Austin,TX,78701",
    ).encode()
    first = read_upload(text, US)
    assert [r.profile_id for r in first.accepted] == [
        r.profile_id for r in read_upload(text, US).accepted
    ]
    assert len({r.profile_id for r in first.accepted}) == 2
    held = UploadCampaign(
        7,
        US.destination,
        email_keys=frozenset(k for r in first.accepted if (k := r.values["email_key"])),
        address_keys=frozenset(r.values["address_key"] for r in first.accepted),
    )
    again = read_upload(text, held)
    assert [r.status for r in again.rows] == [S.IN_CAMPAIGN, S.IN_CAMPAIGN]
    assert again.committable and again.accepted == ()


# -- the batch ---------------------------------------------------------------------------------
def test_any_invalid_row_rejects_the_batch_unless_the_caller_allows_invalid_rows() -> None:
    text = lines(
        HEADER,
        "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701",
        "b@example.com,Bob,Lee,2 Main St,Austin,TX,7870",
        "a@example.com,Ann,Lee,1 Main St,Austin,TX,78701",
    ).encode()
    strict = read_upload(text, US)
    assert strict.problem == "1 row cannot be mailed (line 3); fix the file and upload it again"
    assert not strict.committable and len(strict.accepted) == 1
    allowed = read_upload(text, US, allow_invalid_rows=True)
    assert allowed.problem is None and allowed.committable
    assert [r.line for r in allowed.accepted] == [2]
    nothing_valid = lines(HEADER, "b@example.com,Bob,Lee,2 Main St,Austin,TX,7870").encode()
    verdict = read_upload(nothing_valid, US, allow_invalid_rows=True)
    assert verdict.problem == "no row of the file can be mailed"


def test_the_batch_problem_names_the_first_ten_rejected_lines() -> None:
    bad = [f"p{n}@example.com,Ann,Lee,{n} Main St,Austin,TX,1" for n in range(12)]
    verdict = read_upload(lines(HEADER, *bad).encode(), US)
    assert verdict.problem == (
        "12 rows cannot be mailed (lines 2, 3, 4, 5, 6, 7, 8, 9, 10, 11...); fix the file and "
        "upload it again"
    )


# -- reports -----------------------------------------------------------------------------------
def mixed_verdict() -> UploadVerdict:
    campaign = UploadCampaign(7, US.destination, blocked_emails=frozenset({"x@example.com"}))
    text = lines(
        HEADER,
        "ann@example.com,Ann,Lee,1 Main St,Austin,TX,78701",
        "=cmd@example.com,Bob,Lee,2 Main St,Austin,TX,7870",
        "ann@example.com,Ann,Lee,3 Main St,Austin,TX,78701",
        "x@example.com,Cy,Lee,4 Main St,Austin,TX,78701",
    )
    return read_upload(text.encode(), campaign)


def test_the_csv_report_has_a_row_per_row_in_file_order() -> None:
    report = report_csv(mixed_verdict())
    assert report == (
        "line,status,reason,email\r\n"
        "2,accepted,,ann@example.com\r\n"
        "3,rejected,US address has an invalid ZIP code (5 digits or ZIP+4) (no country given; "
        "the organization's home country US was assumed),'=cmd@example.com\r\n"
        "4,duplicate,duplicate of line 2 (same email),ann@example.com\r\n"
        "5,blocklisted,email address is on the blocklist,x@example.com\r\n"
    )
    masked = list(csv.reader(io.StringIO(report_csv(mixed_verdict(), mask_emails=True))))
    assert [row[3] for row in masked[1:]] == [
        "a***@example.com",
        "'=***@example.com",
        "a***@example.com",
        "x***@example.com",
    ]


def test_rows_and_verdicts_never_show_an_email_in_their_repr() -> None:
    verdict = mixed_verdict()
    assert verdict.accepted[0].email == "ann@example.com"
    assert "@" not in repr(verdict) and "Main St" not in repr(verdict)


def test_the_csv_report_of_a_refused_file_is_one_row() -> None:
    report = report_csv(read_upload(b"email,name\r\n", US))
    rows = list(csv.reader(io.StringIO(report)))
    assert rows[0] == ["line", "status", "reason", "email"]
    assert rows[1][:2] == ["", "file rejected"] and "no column for" in rows[1][2]
    assert len(rows) == 2


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("ann@example.com", "a***@example.com"),
        ("a@b", "a***@b"),
        ("no-at-sign", "n***"),
        ("we@ird@example.com", "w***@example.com"),
        (None, None),
    ],
)
def test_mask_email(email: str | None, masked: str | None) -> None:
    assert mask_email(email) == masked


def test_the_markdown_summary_counts_statuses_and_never_shows_an_email() -> None:
    summary = report_markdown(mixed_verdict())
    assert summary.startswith(
        "**Rejected**: 1 row cannot be mailed (line 3); fix the file and upload it again\n"
    )
    assert "Read as encoding UTF-8, separator comma." in summary
    assert "| accepted | 1 |\n| duplicate | 1 |\n| blocklisted | 1 |" in summary
    assert "| already in campaign | 0 |\n| rejected | 1 |" in summary
    assert "| 3 | rejected | US address has an invalid ZIP code" in summary
    assert "| 4 | duplicate | duplicate of line 2 (same email) |" in summary
    assert "@" not in summary


def test_the_markdown_summary_lists_at_most_twenty_problems() -> None:
    bad = [f"p{n}@example.com,Ann,Lee,{n} Main St,Austin,TX,1" for n in range(25)]
    summary = report_markdown(read_upload(lines(HEADER, *bad).encode(), US))
    assert "First 20 of 25 rows not accepted:" in summary
    assert "| 21 | rejected |" in summary and "| 22 | rejected |" not in summary
    committable = report_markdown(read_upload(lines(HEADER, bad[0][:-1] + "78701").encode(), US))
    assert committable.startswith("**Committable**: 1 row to add\n")
    refused = report_markdown(read_upload(b"PK\x03\x04", US))
    assert refused.startswith("**Rejected**: the file is an Excel workbook")


# -- round trip --------------------------------------------------------------------------------
def _in_cp1252(char: str) -> bool:
    try:
        char.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_VALUE = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    notes=st.lists(_VALUE, min_size=1, max_size=6),
    separator=st.sampled_from(SEPARATORS),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),  # 0 1 2
    end=st.sampled_from(["\r\n", "\n"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "cp1252"]),
)
def test_any_text_written_by_csv_writer_reads_back(
    notes: list[str], separator: str, quoting: Literal[0, 1, 2, 3], end: str, encoding: str
) -> None:
    if end == "\n":  # csv.writer only quotes the characters of its own line end
        assume(all("\r" not in note for note in notes))
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=separator, quoting=quoting, lineterminator=end)
    writer.writerow(["Email", "First Name", "Address", "City", "State", "Zip", "Note"])
    for n, note in enumerate(notes):
        writer.writerow(
            [f"p{n}@example.com", "Ann", f"{n + 1} Main St", "Austin", "TX", "78701", note]
        )
    text = out.getvalue()
    if encoding == "cp1252":
        assume(all(_in_cp1252(char) for char in text))
        data = text.encode("cp1252")
        # the stated rule: bytes that are valid UTF-8 are read as UTF-8
        assume(not _valid_utf8(data) or data.isascii())
    elif encoding == "utf-16-be":
        data = b"\xfe\xff" + text.encode("utf-16-be")
    else:
        data = text.encode(encoding)
    verdict = read_upload(data, US)
    assert [row.status for row in verdict.rows] == [S.ACCEPTED] * len(notes)
    breaks = [note.count("\n") + note.count("\r") - note.count("\r\n") for note in notes]
    assert [row.line for row in verdict.rows] == [
        2 + n + sum(breaks[:n]) for n in range(len(notes))
    ]
    assert [row.values["properties"] for row in verdict.accepted] == [
        {"Note": note.strip()} if note.strip() else {} for note in notes
    ]


def test_file_rejected_is_a_value_error_with_its_reason() -> None:
    with pytest.raises(FileRejected, match="the file is empty") as raised:
        decode_upload(b"   ")
    assert isinstance(raised.value, ValueError)
