"""The placeholder language of postcard design texts, in one place.

A design text holds ``{name}`` or ``{name|default}`` placeholders; ``{{`` and ``}}`` are literal
braces. The renderer (``integrations.renderer``) validates and fills texts with these rules,
and profile enrichment (:mod:`mail_pipeline.domain.profile_enrichment`) reads which names a
design uses with the very same ones, so the two can never disagree about what a placeholder is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

#: One token: ``{{``, ``}}``, a ``{...}`` placeholder (its body in group 1), or a stray brace.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
PLACEHOLDER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Names the renderer fills from the recipient's own columns and the design, never from the
#: CDP's profile properties; every other name is a key of ``recipients.properties``.
KNOWN_FIELDS = frozenset(
    {
        "first_name",
        "last_name",
        "full_name",
        "city",
        "region",
        "postal_code",
        "country",
        "brand_name",
        "offer_code",
    }
)

#: The design texts the renderer personalizes (the brand name is printed as written).
PERSONALIZED_TEXTS = ("headline", "body", "back_message")


@dataclass(frozen=True)
class Placeholder:
    name: str
    #: The text after ``|`` as written (``None``: no default given).
    default: str | None


def split_placeholder(body: str) -> Placeholder:
    """``"loyalty_tier|member"`` -> ``Placeholder("loyalty_tier", "member")``."""
    name, bar, default = body.partition("|")
    return Placeholder(name.strip(), default if bar else None)


def placeholder_problems(label: str, text: str) -> list[str]:
    """Problems with ``{name}`` / ``{name|default}`` placeholders in a design text."""
    problems = []
    for match in PLACEHOLDER.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            problems.append(
                f"{label} has an unmatched {token!r} at position {match.start()} "
                "(write {{ or }} for a literal brace)"
            )
            continue
        if not PLACEHOLDER_NAME.match(split_placeholder(match.group(1)).name):
            problems.append(f"{label} has an invalid placeholder {token!r}")
    return problems


def placeholders(text: str) -> Iterator[Placeholder]:
    """The well-formed placeholders of ``text``, in order (literal and stray braces and
    invalid names are not placeholders; :func:`placeholder_problems` reports them)."""
    for match in PLACEHOLDER.finditer(text):
        if match.group(1) is None:
            continue
        placeholder = split_placeholder(match.group(1))
        if PLACEHOLDER_NAME.match(placeholder.name):
            yield placeholder
