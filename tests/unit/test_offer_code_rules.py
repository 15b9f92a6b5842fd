"""Offer-code rules: generated codes, uploaded lines and the QR code's target."""

from __future__ import annotations

import math
import re
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail_pipeline.domain.fields import OFFER_CODE_MAX
from mail_pipeline.domain.offer_codes import (
    ALPHABET,
    ENTROPY_BITS,
    PREFIX_MAX,
    QR_URL_MAX,
    PoolLine,
    code_problem,
    generate_code,
    normalize_prefix,
    prefix_problem,
    qr_target,
    qr_template_problem,
    read_pool_lines,
    shop_url_problem,
)

GENERATED = re.compile(r"^(?:[A-Z0-9]{1,12}-)?[%s]{4}-[%s]{4}-[%s]{4}$" % ((ALPHABET,) * 3))


def test_the_alphabet_leaves_out_characters_people_confuse_and_vowels() -> None:
    assert len(set(ALPHABET)) == len(ALPHABET) == 28
    assert not set("01OIL") & set(ALPHABET)
    assert not set("AEIOU") & set(ALPHABET)
    assert set(ALPHABET) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def test_generated_codes_carry_at_least_50_bits() -> None:
    random_part = generate_code("TRAIL").removeprefix("TRAIL-").replace("-", "")
    bits = len(random_part) * math.log2(len(ALPHABET))
    assert bits >= 50
    assert math.isclose(ENTROPY_BITS, bits)


def test_a_generated_code_is_its_prefix_and_three_groups_of_four() -> None:
    code = generate_code("trail")
    assert GENERATED.match(code), code
    assert code.startswith("TRAIL-")
    assert len(code) == len("TRAIL-") + 14
    assert GENERATED.match(generate_code(None)) and len(generate_code(None)) == 14
    assert len(generate_code("A" * PREFIX_MAX)) <= OFFER_CODE_MAX


def test_generation_draws_every_symbol_from_the_given_source() -> None:
    symbols = iter("23456789BCDF")
    assert generate_code("X", choice=lambda alphabet: next(symbols)) == "X-2345-6789-BCDF"


@settings(max_examples=200)
@given(prefix=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True)))
def test_every_generated_code_fits_the_column_and_the_alphabet(prefix: str | None) -> None:
    code = generate_code(prefix)
    assert GENERATED.match(code)
    assert len(code) <= OFFER_CODE_MAX
    assert code_problem(code) is None, "a generated code is also a valid uploaded code"


def test_two_thousand_generated_codes_do_not_repeat() -> None:
    codes = {generate_code("P", choice=secrets.choice) for _ in range(2000)}
    assert len(codes) == 2000


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("TRAIL", None),
        ("trail20", None),
        ("A" * 13, "1-12 letters"),
        ("TRAIL-", "1-12 letters"),
        ("TR AIL", "1-12 letters"),
        ("ÉTÉ", "1-12 letters"),
        (12, "must be text"),
    ],
)
def test_prefix_rules(prefix: object, problem: str | None) -> None:
    found = prefix_problem(prefix)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_prefixes_are_upper_cased_and_blank_means_none() -> None:
    assert normalize_prefix(" trail ") == "TRAIL"
    assert normalize_prefix("  ") is None and normalize_prefix(None) is None
    with pytest.raises(ValueError, match="offer_code_prefix"):
        normalize_prefix("no-good")


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("SAVE10-AB12", True),
        ("WELCOME_2026", True),
        ("ABCDEF", True),
        ("A" * 32, True),
        ("ABCDE", False),
        ("A" * 33, False),
        ("SAVE 10X", False),
        ("-SAVE10", False),
        ("SAVE10-", False),
        ("ÉTÉ2026", False),
        ("SAVE/10X", False),
    ],
)
def test_uploaded_code_rules(code: str, ok: bool) -> None:
    assert (code_problem(code) is None) is ok


def test_uploaded_lines_are_normalized_checked_and_deduplicated() -> None:
    lines = [
        "\ufeffCode,Value",
        " save10-ab12 ,10%",
        "",
        '"WELCOME_2026","x"',
        "SAVE10-AB12",
        "bad code",
        ",empty first column",
        "abc",
    ]
    assert read_pool_lines(lines) == [
        PoolLine(2, "SAVE10-AB12"),
        PoolLine(4, "WELCOME_2026"),
        PoolLine(5, None, "duplicate of line 2"),
        PoolLine(6, None, code_problem("BAD CODE")),
        PoolLine(7, None, "the first column is empty"),
        PoolLine(8, None, code_problem("ABC")),
    ]


def test_only_the_first_line_can_be_a_header() -> None:
    assert read_pool_lines(["SAVE10-AB12", "offer_code"]) == [
        PoolLine(1, "SAVE10-AB12"),
        PoolLine(2, "OFFER_CODE"),
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://shop.example.com", None),
        ("https://shop.example.com/en-gb/", None),
        ("http://shop.example.com", "https://"),
        ("https://user:pw@shop.example.com", "credentials"),
        ("https://localhost", "public host"),
        ("https://shop.example.com/?ref=mail", "query"),
        ("https://shop.example.com/#top", "query"),
        ("https://shop example.com", "spaces"),
        ("shop.example.com", "https://"),
        ("https://shop.example.com/" + "a" * 150, "too long"),
    ],
)
def test_shop_url_rules(url: str, problem: str | None) -> None:
    found = shop_url_problem(url)
    assert (found is None) if problem is None else (problem in (found or "")), found


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("https://shop.example.com/discount/{code}?redirect=/collections/sale", None),
        ("https://go.example.com/p?c={code}", None),
        ("https://shop.example.com/discount/", "exactly once"),
        ("https://shop.example.com/{code}/{code}", "exactly once"),
        ("https://shop.example.com/{code}?n={first_name}", "no placeholder but"),
        ("http://shop.example.com/{code}", "https://"),
        ("https://shop.example.com/{code}?" + "x" * 150, "too long"),
    ],
)
def test_qr_template_rules(template: str, problem: str | None) -> None:
    found = qr_template_problem(template)
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_the_qr_target_is_the_template_else_the_shops_discount_link_else_none() -> None:
    shop = "https://shop.example.com/"
    template = "https://go.example.com/r?code={code}"
    assert qr_target("AB-12", shop_url=shop, template=None) == (
        "https://shop.example.com/discount/AB-12"
    )
    assert qr_target("AB-12", shop_url=shop, template=template) == (
        "https://go.example.com/r?code=AB-12"
    )
    assert qr_target("AB-12", shop_url=None, template=None) is None
    assert qr_target(None, shop_url=shop, template=template) is None


def test_the_longest_code_keeps_a_valid_shop_url_within_the_qr_limit() -> None:
    longest_ok = "https://s.example.com/" + "a" * (QR_URL_MAX - len("https://s.example.com/") - 42)
    assert shop_url_problem(longest_ok) is None
    target = qr_target("W" * OFFER_CODE_MAX, shop_url=longest_ok, template=None) or ""
    assert len(target) <= QR_URL_MAX
