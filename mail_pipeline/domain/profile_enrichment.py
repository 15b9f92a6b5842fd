"""Profile enrichment rules: which CDP properties a design needs, when a recipient's are
fetched again, and how fetched values join the properties it already has.

- :func:`design_properties`: the placeholder names of a design's personalized texts that are
  CDP profile properties (every name but the renderer's :data:`KNOWN_FIELDS`), read with the
  renderer's own placeholder rules (:mod:`mail_pipeline.domain.placeholders`).
- The refresh rule: recipients not yet proofed (AddressEnrichable, Pending) whose
  properties were fetched less than :data:`REFRESH_AFTER` (24 hours) ago are skipped; the
  others (never fetched, or fetched longer ago) are fetched.
- :func:`merge_properties`: the CDP is the source of truth for the properties a design uses.
  A fetched value replaces the stored one; a property the profile does not have (absent, null
  or blank text) is removed, so the proof prints the design's default rather than a stale
  value; a value a postcard cannot print (an object, a list, a boolean) or the database cannot
  store (``check_properties``: NaN, NUL, ...) is dropped with a reason and the stored value is
  kept. Properties the designs do not use are never touched. Merging never raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from mail_pipeline.domain.fields import InvalidField, check_properties, json_type
from mail_pipeline.domain.placeholders import KNOWN_FIELDS, PERSONALIZED_TEXTS, placeholders
from mail_pipeline.domain.recipients import RecipientStatus

#: A recipient's properties are fetched again once this long has passed since the last time.
REFRESH_AFTER = timedelta(hours=24)
#: Not yet proofed: what a proof will still be made for.
ENRICHABLE_STATUSES = (RecipientStatus.ADDRESS_ENRICHABLE, RecipientStatus.PENDING)


class DesignTexts(Protocol):
    """What :func:`design_properties` reads of a design (the renderer's ``PostcardDesign``)."""

    @property
    def headline(self) -> str: ...
    @property
    def body(self) -> str: ...
    @property
    def back_message(self) -> str: ...


def design_properties(design: DesignTexts) -> frozenset[str]:
    """Names of the CDP properties a design prints (``{loyalty_tier|member}`` ->
    ``loyalty_tier``); the recipient's own fields (``{first_name}``) are not among them."""
    return frozenset(
        placeholder.name
        for text in PERSONALIZED_TEXTS
        for placeholder in placeholders(getattr(design, text))
        if placeholder.name not in KNOWN_FIELDS
    )


def refresh_cutoff(now: datetime) -> datetime:
    """Recipients enriched before this moment (or never) are due."""
    return now - REFRESH_AFTER


def needs_refresh(enriched_at: datetime | None, now: datetime) -> bool:
    """The refresh rule for one recipient (the database query applies the same cutoff)."""
    return enriched_at is None or enriched_at < refresh_cutoff(now)


@dataclass(frozen=True)
class Merge:
    """The recipient's new properties and what happened to each wanted name."""

    properties: dict[str, Any]
    #: Names given a value from the CDP.
    set: tuple[str, ...] = ()
    #: Names the profile does not have (the design's default will print).
    missing: tuple[str, ...] = ()
    #: Names whose CDP value was refused, with the reason (the stored value is kept).
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.set or self.missing)


def _value_problem(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return f"properties.{name} is {json_type(value)}; a postcard prints text or a number"
    try:
        check_properties({name: value})
    except InvalidField as exc:
        return str(exc)
    return None


def merge_properties(
    existing: Mapping[str, Any] | None,
    fetched: Mapping[str, Any],
    wanted: Iterable[str],
) -> Merge:
    """Join the CDP's ``fetched`` properties for the ``wanted`` names into ``existing``
    (rules in the module docstring). ``existing`` is not modified."""
    properties = dict(existing or {})
    set_: list[str] = []
    missing: list[str] = []
    dropped: dict[str, str] = {}
    for name in sorted(set(wanted)):
        value = fetched.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(name)
            properties.pop(name, None)
            continue
        problem = _value_problem(name, value)
        if problem is not None:
            dropped[name] = problem
            continue
        set_.append(name)
        properties[name] = value
    return Merge(properties, tuple(set_), tuple(missing), dropped)
