"""The provider-neutral face of address enrichment: people in, postal addresses out, in batches.

Recipients whose postal address is unknown (``AddressEnrichable``: we know their email and
maybe their name) are sent to an identity-resolution vendor in batches; some time later the
batch is ready and names, by our own opaque reference, the people the vendor found an address
for. Nothing here knows a vendor, a database or Dagster.

The contract of :class:`AddressEnricher`:

- ``submit(batch_name, people)`` is **idempotent by** ``batch_name``. A vendor batch is a chain
  of creates (upload, dataset, ..., the billed export), and the caller may crash after any of
  them; calling ``submit`` again with the same name and the same people looks up, by name,
  what the first call created, reuses it and creates only what is missing, so one batch name
  never makes a second billed export. The returned id is the same on every call.
- ``poll(batch_id)`` is a harmless read: ``running`` until the vendor is done, then ``ready``
  with the matches (possibly none) or ``failed`` with the vendor's reason. Polling a ready
  batch again answers the same matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class IdentityRow:
    """One person to find an address for.

    ``reference`` is an opaque key we assign (a hash of our own ids, never the raw email); it is
    how the answer is joined back. The other fields are hints; a person without an email can
    rarely be matched.
    """

    reference: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    postcode: str | None = None


@dataclass(frozen=True)
class AppendedAddress:
    """A postal address the vendor appended to the person ``reference``.

    ``country`` is ISO 3166 alpha-2; ``state`` the region's code (a US state's two letters);
    ``postcode`` as the postal service writes it (``12345`` or ``12345-6789`` in the US).
    """

    reference: str
    line1: str
    line2: str | None
    city: str
    state: str
    postcode: str
    country: str


class BatchState(StrEnum):
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class BatchPoll:
    """Where a batch is. ``matches`` only when ``ready``; ``reason`` only when ``failed``.

    ``skipped`` counts rows of the vendor's answer that could not be read as an address (each
    logged with its reason); they are neither matches nor failures of the batch.
    """

    state: BatchState
    matches: tuple[AppendedAddress, ...] = ()
    reason: str | None = None
    skipped: int = 0


class AddressEnricher(Protocol):
    """A vendor that appends postal addresses to people, in batches (see the module
    docstring for the idempotency rule every implementation keeps)."""

    def submit(self, batch_name: str, people: Sequence[IdentityRow]) -> str:
        """Send ``people`` as the batch ``batch_name``; return the vendor's batch id.

        Idempotent by ``batch_name``: existing resources of that name are looked up and
        reused, only missing ones are created; a repeated call returns the same id."""
        ...

    def poll(self, batch_id: str) -> BatchPoll:
        """The batch's state now; its matches once it is ready."""
        ...

    def close(self) -> None: ...
