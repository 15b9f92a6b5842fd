"""Money in minor units of ISO 4217 currencies: exponents, rounding, what cannot be stored."""

from __future__ import annotations

from decimal import Decimal

import pycountry
import pytest

from mail_pipeline.domain.money import (
    EXPONENTS,
    MAX_MINOR,
    NOT_ORDER_CURRENCIES,
    InvalidAmount,
    currency_code,
    exponent,
    from_minor,
    to_minor,
)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.34", "USD", 1234),
        (29.99, "USD", 2999),  # the float's shortest form, not 29.989999...
        (1500, "JPY", 1500),
        ("1500", "KRW", 1500),
        ("1.234", "KWD", 1234),
        ("2.5", "BHD", 2500),
        ("0.0001", "CLF", 1),
        ("10", "GBP", 1000),
        ("0", "EUR", 0),
        ("-0.00", "USD", 0),
        (Decimal("7.005"), "USD", 701),  # half away from zero
        ("7.004", "USD", 700),
        ("99.5", "JPY", 100),
        (" 3.10 ", "usd", 310),
    ],
)
def test_amounts_become_minor_units_by_the_currencys_exponent(
    amount: object, currency: str, minor: int
) -> None:
    assert to_minor(amount, currency) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "problem"),
    [
        ("-0.01", "USD", "negative"),
        ("NaN", "USD", "not a finite number"),
        (float("inf"), "USD", "not a finite number"),
        ("1e40", "USD", "too large"),
        ("1E+999999", "USD", "too large"),
        (str(MAX_MINOR // 100 + 1), "USD", "too large"),
        ("twelve", "USD", "not a number"),
        (True, "USD", "boolean"),
        ("1", "XAU", "no minor unit"),
        ("1", "XXX", "no minor unit"),
        ("1", "ZZZ", "not an ISO 4217 currency"),
        ("1", "US", "three-letter"),
        ("1", "ÜSD", "three-letter"),
    ],
)
def test_what_cannot_be_an_orders_amount_is_refused(
    amount: object, currency: str, problem: str
) -> None:
    with pytest.raises(InvalidAmount, match=problem):
        to_minor(amount, currency)  # type: ignore[arg-type]


def test_the_largest_storable_amount_is_accepted() -> None:
    assert to_minor(str(MAX_MINOR), "JPY") == MAX_MINOR


def test_the_exponent_table_names_only_iso_currencies_pycountry_knows() -> None:
    known = {currency.alpha_3 for currency in pycountry.currencies}
    assert set(EXPONENTS) <= known
    assert NOT_ORDER_CURRENCIES.issubset(known)
    assert not set(EXPONENTS) & NOT_ORDER_CURRENCIES


def test_every_iso_currency_has_an_exponent_or_is_refused() -> None:
    for currency in pycountry.currencies:
        code = currency.alpha_3
        if code in NOT_ORDER_CURRENCIES:
            with pytest.raises(InvalidAmount):
                exponent(code)
        else:
            assert exponent(code) in (0, 2, 3, 4), code
    assert [exponent(c) for c in ("USD", "GBP", "EUR", "JPY", "KWD", "CLF")] == [2, 2, 2, 0, 3, 4]


def test_minor_units_render_back_with_the_currencys_digits() -> None:
    assert from_minor(1999, "USD") == Decimal("19.99")
    assert from_minor(1500, "JPY") == Decimal(1500)
    assert from_minor(1234, "KWD") == Decimal("1.234")
    assert currency_code(" gbp ") == "GBP"
