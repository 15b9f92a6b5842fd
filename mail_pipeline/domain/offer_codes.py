"""Offer codes: each recipient's own code, printed on its postcard and carried by its QR code.

An order that redeems a recipient's code is attributed to that recipient first, so a code must
be unique inside its organization (the database holds ``(organization_id, offer_code)``
unique on ``recipients`` and ``(organization_id, code)`` on the uploaded pool) and must not be
guessable from another postcard.

Generated codes (:func:`generate_code`): an optional prefix from the campaign's design
(``offer_code_prefix``: 1-:data:`PREFIX_MAX` letters or digits, upper-cased), a hyphen, then
:data:`RANDOM_LENGTH` characters drawn with :mod:`secrets` from :data:`ALPHABET` in groups of
:data:`GROUP` (``TRAIL-7KQ4-M9XP-R2WD``). The alphabet leaves out the characters people
misread or mistype (``0 O 1 I L``) and the vowels (``A E U``; so no word can appear on a
brand's postcard by chance), so its 28 symbols give ``12 * log2(28)`` = 57.7 bits of entropy
(:data:`ENTROPY_BITS`; at least :data:`MIN_ENTROPY_BITS`); the longest code is 27
characters, inside the 32 of :data:`~mail_pipeline.domain.fields.OFFER_CODE_MAX`. A drawn code
already in use in the organization is drawn again by the caller.

Uploaded codes (:func:`code_problem`): the brand's own codes (made in its shop), normalized
as orders' discount codes are (:func:`~mail_pipeline.domain.orders.normalize_code`), then
:data:`UPLOAD_MIN`-:data:`~mail_pipeline.domain.fields.OFFER_CODE_MAX` characters of ``A-Z``,
``0-9``, ``-`` and ``_``, starting and ending with a letter or digit. How guessable they are is
the brand's choice; the pool only guarantees each goes to one recipient.

QR target (:func:`qr_target`): the design's ``qr_url_template`` with ``{code}`` replaced, else
``{shop_url}/discount/{code}`` (the shop's discount link: it applies the code and opens the
shop), else no QR at all - the code is still printed. Both must be https URLs without
credentials; the target is at most :data:`QR_URL_MAX` characters with the longest code, so
the printed QR keeps modules a phone can read.
"""

from __future__ import annotations

import csv
import math
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from mail_pipeline.domain.fields import OFFER_CODE_MAX
from mail_pipeline.domain.orders import normalize_code

#: Symbols of generated codes: digits and capitals without 0, O, 1, I, L and the vowels.
ALPHABET = "23456789BCDFGHJKMNPQRSTVWXYZ"
#: Random characters in a generated code, printed in groups of :data:`GROUP`.
RANDOM_LENGTH = 12
GROUP = 4
ENTROPY_BITS = RANDOM_LENGTH * math.log2(len(ALPHABET))
MIN_ENTROPY_BITS = 50
PREFIX_MAX = 12
#: The shortest code a pool upload accepts.
UPLOAD_MIN = 6
#: The longest QR target URL a design may produce (with a code of the maximum length).
QR_URL_MAX = 160
#: Where the shop's discount link lives under ``shop_url`` (Shopify's form).
DISCOUNT_PATH = "/discount/"
CODE_PLACEHOLDER = "{code}"

_PREFIX = re.compile(rf"^[A-Z0-9]{{1,{PREFIX_MAX}}}$")
_UPLOADED = re.compile(r"^[A-Z0-9](?:[A-Z0-9_-]*[A-Z0-9])?$")
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f<>\"\\^`|]")
#: First-column values that mark a header line in an uploaded file (normalized).
HEADER_NAMES = frozenset(
    {"CODE", "CODES", "OFFER CODE", "OFFER_CODE", "DISCOUNT CODE", "DISCOUNT_CODE"}
)

assert ENTROPY_BITS >= MIN_ENTROPY_BITS
assert PREFIX_MAX + 1 + RANDOM_LENGTH + (RANDOM_LENGTH - 1) // GROUP <= OFFER_CODE_MAX


# -- generated codes ---------------------------------------------------------------------------
def prefix_problem(prefix: object) -> str | None:
    """Why a design's ``offer_code_prefix`` cannot be used, or ``None``."""
    if not isinstance(prefix, str):
        return "offer_code_prefix must be text"
    if not _PREFIX.match(prefix.strip().upper()):
        return f"offer_code_prefix must be 1-{PREFIX_MAX} letters (A-Z) or digits"
    return None


def normalize_prefix(prefix: str | None) -> str | None:
    """A valid prefix upper-cased; ``None`` or blank means no prefix."""
    if prefix is None or not prefix.strip():
        return None
    problem = prefix_problem(prefix)
    if problem:
        raise ValueError(problem)
    return prefix.strip().upper()


def generate_code(
    prefix: str | None = None, *, choice: Callable[[str], str] = secrets.choice
) -> str:
    """A fresh random code, ``PREFIX-XXXX-XXXX-XXXX`` (see the module docstring).

    ``choice`` draws one symbol (:func:`secrets.choice`; tests pass their own)."""
    symbols = "".join(choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    body = "-".join(symbols[i : i + GROUP] for i in range(0, RANDOM_LENGTH, GROUP))
    head = normalize_prefix(prefix)
    return f"{head}-{body}" if head else body


# -- uploaded codes ----------------------------------------------------------------------------
def code_problem(code: str) -> str | None:
    """Why a normalized uploaded code cannot go into a pool, or ``None``."""
    if len(code) < UPLOAD_MIN:
        return f"a code needs at least {UPLOAD_MIN} characters"
    if len(code) > OFFER_CODE_MAX:
        return f"a code has at most {OFFER_CODE_MAX} characters"
    if not _UPLOADED.match(code):
        return (
            "a code holds only letters A-Z, digits, '-' and '_', and starts and ends with a "
            "letter or digit"
        )
    return None


@dataclass(frozen=True)
class PoolLine:
    """One line of an uploaded file: its normalized code, or why it was refused."""

    line: int
    code: str | None
    problem: str | None = None


def read_pool_lines(lines: Iterable[str]) -> list[PoolLine]:
    """The codes of an uploaded file, one per line (or the first column of a CSV).

    Blank lines are ignored; a first line whose first column is a column name
    (:data:`HEADER_NAMES`) is a header. Each other line is normalized and checked
    (:func:`code_problem`); a code seen on an earlier line is refused as its duplicate.
    Line numbers count from 1, as an editor shows them."""
    out: list[PoolLine] = []
    first_seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            row = next(csv.reader([text]), [])
        except csv.Error:
            row = [text]
        raw = row[0] if row else ""
        code = normalize_code(raw)
        if number == 1 and code in HEADER_NAMES:
            continue
        if not code:
            out.append(PoolLine(number, None, "the first column is empty"))
            continue
        problem = code_problem(code)
        if problem:
            out.append(PoolLine(number, None, problem))
        elif code in first_seen:
            out.append(PoolLine(number, None, f"duplicate of line {first_seen[code]}"))
        else:
            first_seen[code] = number
            out.append(PoolLine(number, code))
    return out


# -- the QR code's target ---------------------------------------------------------------------
def _https_problem(label: str, url: str, *, allow_query: bool) -> str | None:
    if _URL_FORBIDDEN.search(url):
        return f"{label} holds spaces or characters a URL cannot carry"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{label} is not a URL"
    if parts.scheme != "https" or not parts.hostname:
        return f"{label} must be an https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return f"{label} must not carry credentials"
    if "." not in parts.hostname:
        return f"{label} must name a public host"
    if port is not None and not 0 < port < 65536:
        return f"{label} has an invalid port"
    if not allow_query and (parts.query or parts.fragment or "?" in url or "#" in url):
        return f"{label} must not carry a query or fragment (use qr_url_template)"
    return None


def _longest_code() -> str:
    return "W" * OFFER_CODE_MAX


def shop_url_problem(url: object) -> str | None:
    """Why a design's ``shop_url`` cannot carry codes, or ``None``."""
    if not isinstance(url, str):
        return "shop_url must be text"
    problem = _https_problem("shop_url", url.strip(), allow_query=False)
    if problem:
        return problem
    if len(discount_url(url, _longest_code())) > QR_URL_MAX:
        return f"shop_url is too long for a QR code (the link must fit {QR_URL_MAX} characters)"
    return None


def qr_template_problem(template: object) -> str | None:
    """Why a design's ``qr_url_template`` cannot be used, or ``None``."""
    if not isinstance(template, str):
        return "qr_url_template must be text"
    if template.count(CODE_PLACEHOLDER) != 1:
        return "qr_url_template must hold {code} exactly once"
    if "{" in template.replace(CODE_PLACEHOLDER, "") or "}" in template.replace(
        CODE_PLACEHOLDER, ""
    ):
        return "qr_url_template may hold no placeholder but {code}"
    filled = fill_template(template, _longest_code())
    problem = _https_problem("qr_url_template", filled, allow_query=True)
    if problem:
        return problem
    if len(filled) > QR_URL_MAX:
        return (
            f"qr_url_template is too long for a QR code (the link must fit {QR_URL_MAX} characters)"
        )
    return None


def discount_url(shop_url: str, code: str) -> str:
    """``https://shop.example/discount/CODE``: the shop's discount link for ``code``."""
    return shop_url.strip().rstrip("/") + DISCOUNT_PATH + quote(code, safe="")


def fill_template(template: str, code: str) -> str:
    return template.strip().replace(CODE_PLACEHOLDER, quote(code, safe=""))


def qr_target(code: str | None, *, shop_url: str | None, template: str | None) -> str | None:
    """What the postcard's QR code opens for ``code``: the template, else the shop's discount
    link, else ``None`` (no QR; the code is still printed). Inputs are the validated design's."""
    if not code:
        return None
    if template:
        return fill_template(template, code)
    if shop_url:
        return discount_url(shop_url, code)
    return None


def qr_url_problem(url: str) -> str | None:
    """Why a QR target handed to a renderer cannot be printed, or ``None``."""
    problem = _https_problem("the QR link", url, allow_query=True)
    if problem:
        return problem
    if len(url) > QR_URL_MAX:
        return f"the QR link is longer than {QR_URL_MAX} characters"
    return None
