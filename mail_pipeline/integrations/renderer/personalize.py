"""Personalization: a design and a recipient become the exact texts printed on the card.

The printed offer code is the recipient's own (:attr:`~.models.ProofRequest.offer_code`), else
the design's campaign-wide one; ``{offer_code}`` in a text names the same code, and the QR link
travels with it unchanged.

Placeholders are replaced by plain string substitution (never ``str.format``, which would let a
design reach attributes): ``{first_name}``, ``{first_name|friend}`` with a default, ``{{`` and
``}}`` for literal braces. A missing field with no default is dropped together with the
punctuation it leaves dangling, so ``"{first_name}, your treat is here"`` reads
``"Your treat is here"`` for a recipient without a first name. Names that arrive all lower- or
all upper-case (``"jane"``, ``"JANE"``) are capitalized; mixed case is left as written.

The functions are pure: equal inputs give equal texts, which keeps renders deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mail_pipeline.domain.addresses import normalize_country, normalize_postal_code
from mail_pipeline.domain.placeholders import (
    PERSONALIZED_TEXTS,
    PLACEHOLDER,
    placeholder_problems,
    placeholders,
    split_placeholder,
)
from mail_pipeline.integrations.renderer.models import (
    HOME_COUNTRY,
    PostcardContent,
    ProofRequest,
)

_DROPPED = "\x00"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WS = re.compile(r"[ \t]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
_REPEATED_COMMA = re.compile(r",\s*,")
_LEADING_PUNCT = re.compile(r"^[\s,;:.!?-]+")
_MAX_VALUE = 60

_COUNTRY_NAMES = {
    "US": "UNITED STATES",
    "GB": "UNITED KINGDOM",
    "CA": "CANADA",
    "IE": "IRELAND",
    "AU": "AUSTRALIA",
    "DE": "GERMANY",
    "FR": "FRANCE",
    "NL": "NETHERLANDS",
    "ES": "SPAIN",
    "IT": "ITALY",
}


def clean_value(value: object) -> str | None:
    """A field value fit to print: one line, no control characters, bounded length."""
    if value is None:
        return None
    text = _WS.sub(" ", _CONTROL.sub(" ", str(value)).replace("\n", " ")).strip()
    if not text:
        return None
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1].rstrip() + "…"


def name_case(value: str | None) -> str | None:
    """``jane`` / ``JANE`` -> ``Jane``, ``mary-jane o'neil`` -> ``Mary-Jane O'Neil``."""
    if not value or not (value.islower() or value.isupper()):
        return value
    return re.sub(r"[^\W\d_]+", lambda m: m.group(0)[0].upper() + m.group(0)[1:].lower(), value)


def fill(text: str, values: Mapping[str, str | None]) -> str:
    """Substitute placeholders in ``text``; see the module docstring for the rules."""
    problems = placeholder_problems("text", text)
    if problems:
        raise ValueError("; ".join(problems))
    dropped = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal dropped
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        placeholder = split_placeholder(match.group(1))
        value = values.get(placeholder.name) or clean_value(placeholder.default)
        if value:
            return value
        dropped = True
        return _DROPPED

    filled = PLACEHOLDER.sub(substitute, text)
    if not dropped:
        return filled
    return "\n".join(_tidy_line(line) for line in filled.split("\n"))


def _tidy_line(line: str) -> str:
    if _DROPPED not in line:
        return line
    starts_with_gap = line.lstrip().startswith(_DROPPED)
    line = line.replace(_DROPPED, "")
    line = _WS.sub(" ", line)
    line = _REPEATED_COMMA.sub(",", line)
    line = _SPACE_BEFORE_PUNCT.sub(r"\1", line).strip()
    if starts_with_gap:
        line = _LEADING_PUNCT.sub("", line)
        line = line[:1].upper() + line[1:]
    return line


def recipient_values(request: ProofRequest) -> dict[str, str | None]:
    """Everything a placeholder may name, extra properties first so known fields win."""
    first = name_case(clean_value(request.first_name))
    last = name_case(clean_value(request.last_name))
    country = normalize_country(request.country) or (clean_value(request.country) or "").upper()
    values: dict[str, str | None] = {str(k): clean_value(v) for k, v in request.properties.items()}
    values.update(
        first_name=first,
        last_name=last,
        full_name=" ".join(p for p in (first, last) if p) or None,
        city=clean_value(request.city),
        region=clean_value(request.region),
        postal_code=clean_value(normalize_postal_code(request.postal_code, country)),
        country=country or None,
        brand_name=clean_value(request.design.brand_name),
        offer_code=clean_value(offer_code(request)),
    )
    return values


def offer_code(request: ProofRequest) -> str | None:
    """The code printed on the card: the recipient's own, else the design's campaign-wide one."""
    code = request.offer_code or request.design.offer_code
    return code.strip() if code else None


def address_block(request: ProofRequest, values: Mapping[str, str | None]) -> tuple[str, ...]:
    """Name, street lines, locality in the destination country's order, foreign country."""
    name = values.get("full_name") or "Current Resident"
    city = values.get("city") or ""
    region = values.get("region") or ""
    postal = values.get("postal_code") or ""
    country = (values.get("country") or "").upper()
    lines = [name, *(clean_value(x) or "" for x in request.address_lines)]
    if country in ("US", "CA"):
        lines.append(f"{city}, {region} {postal}".replace(",  ", ", ").strip())
    elif country == "AU":
        lines.append(" ".join(p for p in (city.upper(), region, postal) if p))
    elif country in ("GB", "IE"):
        lines.extend(p for p in (city.upper(), postal) if p)
    else:
        lines.append(" ".join(p for p in (postal, city) if p))
    if country != HOME_COUNTRY[request.size]:
        lines.append(_COUNTRY_NAMES.get(country, country))
    return tuple(line for line in lines if line)


def defaults_used(request: ProofRequest) -> tuple[str, ...]:
    """Placeholder names printed with the design's default because the recipient has no
    value for them (sorted, once each): what the proof's metadata records."""
    values = recipient_values(request)
    used = {
        placeholder.name
        for text in PERSONALIZED_TEXTS
        for placeholder in placeholders(getattr(request.design, text))
        if not values.get(placeholder.name) and clean_value(placeholder.default)
    }
    return tuple(sorted(used))


def personalize(request: ProofRequest) -> PostcardContent:
    """The postcard this recipient gets, as final texts."""
    design = request.design
    values = recipient_values(request)
    return PostcardContent(
        size=design.size,
        template=design.template,
        brand_name=design.brand_name.strip(),
        headline=fill(design.headline, values),
        body=fill(design.body, values),
        offer_code=offer_code(request),
        back_message=fill(design.back_message, values),
        background_color=design.background_color,
        accent_color=design.accent_color,
        address_block=address_block(request, values),
        qr_url=request.qr_url,
    )
