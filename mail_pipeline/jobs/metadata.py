"""Run metadata: totals per run, a few examples, and reasons a person can read."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import dagster as dg

MAX_ROWS = 25

#: Run or output metadata: plain values (str, int, float, bool) or ``dg.MetadataValue``s.
Metadata = dict[str, Any]


def reasons_table(reasons: Mapping[int, str], *, heading: str = "recipient") -> dg.MetadataValue:
    """A markdown table of the first reasons (the rest are counted, and are on each
    recipient's ``status_reason``)."""
    rows = [f"| {heading} | reason |", "|---|---|"]
    for recipient_id, reason in list(reasons.items())[:MAX_ROWS]:
        rows.append(f"| {recipient_id} | {reason.replace('|', '/')} |")
    if len(reasons) > MAX_ROWS:
        rows.append(f"| ... | {len(reasons) - MAX_ROWS} more |")
    return dg.MetadataValue.md("\n".join(rows))


def link(url: str) -> dg.MetadataValue:
    if url.startswith("file://"):
        return dg.MetadataValue.path(url.removeprefix("file://"))
    return dg.MetadataValue.url(url)


def counts(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: int(value) for key, value in values.items()}


def counts_metadata(result: object) -> Metadata:
    """A result dataclass's counts (its int fields) and lists (non-empty tuples, as JSON)."""
    metadata: Metadata = {}
    for f in dataclasses.fields(result):  # type: ignore[arg-type]
        value = getattr(result, f.name)
        if isinstance(value, int):
            metadata[f.name] = value
        elif isinstance(value, tuple) and value:
            metadata[f.name] = dg.MetadataValue.json(list(value))
    return metadata
