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


def unparked_failure(result: object, metadata: Metadata, what: str) -> dg.Failure | None:
    """The failure a queue-draining op raises after its pass when messages bound for the
    dead-letter queue could not be moved there (``dead_letter_failures``): the pass's other
    work is committed and deleted, and those messages stay on their queue (they come back
    after the visibility timeout, and the queue's redrive policy parks them after its
    maximum receives), but a DLQ that refuses writes is an outage someone has to see, so the
    run fails instead of succeeding with a count nobody reads. ``None`` when all were parked."""
    failures = getattr(result, "dead_letter_failures", 0)
    if not failures:
        return None
    noun = "message" if failures == 1 else "messages"
    return dg.Failure(
        description=(
            f"{failures} {what} {noun} could not be moved to the dead-letter queue; they stay "
            "on their queue and come back after the visibility timeout (the rest of the pass "
            "is committed). Check that the DLQ exists and this role may send to it."
        ),
        metadata=metadata,
    )
