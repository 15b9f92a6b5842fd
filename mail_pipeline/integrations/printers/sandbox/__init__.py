"""The sandbox printers: build them, and deliver the status webhooks they owe.

- :func:`sandbox_printers` gives the real clients (:class:`LobPrinter`,
  :class:`StannpPrinter`, :class:`IntelliPrintPrinter`) wired to their sandboxes over one
  :class:`SandboxStore`, with matching keys and webhook secrets: the code that runs against
  the vendors in production runs unchanged locally.
- :func:`emit_due_webhooks` plays the vendors' webhook senders: it takes the webhooks whose
  time has come, renders each in the vendor's own shape, signs it like the vendor and hands
  the JSON :class:`WebhookEnvelope` to ``send`` - what the webhook ingress would put on the
  status queue. A webhook ``send`` failed on is owed again 30 s later (vendors retry too), so
  delivery is at-least-once, as with the real thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.printers.base import Printer, WebhookEnvelope
from mail_pipeline.integrations.printers.common import DEFAULT_LIMIT_FRACTION
from mail_pipeline.integrations.printers.intelliprint import IntelliPrintPrinter
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.sandbox import intelliprint as sandbox_intelliprint
from mail_pipeline.integrations.printers.sandbox import lob as sandbox_lob
from mail_pipeline.integrations.printers.sandbox import stannp as sandbox_stannp
from mail_pipeline.integrations.printers.sandbox.base import (
    PrinterSandbox,
    SandboxTimeline,
    webhook_collection,
)
from mail_pipeline.integrations.printers.sandbox.intelliprint import IntelliPrintSandbox
from mail_pipeline.integrations.printers.sandbox.lob import LobSandbox
from mail_pipeline.integrations.printers.sandbox.stannp import StannpSandbox
from mail_pipeline.integrations.printers.stannp import StannpPrinter
from mail_pipeline.integrations.printers.webhooks import envelope_to_json
from mail_pipeline.integrations.ratelimit import Limiter
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

__all__ = [
    "IntelliPrintSandbox",
    "LobSandbox",
    "PrinterSandbox",
    "SandboxTimeline",
    "StannpSandbox",
    "emit_due_webhooks",
    "sandbox_printers",
    "sandbox_printers_at",
    "sandbox_transports",
]

#: Due webhooks ``[(key, doc)]`` -> the vendor's calls, each with the keys it delivers.
Renderer = Callable[
    [list[tuple[str, dict[str, Any]]], float], list[tuple[WebhookEnvelope, list[str]]]
]

RENDERERS: Mapping[str, Renderer] = {
    "lob": sandbox_lob.render_webhooks,
    "stannp": sandbox_stannp.render_webhooks,
    "intelliprint": sandbox_intelliprint.render_webhooks,
}
#: Seconds before a webhook that ``send`` failed on is owed again.
REDELIVERY_DELAY = 30.0

#: A printer's client-side limiter from its name and API key (None: the client has none).
LimiterFor = Callable[[str, str], Limiter | None]


def _rate_limits(
    name: str,
    api_key: str,
    client_rate_limits: bool,
    limit_fraction: float,
    limiter_for: LimiterFor | None,
) -> dict[str, Any]:
    """The rate-limit arguments of one printer client."""
    if not client_rate_limits:
        return {"rate_limit": None}
    if limiter_for is not None:
        return {"rate_limit": None, "limiter": limiter_for(name, api_key)}
    return {"limit_fraction": limit_fraction}


def sandbox_transports(
    store: SandboxStore,
    behaviour: SandboxBehaviour | None = None,
    timeline: SandboxTimeline | None = None,
    webhook_secrets: Mapping[str, str] | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> dict[str, PrinterSandbox]:
    """One sandbox per printer over ``store``; secrets default to each sandbox's own."""
    secrets = webhook_secrets or {}
    common: dict[str, Any] = {"timeline": timeline, "sleep": sleep, "clock": clock}
    return {
        "lob": LobSandbox(store, behaviour, webhook_secret=secrets.get("lob"), **common),
        "stannp": StannpSandbox(store, behaviour, webhook_secret=secrets.get("stannp"), **common),
        "intelliprint": IntelliPrintSandbox(
            store, behaviour, webhook_secret=secrets.get("intelliprint"), **common
        ),
    }


def sandbox_printers(
    store: SandboxStore,
    behaviour: SandboxBehaviour | None = None,
    timeline: SandboxTimeline | None = None,
    webhook_secrets: Mapping[str, str] | None = None,
    *,
    retry: RetryPolicy | None = None,
    client_rate_limits: bool = True,
    limit_fraction: float = DEFAULT_LIMIT_FRACTION,
    limiter_for: LimiterFor | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> dict[str, Printer]:
    """The three real printer clients, each talking to its sandbox over ``store``.

    The clients verify webhooks with the same secrets their sandboxes sign with. They keep
    their client-side limiters (95 % of each vendor's published limit, or the limiter
    ``limiter_for(printer, api_key)`` gives) unless ``client_rate_limits=False`` - for
    benchmarks against sandboxes without a rate limit.
    """
    sandboxes = sandbox_transports(
        store, behaviour, timeline, webhook_secrets, sleep=sleep, clock=clock
    )
    lob, stannp, intelliprint = (sandboxes["lob"], sandboxes["stannp"], sandboxes["intelliprint"])
    common: dict[str, Any] = {"retry": retry, "sleep": sleep, "clock": clock}

    def limits(name: str, api_key: str) -> dict[str, Any]:
        return _rate_limits(name, api_key, client_rate_limits, limit_fraction, limiter_for)

    return {
        "lob": LobPrinter(
            lob.api_key,
            transport=lob,
            webhook_secret=lob.webhook_secret,
            **common,
            **limits("lob", lob.api_key),
        ),
        "stannp": StannpPrinter(
            stannp.api_key,
            transport=stannp,
            webhook_secret=stannp.webhook_secret,
            **common,
            **limits("stannp", stannp.api_key),
        ),
        "intelliprint": IntelliPrintPrinter(
            intelliprint.api_key,
            transport=intelliprint,
            webhook_secret=intelliprint.webhook_secret,
            **common,
            **limits("intelliprint", intelliprint.api_key),
        ),
    }


def sandbox_printers_at(
    server_url: str,
    *,
    retry: RetryPolicy | None = None,
    client_rate_limits: bool = True,
    limit_fraction: float = DEFAULT_LIMIT_FRACTION,
    limiter_for: LimiterFor | None = None,
) -> dict[str, Printer]:
    """The three real printer clients talking over the network to the sandbox server at
    ``server_url`` (``integrations.sandbox.server``), with the sandboxes' default keys and
    webhook secrets - the ones the server's printers accept and sign with. Rate limits as
    :func:`sandbox_printers`."""
    url = server_url.rstrip("/")
    common: dict[str, Any] = {"retry": retry}

    def limits(name: str, api_key: str) -> dict[str, Any]:
        return _rate_limits(name, api_key, client_rate_limits, limit_fraction, limiter_for)

    return {
        "lob": LobPrinter(
            LobSandbox.default_api_key,
            base_url=f"{url}/lob/v1",
            webhook_secret=LobSandbox.default_webhook_secret,
            **common,
            **limits("lob", LobSandbox.default_api_key),
        ),
        "stannp": StannpPrinter(
            StannpSandbox.default_api_key,
            base_url=f"{url}/stannp/v1",
            webhook_secret=StannpSandbox.default_webhook_secret,
            **common,
            **limits("stannp", StannpSandbox.default_api_key),
        ),
        "intelliprint": IntelliPrintPrinter(
            IntelliPrintSandbox.default_api_key,
            base_url=f"{url}/intelliprint/v1",
            webhook_secret=IntelliPrintSandbox.default_webhook_secret,
            **common,
            **limits("intelliprint", IntelliPrintSandbox.default_api_key),
        ),
    }


def emit_due_webhooks(
    store: SandboxStore,
    send: Callable[[str], object],
    now: float | None = None,
    *,
    send_many: Callable[[list[str]], object] | None = None,
) -> int:
    """Send every webhook due by ``now`` as a JSON envelope; return how many were sent.

    Webhooks go out in the order their statuses happened, per printer, one ``send`` each -
    or, with ``send_many`` (a queue's ``send_batch``), a page of up to 100 in one call. If a
    send raises, what was not sent is owed again :data:`REDELIVERY_DELAY` seconds later and
    the error propagates; a page whose ``send_many`` raised is owed again whole (a part of it
    may have gone out: the status consumer applies a repeated webhook once).
    """
    now = time.time() if now is None else now
    sent = 0
    for vendor, render in RENDERERS.items():
        while True:
            due = store.pop_due(webhook_collection(vendor), now=now, limit=100)
            if not due:
                break
            pending = dict(due)
            try:
                if send_many is not None:
                    rendered = list(render(due, now))
                    send_many([envelope_to_json(envelope) for envelope, _ in rendered])
                    sent += len(rendered)
                    pending.clear()
                    continue
                for envelope, keys in render(due, now):
                    send(envelope_to_json(envelope))
                    sent += 1
                    for key in keys:
                        pending.pop(key, None)
            finally:
                for key, doc in pending.items():
                    store.put(webhook_collection(vendor), key, doc, due_at=now + REDELIVERY_DELAY)
    return sent
