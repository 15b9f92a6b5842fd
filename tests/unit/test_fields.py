"""The one check of what a recipient row can hold: column sizes, characters, JSON values."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import String

from mail_pipeline.db.models import Recipient
from mail_pipeline.domain import fields
from mail_pipeline.domain.fields import (
    PROPERTIES_MAX_DEPTH,
    InvalidField,
    check_properties,
    check_text,
    profile_id_problem,
)


@pytest.mark.parametrize(
    ("column", "size"),
    [
        ("external_profile_id", fields.EXTERNAL_PROFILE_ID_MAX),
        ("email", fields.EMAIL_MAX),
        ("email_key", fields.EMAIL_KEY_MAX),
        ("first_name", fields.NAME_MAX),
        ("last_name", fields.NAME_MAX),
        ("address1", fields.ADDRESS_LINE_MAX),
        ("address2", fields.ADDRESS_LINE_MAX),
        ("city", fields.CITY_MAX),
        ("region", fields.REGION_MAX),
        ("postal_code", fields.POSTAL_CODE_MAX),
        ("country", fields.COUNTRY_MAX),
        ("address_key", fields.ADDRESS_KEY_MAX),
        ("source", fields.SOURCE_MAX),
    ],
)
def test_the_checked_sizes_are_the_column_sizes(column: str, size: int) -> None:
    column_type = Recipient.__table__.c[column].type
    assert isinstance(column_type, String) and column_type.length == size


def test_text_within_its_column_passes_unchanged() -> None:
    assert check_text("city", "x" * 100, 100) == "x" * 100
    assert check_text("city", "Zürich\tNord\r\n", 100) == "Zürich\tNord\r\n"
    assert check_text("city", None, 100) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x" * 101, "city is 101 characters long; at most 100 fit"),
        ("New\x00York", "city contains a NUL character (U+0000)"),
        ("New\x07York", "city contains a control character (U+0007)"),
        ("New\x7fYork", "city contains a control character (U+007F)"),
        ("New\ud800York", "city contains an unpaired surrogate (U+D800)"),
    ],
)
def test_text_that_does_not_fit_names_the_field_and_the_problem(value: str, message: str) -> None:
    with pytest.raises(InvalidField) as info:
        check_text("city", value, 100)
    assert str(info.value) == message
    assert "York" not in str(info.value)


def test_a_profile_id_that_cannot_be_stored_is_described_not_echoed() -> None:
    assert profile_id_problem("01ABC") is None
    assert profile_id_problem("x" * 129) == (
        "the profile id is 129 characters long; at most 128 fit"
    )
    assert profile_id_problem("01\x00A") == "the profile id contains a NUL character (U+0000)"


def test_json_properties_pass_as_a_plain_copy() -> None:
    properties = {"tier": "gold", "orders": [1, 2.5, True, None, {"sku": "A\x01"}], "big": 10**30}
    copy = check_properties(properties)
    assert copy == properties and copy is not properties


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"score": math.nan}, 'properties."score" is nan; JSON numbers are finite'),
        ({"score": math.inf}, 'properties."score" is inf; JSON numbers are finite'),
        ({"a": [1, {"b": -math.inf}]}, 'properties."a"[1]."b" is -inf; JSON numbers are finite'),
        ({"note": "a\x00b"}, 'properties."note" contains a NUL character'),
        ({"note": ["\ud83d"]}, 'properties."note"[0] contains an unpaired surrogate'),
        ({"a\x00": 1}, "properties key contains a NUL character"),
        ({"when": object()}, 'properties."when" is a object, not a JSON value'),
    ],
)
def test_properties_jsonb_would_not_store_as_sent_are_refused(
    properties: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidField) as info:
        check_properties(properties)
    assert str(info.value).startswith(message)


def test_properties_nest_at_most_the_limit() -> None:
    nested: dict[str, object] = {}
    inner = nested
    for _ in range(PROPERTIES_MAX_DEPTH - 1):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    assert check_properties(nested) == nested
    deep: list[object] = []
    for _ in range(5000):  # far deeper than the interpreter's recursion limit
        deep = [deep]
    with pytest.raises(InvalidField, match=f"nest more than {PROPERTIES_MAX_DEPTH} levels"):
        check_properties({"deep": deep})


def test_bad_characters_are_exactly_the_controls_but_tab_and_newlines_and_surrogates() -> None:
    import sys
    import unicodedata

    from mail_pipeline.domain.fields import bad_character

    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        expected = category == "Cs" or (category == "Cc" and char not in "\t\n\r")
        assert (bad_character(f"ok{char}") == char) is expected, hex(code)
