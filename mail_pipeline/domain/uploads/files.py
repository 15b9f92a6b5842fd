"""An uploaded recipient list as text and records: its encoding, its separator, its lines.

Encodings, decided from the bytes alone (the first rule that applies wins):

1. larger than :data:`MAX_UPLOAD_BYTES`, empty, or an Excel workbook (``.xlsx``/``.xls``
   signature) -> refused;
2. a UTF-16 byte-order mark (``FF FE`` or ``FE FF``: Excel's "Unicode Text", tab-separated)
   -> UTF-16 LE/BE, refused when not valid UTF-16; a UTF-32 mark is refused;
3. NUL bytes anywhere else -> refused: a text file in UTF-8 or Windows-1252 has none (it is a
   binary file, or UTF-16 without its byte-order mark);
4. a UTF-8 byte-order mark -> UTF-8, refused when not valid UTF-8;
5. valid UTF-8 -> UTF-8 (ASCII is valid UTF-8);
6. otherwise Windows-1252 (Excel's "CSV" on Windows), refused when a byte is not one
   Windows-1252 defines (``81 8D 8F 90 9D``).

"Valid UTF-8 wins" is safe: text in Windows-1252 with accented letters is almost never valid
UTF-8 by chance (it takes two or three high bytes in exactly UTF-8's patterns, such as "Ã©").

Separator (:func:`detect_separator`): a first line ``sep=X`` (Excel's own hint) names it and
is not the header; otherwise it is whichever of comma, semicolon, tab and vertical bar occurs
most often in the header line outside double quotes, ties going to the earlier of that list
(a header with none of them is one column). The header is the first line that is not blank
(whitespace and separators only); blank lines before it are skipped.

Records (:func:`read_records`) come from the stdlib :mod:`csv` reader: fields in double quotes
may hold separators, doubled quotes and line breaks; ``\\r\\n``, ``\\n`` and ``\\r`` all end a
line. Each record carries the number of the physical line it starts on, as an editor shows it
(the header of a file without blank lines first is line 1). A quote that is opened and never
closed swallows the rest of the file, and a field longer than the reader's limit (131,072
characters) is what a stray quote produces: both refuse the whole file, naming the line.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

#: The largest file accepted (bytes): 200,000 rows of a wide export in UTF-16 fit.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: The most data rows a file may hold (blank lines not counted).
MAX_ROWS = 200_000

SEPARATORS = (",", ";", "\t", "|")
SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}

#: How much of the header the separator count reads (a header is never this long; a stray
#: quote in it must not make the count read the whole file).
_HEADER_SCAN_MAX = 65_536
#: Lines of whitespace and separators only, before the header.
_BLANK_LINES = re.compile(r"(?:[ \t,;|\f\v]*(?:\r\n|\r|\n))*")
_SEP_LINE = re.compile(r'sep=([^\r\n"])[ \t]*(?:\r\n|\r|\n|$)')
#: Fed to the reader after the file, as a line of its own: read back as the last record, alone,
#: it ends the file; read into a value, a quote was left open. (A Unicode noncharacter.)
_END = "\uffff"
_WORKBOOKS = (
    (b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip archive"),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook (.xls)"),
)
_SAVE_AS_CSV = "save it from the spreadsheet as CSV (UTF-8) and upload that"


class FileRejected(ValueError):
    """The whole file is refused; ``str()`` says why, naming lines and columns (never a value
    of a row)."""


@dataclass(frozen=True)
class DecodedText:
    #: The file's text, without its byte-order mark.
    text: str
    #: How a person calls the encoding: "UTF-8", "UTF-8 with BOM", "UTF-16 LE",
    #: "UTF-16 BE" or "Windows-1252".
    encoding: str


def decode_upload(data: bytes) -> DecodedText:
    """The text of an uploaded file by the rules of the module; :class:`FileRejected` when
    it is too large, empty, binary or in no encoding those rules read."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise FileRejected(
            f"the file is {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,} are accepted "
            "(split it into several files)"
        )
    for signature, what in _WORKBOOKS:
        if data.startswith(signature):
            raise FileRejected(f"the file is {what}, not CSV: {_SAVE_AS_CSV}")
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise FileRejected(f"the file is in UTF-32, which is not read here: {_SAVE_AS_CSV}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        le = data.startswith(codecs.BOM_UTF16_LE)
        name = "UTF-16 LE" if le else "UTF-16 BE"
        decoded = _decode(data, 2, "utf-16-le" if le else "utf-16-be", name)
    elif b"\x00" in data:
        at = data.index(b"\x00")
        raise FileRejected(
            f"the file holds NUL bytes (the first on line {_line_of(data, at)}): it is not a "
            "text file, or it is UTF-16 without its byte-order mark; " + _SAVE_AS_CSV
        )
    elif data.startswith(codecs.BOM_UTF8):
        decoded = _decode(data, 3, "utf-8", "UTF-8 with BOM")
    else:
        try:
            decoded = DecodedText(data.decode("utf-8"), "UTF-8")
        except UnicodeDecodeError:
            decoded = _decode(data, 0, "cp1252", "Windows-1252")
    if not decoded.text.strip():
        raise FileRejected("the file is empty")
    return decoded


def _decode(data: bytes, skip: int, codec: str, name: str) -> DecodedText:
    """``data`` after its ``skip`` bytes of byte-order mark, in ``codec``."""
    try:
        return DecodedText(data[skip:].decode(codec).removeprefix("\ufeff"), name)
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        where = f"byte 0x{data[at]:02X} on line {_line_of(data, at)}"
        if skip:
            family = name.split()[0]
            what = f"begins with a byte-order mark for {family} but is not valid {family}"
        else:  # the last resort: it was not UTF-8 either
            what = "is neither UTF-8 nor Windows-1252"
        raise FileRejected(f"the file {what} ({where}); {_SAVE_AS_CSV}") from None


def _line_of(data: bytes, offset: int) -> int:
    """The line of a byte offset, counting line feeds (UTF-16 ones too: ``0A 00``)."""
    return data.count(b"\n", 0, offset) + 1


def detect_separator(header: str) -> str:
    """The separator of a file whose header line starts ``header`` (the rest of the file may
    follow; the count stops at the first line break outside quotes)."""
    counts = dict.fromkeys(SEPARATORS, 0)
    quoted = False
    for char in header[:_HEADER_SCAN_MAX]:
        if char == '"':
            quoted = not quoted  # a doubled quote toggles twice: no change
        elif quoted:
            continue
        elif char in "\r\n":
            break
        elif char in counts:
            counts[char] += 1
    return max(SEPARATORS, key=counts.__getitem__)  # the first of the most frequent


@dataclass(frozen=True)
class Layout:
    """Where the records of a text begin and how they are separated."""

    separator: str
    #: The text from the header on.
    body: str
    #: The line number of the header.
    header_line: int


def find_layout(text: str) -> Layout:
    """Skip the blank lines and Excel's ``sep=`` line before the header, and tell the
    separator (see the module)."""
    start = _BLANK_LINES.match(text)
    position = start.end() if start else 0
    line = 1 + _count_lines(text[:position])
    hint = _SEP_LINE.match(text, position)
    separator: str | None = None
    if hint is not None:
        separator = hint.group(1)
        position, line = hint.end(), line + 1
        after = _BLANK_LINES.match(text, position)
        if after is not None:
            line += _count_lines(text[position : after.end()])
            position = after.end()
    body = text[position:]
    return Layout(separator or detect_separator(body), body, line)


def _count_lines(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def count_lines(text: str) -> int:
    """The physical lines of ``text`` (an upper bound of its records)."""
    return _count_lines(text) + (0 if text.endswith(("\n", "\r")) else 1)


def read_records(layout: Layout) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of every record from the header on, blank records included.

    Raises :class:`FileRejected` for a quote never closed and for a field over the reader's
    limit (see the module), naming the line where the record starts."""
    lines = itertools.chain(io.StringIO(layout.body, newline=""), (_END,))
    reader = csv.reader(lines, delimiter=layout.separator, quotechar='"', doublequote=True)
    offset = layout.header_line - 1
    held: tuple[int, list[str]] | None = None  # one record behind: the last is the marker
    while True:
        start = reader.line_num + 1 + offset
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise FileRejected(
                f'line {start}: the reader stopped ({exc}); most likely a double quote (") '
                "opens a value there and is never closed"
            ) from None
        if held is not None:
            yield held
        held = start, record
    if held is None or held[1] != [_END]:  # the marker was read into a quoted value
        raise FileRejected(
            f'line {held[0] if held else offset + 1}: a double quote (") opens a value there '
            "and is never closed, so the rest of the file would be one value; close it, or "
            'double a quote that is part of a value ("")'
        )
