"""What a recipient row can hold: the sizes of its text columns and the characters and JSON
values it accepts - checked here, once, before anything is written.

The sizes below *are* the column sizes: ``db/models.py`` declares the ``recipients`` columns
with these constants, so the check and the schema cannot drift apart. The check never relies
on the database: SQLite does not enforce ``VARCHAR(n)``, and PostgreSQL refuses a value only
when the whole statement is sent (which would fail every profile of a sync with it).

Rules (each failure is an :class:`InvalidField` naming the field and the problem, never the
value, so the message may go into logs and onto the recipient's ``status_reason``):

- text is at most its column's size in characters (what ``VARCHAR(n)`` counts);
- text carries no control character except tab, line feed and carriage return (PostgreSQL
  refuses NUL outright; the others have no business on a postcard) and no unpaired surrogate
  (it cannot be encoded as UTF-8);
- properties are JSON that PostgreSQL's ``jsonb`` stores as sent: objects with text keys,
  arrays, text, finite numbers (no NaN or Infinity), booleans and null; no NUL or unpaired
  surrogate in any key or string; at most :data:`PROPERTIES_MAX_DEPTH` levels deep.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

#: Column sizes of ``recipients`` (characters).
EXTERNAL_PROFILE_ID_MAX = 128
EMAIL_MAX = 320
EMAIL_KEY_MAX = 320
NAME_MAX = 100
ADDRESS_LINE_MAX = 200
CITY_MAX = 100
REGION_MAX = 100
POSTAL_CODE_MAX = 20
COUNTRY_MAX = 2
ADDRESS_KEY_MAX = 300
SOURCE_MAX = 16
#: A recipient's offer code (generated or from the organization's pool).
OFFER_CODE_MAX = 32
#: An order's id at its source (Shopify GIDs, Klaviyo event ids, Ometria ids).
EXTERNAL_ORDER_ID_MAX = 128

#: Personalization properties nest at most this deep (``{"a": {"b": 1}}`` is 2 levels).
PROPERTIES_MAX_DEPTH = 32


class InvalidField(ValueError):
    """A value a recipient row cannot hold; ``str()`` names the field and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")

    def __reduce__(self) -> tuple[type[InvalidField], tuple[str, str]]:
        return type(self), (self.field, self.problem)


#: What PostgreSQL's text and jsonb cannot hold at all: NUL and unpaired surrogates.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def unstorable_character(text: str) -> str | None:
    """``"U+0000"`` for the first character PostgreSQL text cannot store, else ``None``.
    Free text from vendors (a webhook's detail) may hold any other character; the
    recipient's own fields are held to :func:`bad_character`, which refuses more."""
    found = _UNSTORABLE.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


#: Unicode's control characters (category Cc) but tab, newline and carriage return, and
#: the surrogates (Cs): one search instead of a category lookup per character (a test
#: compares it with the categories on every code point).
_BAD_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def bad_character(text: str) -> str | None:
    """The first character a text column must not hold (a control character but tab,
    newline and carriage return, or an unpaired surrogate), or ``None``."""
    found = _BAD_CHARACTER.search(text)
    return found.group() if found else None


def _describe_character(char: str) -> str:
    if unicodedata.category(char) == "Cs":
        return f"an unpaired surrogate (U+{ord(char):04X})"
    if char == "\x00":
        return "a NUL character (U+0000)"
    return f"a control character (U+{ord(char):04X})"


def check_text(field: str, value: str | None, limit: int) -> str | None:
    """``value`` unchanged when a column of ``limit`` characters can hold it.

    Raises :class:`InvalidField` ("address line 1 is 500 characters long; at most 200 fit",
    "first name contains a NUL character (U+0000)").
    """
    if value is None:
        return None
    bad = bad_character(value)
    if bad is not None:
        raise InvalidField(field, f"contains {_describe_character(bad)}")
    if len(value) > limit:
        raise InvalidField(field, f"is {len(value)} characters long; at most {limit} fit")
    return value


def profile_id_problem(profile_id: str) -> str | None:
    """Why a CDP profile id cannot identify a recipient (it is never echoed), or ``None``."""
    try:
        check_text("the profile id", profile_id, EXTERNAL_PROFILE_ID_MAX)
    except InvalidField as exc:
        return str(exc)
    return None


def _key_name(key: str) -> str:
    """A property key as it may appear in a message: JSON-quoted, escaped, cut at 40."""
    quoted = json.dumps(key, ensure_ascii=True)
    return quoted if len(quoted) <= 40 else quoted[:36] + '..."'


def check_properties(properties: Mapping[str, Any], field: str = "properties") -> dict[str, Any]:
    """A copy of ``properties`` when ``jsonb`` stores it as it is; else :class:`InvalidField`
    naming the path ("properties.\\"score\\" is NaN; JSON numbers are finite").

    Walks iteratively, so a deeply nested value never exhausts the interpreter's stack."""
    stack: list[tuple[Any, str, int]] = [(properties, field, 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, Mapping):
            if depth > PROPERTIES_MAX_DEPTH:
                raise InvalidField(field, f"nest more than {PROPERTIES_MAX_DEPTH} levels deep")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidField(path, f"has a {type(key).__name__} key; keys are text")
                if "\x00" in key or _has_surrogate(key):
                    raise InvalidField(f"{path} key", _string_problem(key))
                stack.append((item, f"{path}.{_key_name(key)}", depth + 1))
        elif isinstance(value, list | tuple):
            if depth > PROPERTIES_MAX_DEPTH:
                raise InvalidField(field, f"nest more than {PROPERTIES_MAX_DEPTH} levels deep")
            for index, item in enumerate(value):
                stack.append((item, f"{path}[{index}]", depth + 1))
        elif isinstance(value, str):
            if "\x00" in value or _has_surrogate(value):
                raise InvalidField(path, _string_problem(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidField(path, f"is {value}; JSON numbers are finite")
        elif value is not None and not isinstance(value, bool | int):
            raise InvalidField(path, f"is a {type(value).__name__}, not a JSON value")
    return _copy(properties)


def _has_surrogate(text: str) -> bool:
    return any(unicodedata.category(c) == "Cs" for c in text)


def _string_problem(text: str) -> str:
    if "\x00" in text:
        return "contains a NUL character (U+0000), which JSON in PostgreSQL refuses"
    return "contains an unpaired surrogate, which is not UTF-8"


def _copy(value: Any) -> Any:
    """A plain copy (dicts and lists) of a value :func:`check_properties` accepted."""
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(item) for item in value]
    return value


def json_type(value: Any) -> str:
    """How a reason names a JSON value's kind without quoting it: "null", "a boolean", "a
    number", "an object", "a list" (else the Python type's name)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
