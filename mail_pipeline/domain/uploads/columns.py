"""Which column of an uploaded list holds which recipient field.

A header is compared by its *key*: Unicode-normalized (NFKC), case-folded, with everything
but letters and digits removed - so ``E-Mail``, ``email`` and `` EMAIL `` are one spelling,
as are ``Zip Code``, ``zip_code`` and ``ZIP-CODE``. A key starting ``defaultaddress``
(Shopify's customer export: ``Default Address Zip``) is compared without that prefix too.
:data:`SPELLINGS` lists the names each field is recognised by (``docs/uploads.md`` repeats
them); every other named column is a personalization property, stored under its header text
(trimmed), and a column without a header is ignored as long as it holds no value.

The whole file is refused (:class:`~mail_pipeline.domain.uploads.files.FileRejected`) when
a header cannot be a property key (it holds a NUL character), when two columns resolve to the
same field (naming both), when two property columns have the same header, or when a column
needed to mail someone is missing (naming it and listing the headers found): a name (first
name or full name), address line 1, city and postal code. Country is optional: the
organization's home country stands in.

A full-name column (:func:`split_full_name`) fills the first and last name of a row that has
neither: ``"Lee, Ann"`` is Ann Lee; otherwise the last word is the last name, with a
generational or academic suffix kept on it ("Ann Lee Jr." -> "Ann", "Lee Jr."), and
everything before it the first name ("Mary Ann Lee" -> "Mary Ann", "Lee"); one word is a first
name. A title ("Dr.") stays with the first name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mail_pipeline.domain.fields import InvalidField, check_properties
from mail_pipeline.domain.uploads.files import FileRejected


class Column(StrEnum):
    """A recipient field a column can fill (the names are ``ProfileData``'s)."""

    EMAIL = "email"
    FIRST_NAME = "first_name"
    LAST_NAME = "last_name"
    FULL_NAME = "full_name"
    ADDRESS1 = "address1"
    ADDRESS2 = "address2"
    CITY = "city"
    REGION = "region"
    POSTAL_CODE = "postal_code"
    COUNTRY = "country"

    @property
    def label(self) -> str:
        """What a person calls it (the words of ``judge_profile``'s reasons)."""
        return _LABELS[self]


_LABELS = {
    Column.EMAIL: "email",
    Column.FIRST_NAME: "first name",
    Column.LAST_NAME: "last name",
    Column.FULL_NAME: "full name",
    Column.ADDRESS1: "address line 1",
    Column.ADDRESS2: "address line 2",
    Column.CITY: "city",
    Column.REGION: "region",
    Column.POSTAL_CODE: "postal code",
    Column.COUNTRY: "country",
}

#: The headers each field is recognised by, as people write them (compared by key).
SPELLINGS: Mapping[Column, tuple[str, ...]] = {
    Column.EMAIL: ("email", "e-mail", "email address", "e-mail address", "email_address"),
    Column.FIRST_NAME: ("first name", "firstname", "first_name", "given name", "fname", "first"),
    Column.LAST_NAME: ("last name", "lastname", "surname", "family name", "lname", "last"),
    Column.FULL_NAME: ("name", "full name", "fullname", "recipient name", "contact name"),
    Column.ADDRESS1: (
        "address",
        "address1",
        "address 1",
        "address line 1",
        "street",
        "street address",
        "addr1",
    ),
    Column.ADDRESS2: (
        "address2",
        "address 2",
        "address line 2",
        "addr2",
        "apt",
        "apartment",
        "suite",
        "unit",
        "apt/suite",
    ),
    Column.CITY: ("city", "town", "town/city", "locality"),
    Column.REGION: (
        "state",
        "region",
        "province",
        "county",
        "state/province",
        "state/region",
        "state code",
        "province code",
    ),
    Column.POSTAL_CODE: (
        "zip",
        "zip code",
        "zipcode",
        "postal code",
        "postcode",
        "post code",
        "zip/postal code",
    ),
    Column.COUNTRY: ("country", "country code", "country/region"),
}

#: The fields a file must have a column for; a name is one of :data:`NAME_COLUMNS`.
REQUIRED_COLUMNS = (Column.ADDRESS1, Column.CITY, Column.POSTAL_CODE)
NAME_COLUMNS = (Column.FIRST_NAME, Column.FULL_NAME)

_NOT_WORD = re.compile(r"[\W_]+")
_SHOPIFY_PREFIX = "defaultaddress"
#: Words that follow a last name ("Jr."), compared without dots and case.
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "dds", "esq"})
#: At most this many headers are quoted in a message.
_HEADERS_SHOWN = 20


def header_key(header: str) -> str:
    """How headers are compared (see the module)."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", header).casefold())


_BY_KEY: Mapping[str, Column] = {
    header_key(spelling): column
    for column, spellings in SPELLINGS.items()
    for spelling in spellings
}


def column_of(header: str) -> Column | None:
    """The field a header names, or ``None`` (a property, or no header)."""
    key = header_key(header)
    found = _BY_KEY.get(key)
    if found is None and key.startswith(_SHOPIFY_PREFIX):
        found = _BY_KEY.get(key.removeprefix(_SHOPIFY_PREFIX))
    return found


@dataclass(frozen=True)
class ColumnMap:
    """The header of a file, resolved."""

    #: The header cells, trimmed, trailing empty ones dropped.
    headers: tuple[str, ...]
    #: field -> the index of its column.
    fields: Mapping[Column, int]
    #: (index, header) of every other named column: the row's personalization properties.
    properties: tuple[tuple[int, str], ...]
    #: Indexes of the columns without a header (inside :attr:`width`).
    unnamed: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.headers)

    def describe(self) -> str:
        """``"E-Mail" -> email, "Zip" -> postal code, "Tier" -> property``, in file order."""
        names = {index: column.label for column, index in self.fields.items()}
        names.update((index, "property") for index, _header in self.properties)
        return ", ".join(
            f"{quote_header(self.headers[index])} -> {name}"
            for index, name in sorted(names.items())
        )


def quote_header(header: str) -> str:
    """A header as a message shows it: in double quotes, on one line, cut at 40 characters."""
    text = " ".join(header.split())
    return f'"{text}"' if len(text) <= 40 else f'"{text[:37]}..."'


def _found(headers: Sequence[str]) -> str:
    named = [quote_header(h) for h in headers if h]
    shown = ", ".join(named[:_HEADERS_SHOWN])
    more = len(named) - _HEADERS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "") if named else "no column names"


def resolve_columns(cells: Sequence[str]) -> ColumnMap:
    """The :class:`ColumnMap` of a header record, or
    :class:`~mail_pipeline.domain.uploads.files.FileRejected` (see the module)."""
    headers = [cell.strip().removeprefix("\ufeff").strip() for cell in cells]
    while headers and not headers[-1]:
        headers.pop()
    fields: dict[Column, int] = {}
    properties: dict[str, int] = {}
    unnamed: list[int] = []
    for index, header in enumerate(headers):
        if not header:
            unnamed.append(index)
            continue
        try:  # before the header is quoted in any message
            check_properties({header: ""})
        except InvalidField as exc:
            raise FileRejected(
                f"the name of column {index + 1} {exc.problem}; rename that column"
            ) from None
        column = column_of(header)
        if column is None:
            if header in properties:
                raise FileRejected(
                    f"columns {properties[header] + 1} and {index + 1} are both named "
                    f"{quote_header(header)}; rename or remove one"
                )
            properties[header] = index
        elif column in fields:
            first = fields[column]
            raise FileRejected(
                f"columns {quote_header(headers[first])} (column {first + 1}) and "
                f"{quote_header(header)} (column {index + 1}) are both the {column.label}; "
                "keep one of them"
            )
        else:
            fields[column] = index
    missing = [c.label for c in REQUIRED_COLUMNS if c not in fields]
    if not any(c in fields for c in NAME_COLUMNS):
        missing.insert(0, "name (a first name or full name)")
    if missing:
        listed = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
        raise FileRejected(
            f"the file has no column for the {listed} (found: {_found(headers)}); "
            "docs/uploads.md lists the column names recognised"
        )
    return ColumnMap(
        tuple(headers),
        fields,
        tuple((index, header) for header, index in properties.items()),
        tuple(unnamed),
    )


def split_full_name(name: str) -> tuple[str | None, str | None]:
    """(first name, last name) of a full name (see the module); ``(None, None)`` when blank."""
    if "," in name:
        last, _comma, first = name.partition(",")
        if first.strip() and not _is_suffix(first):
            return first.strip() or None, last.strip() or None
        name = f"{last} {first}"
    words = name.split()
    if len(words) < 2:
        return (words[0] if words else None), None
    end = len(words) - 1
    while end > 1 and _is_suffix(words[end]):
        end -= 1
    return " ".join(words[:end]), " ".join(words[end:])


def _is_suffix(word: str) -> bool:
    return word.replace(".", "").strip().casefold() in _SUFFIXES
