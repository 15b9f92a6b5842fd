"""Money as the order sources send it, in minor units of an ISO 4217 currency.

Sources send amounts as decimal text (Shopify's ``"12.34"``), JSON numbers (Klaviyo's
``$value``, Ometria's ``grand_total``) or integers; orders are stored in *minor units* of their
currency (cents, pence, yen), which is ``amount * 10 ** exponent`` where the exponent is the
currency's ISO 4217 "minor unit": 0 for JPY or KRW, 3 for KWD or BHD, 2 for most.

Where the figures come from:

- which codes are currencies: ISO 4217 as ``pycountry`` ships it (the Debian ``iso-codes``
  list, kept current with ISO's amendments - a maintained source already installed);
- the exponent: ISO 4217's list one ("minor unit" column). ``pycountry`` does not carry it
  and ``babel``'s CLDR digits differ from ISO on purpose for some currencies (CLDR gives
  cash rounding, ISO the accounting unit the shops report in), so the currencies whose minor
  unit is *not* 2 are written below (:data:`EXPONENTS`); every other currency of the list has
  2. Codes with no minor unit at all (precious metals, SDR, the bond-market units, the test
  and "no currency" codes) are no order's currency and are refused. A test checks that every
  code written here is one ``pycountry`` knows, so a withdrawn code cannot linger silently.

Rules (:func:`to_minor`): the amount must be finite and not negative; more decimals than the
currency has are rounded to the nearest minor unit, halves away from zero (a source that
computed tax to four places still reports whole cents); the result must fit a signed 64-bit
column (:data:`MAX_MINOR`), which is what PostgreSQL's ``bigint`` and SQLite's integer hold.
"""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import pycountry

#: ISO 4217 currencies whose minor unit is not 2 (list one, with amendments to 2025).
EXPONENTS: dict[str, int] = {
    # no minor unit
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # thousandths
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    # ten-thousandths (units of account of Chile and Uruguay)
    "CLF": 4,
    "UYW": 4,
}
#: ISO 4217 codes without a minor unit ("N.A."): metals, SDR, bond-market units, testing,
#: no currency, and the Arab Monetary Fund's accounting dinar. Never an order's currency.
NOT_ORDER_CURRENCIES = frozenset(
    {
        "XAD",
        "XAG",
        "XAU",
        "XBA",
        "XBB",
        "XBC",
        "XBD",
        "XDR",
        "XPD",
        "XPT",
        "XSU",
        "XTS",
        "XUA",
        "XXX",
    }
)
#: The largest amount in minor units a ``bigint`` column holds.
MAX_MINOR = 2**63 - 1


class InvalidAmount(ValueError):
    """An amount or currency an order cannot be stored with; ``str()`` says why."""


@functools.cache
def _iso_codes() -> frozenset[str]:
    return frozenset(currency.alpha_3 for currency in pycountry.currencies)


def currency_code(value: str) -> str:
    """``value`` as an ISO 4217 code an order can carry (upper case), or :class:`InvalidAmount`."""
    code = value.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise InvalidAmount("the currency is not a three-letter ISO 4217 code")
    if code not in _iso_codes():
        raise InvalidAmount(f"{code} is not an ISO 4217 currency")
    if code in NOT_ORDER_CURRENCIES:
        raise InvalidAmount(f"{code} has no minor unit; it is not a currency of orders")
    return code


def exponent(currency: str) -> int:
    """The ISO 4217 minor unit of ``currency`` (a code :func:`currency_code` accepts)."""
    return EXPONENTS.get(currency_code(currency), 2)


def to_minor(amount: str | int | float | Decimal, currency: str) -> int:
    """``amount`` of ``currency`` in minor units (see the module docstring for the rules)."""
    if isinstance(amount, bool):
        raise InvalidAmount("the amount is a boolean, not a number")
    try:
        # str() first: a float's shortest repr (29.99, not 29.989999...) is what was meant.
        value = Decimal(amount.strip() if isinstance(amount, str) else str(amount))
    except (InvalidOperation, ValueError):
        raise InvalidAmount("the amount is not a number") from None
    if not value.is_finite():
        raise InvalidAmount("the amount is not a finite number")
    if value < 0:
        raise InvalidAmount("the amount is negative")
    if value.adjusted() > 30:
        raise InvalidAmount("the amount is too large to store")
    minor = int(value.scaleb(exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if minor > MAX_MINOR:
        raise InvalidAmount("the amount is too large to store")
    return minor


def from_minor(minor: int, currency: str) -> Decimal:
    """The decimal amount of ``minor`` units of ``currency`` (sandboxes render with it)."""
    return Decimal(minor).scaleb(-exponent(currency))
