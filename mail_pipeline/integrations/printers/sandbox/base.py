"""What the three printer sandboxes share: the status timeline and the webhooks a piece owes.

A sandbox printer remembers, in the shared :class:`SandboxStore` (never in Python objects, as
several processes share it under ``dagster dev``):

- ``printers.<vendor>.pieces``: every accepted piece, with the times of its future statuses;
- ``printers.<vendor>.idempotency``: which keys (or references) it has seen;
- ``webhooks.<vendor>``: one document per status webhook it still owes, ``due_at`` = when the
  status happens. :func:`~mail_pipeline.integrations.printers.sandbox.emit_due_webhooks`
  takes the due ones, renders them in the vendor's shape and signs them.

A piece's statuses follow a :class:`SandboxTimeline`; a fraction of pieces (decided from the
piece id, so every process agrees) is returned to sender instead of delivered.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour, SandboxTransport

CREATED = "created"
IN_PRODUCTION = "in_production"
MAILED = "mailed"
IN_TRANSIT = "in_transit"
IN_LOCAL_AREA = "in_local_area"
DELIVERED = "delivered"
RETURNED = "returned"
CANCELLED = "cancelled"

#: Real vendors keep idempotency keys for 24 hours.
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class SandboxTimeline:
    """Seconds after acceptance at which a piece reaches each stage.

    ``returned_rate`` of pieces end ``returned`` (at ``delivered_after``) instead of
    ``delivered``. Real printers move test pieces nowhere (Stannp never dispatches them, Lob
    sends few test webhooks); ``test_pieces_progress=True`` (the default) lets test pieces
    travel anyway so the whole pipeline runs offline, ``False`` imitates the vendors.
    """

    in_production_after: float = 2.0
    mailed_after: float = 4.0
    in_transit_after: float = 6.0
    in_local_area_after: float = 8.0
    delivered_after: float = 10.0
    returned_rate: float = 0.0
    test_pieces_progress: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        times = [
            self.in_production_after,
            self.mailed_after,
            self.in_transit_after,
            self.in_local_area_after,
            self.delivered_after,
        ]
        if min(times) < 0 or times != sorted(times):
            raise ValueError("timeline stages must be non-negative and in order")
        if not 0 <= self.returned_rate <= 1:
            raise ValueError("returned_rate must be between 0 and 1")

    def is_returned(self, piece_id: str) -> bool:
        return random.Random(f"{self.seed}:{piece_id}").random() < self.returned_rate

    def stages(self, piece_id: str, start: float, *, test: bool = False) -> list[list[Any]]:
        """``[[stage, at], ...]`` in order (lists, so they survive a JSON round trip)."""
        if test and not self.test_pieces_progress:
            return [[CREATED, start]]
        final = RETURNED if self.is_returned(piece_id) else DELIVERED
        return [
            [CREATED, start],
            [IN_PRODUCTION, start + self.in_production_after],
            [MAILED, start + self.mailed_after],
            [IN_TRANSIT, start + self.in_transit_after],
            [IN_LOCAL_AREA, start + self.in_local_area_after],
            [final, start + self.delivered_after],
        ]


def stage_at(stages: list[list[Any]], now: float) -> str:
    """The stage a piece has reached at ``now``."""
    reached = CREATED
    for stage, at in stages:
        if at <= now:
            reached = stage
    return reached


def webhook_collection(vendor: str) -> str:
    return f"webhooks.{vendor}"


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]


def basic_username(request: httpx.Request) -> str | None:
    """The username of an HTTP Basic ``Authorization`` header (vendors put the key there)."""
    value = request.headers.get("authorization", "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip()).decode("utf-8")
    except ValueError:
        return None
    return decoded.split(":", 1)[0]


class PrinterSandbox(SandboxTransport):
    """A sandbox printer: the base transport plus stored pieces and owed webhooks."""

    #: Timeline stage -> the vendor's webhook event/status name (absent: not reported).
    stage_events: ClassVar[Mapping[str, str]] = {}
    #: Prefix of the vendor's event ids (``evt_``, ``msg_``), or "" when it sends none.
    event_id_prefix: ClassVar[str] = ""
    default_api_key: ClassVar[str] = "sandbox-key"
    default_webhook_secret: ClassVar[str] = "sandbox-webhook-secret"

    def __init__(
        self,
        store: SandboxStore | None = None,
        behaviour: SandboxBehaviour | None = None,
        *,
        api_key: str | None = None,
        webhook_secret: str | None = None,
        timeline: SandboxTimeline | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, behaviour, sleep=sleep, clock=clock)
        self.api_key = api_key or self.default_api_key
        self.webhook_secret = webhook_secret or self.default_webhook_secret
        self.timeline = timeline or SandboxTimeline()

    # -- collections ----------------------------------------------------------------------
    @property
    def pieces(self) -> str:
        return f"printers.{self.vendor}.pieces"

    @property
    def keys(self) -> str:
        return f"printers.{self.vendor}.idempotency"

    @property
    def webhooks(self) -> str:
        return webhook_collection(self.vendor)

    # -- what tests and operators ask -------------------------------------------------------
    def created_count(self) -> int:
        """How many pieces this vendor accepted (replays do not count)."""
        return self.store.count(self.pieces)

    def accepted_keys(self) -> list[str]:
        return [key for key, _doc in self.scan(self.keys)]

    def pending_webhooks(self) -> int:
        return self.store.count(self.webhooks)

    def piece(self, piece_id: str) -> dict[str, Any] | None:
        return self.store.get(self.pieces, piece_id)

    def scan(self, collection: str) -> Iterator[tuple[str, dict[str, Any]]]:
        after = 0
        while True:
            rows = self.store.scan(collection, after_seq=after, limit=500)
            if not rows:
                return
            for seq, key, doc in rows:
                after = seq
                yield key, doc

    # -- webhooks owed --------------------------------------------------------------------
    def schedule(
        self,
        piece_id: str,
        stages: list[list[Any]],
        payload: Callable[[str, float], dict[str, Any]],
    ) -> None:
        """Owe one webhook per reported stage, due when the stage happens."""
        for stage, at in stages:
            event = self.stage_events.get(stage)
            if event is not None:
                self.owe(piece_id, event, at, payload(stage, at))

    def owe(self, piece_id: str, event: str, at: float, payload: dict[str, Any]) -> None:
        self.store.put(
            self.webhooks,
            f"{piece_id}:{event}",
            {
                "piece_id": piece_id,
                "event": event,
                "occurred_at": at,
                "event_id": new_id(self.event_id_prefix) if self.event_id_prefix else None,
                "secret": self.webhook_secret,
                "payload": payload,
                **self.event_extras(),
            },
            due_at=at,
        )

    def event_extras(self) -> dict[str, Any]:
        """Vendor-specific fields every owed webhook keeps (Stannp: its webhook id)."""
        return {}

    def forgive(self, piece_id: str, stages: list[list[Any]]) -> None:
        """Drop the webhooks a cancelled piece still owed for ``stages`` (those not reached)."""
        for stage, _at in stages:
            event = self.stage_events.get(stage)
            if event is not None:
                self.store.delete(self.webhooks, f"{piece_id}:{event}")
