"""Every sandbox vendor served over HTTP by a separate process.

In-process, a real client is built with ``transport=<Vendor>Sandbox(...)``. This server runs
the same transports behind a socket, so the real clients talk to them over the network exactly
as to the vendor, and the vendors outlive the Dagster processes (performance and chaos
benchmarks kill those). State stays in the shared :class:`SandboxStore` file, so the Dagster
side (which emits the printers' webhooks from it) and tests read what the vendors were sent.

Each vendor is mounted under a path prefix; a client's base URL is the server's URL plus the
prefix plus what follows the vendor's host in its real base URL:

==================================  ====================================================
``/lob/v1``                         Lob (``LobPrinter(base_url=...)``)
``/stannp/v1``                      Stannp (UK platform)
``/intelliprint/v1``                IntelliPrint
``/klaviyo``                        Klaviyo as the CDP
``/stripe``                         Stripe (``StripeMeter(api_base=...)``)
``/cloudflare/client/v4/...``       Cloudflare Images (``CloudflareImages(base_url=...)``)
``/renderer``                       the rendering gateway
``/pixelixe``                       Pixelixe (its ``image_url`` links lead back here)
``/faraday/v1``                     Faraday
``/orders/<kind>/<account>``        an order source (``klaviyo``, ``ometria``, ``shopify``)
                                    for one account (see ``orders.sandbox.sandbox_account``)
``/healthz``                        ``200 ok`` while the server serves
``/_stats``                         what each vendor answered (below)
``/_faults``                        faults planned on a vendor at run time (below)
==================================  ====================================================

A request is read with ``h11``, turned into an :class:`httpx.Request` and handed to the vendor's
``handle_request``; routes match the path after the prefix (``SandboxTransport.mount_path``)
while handlers see the full URL, so links they write lead back through the server. Shopify
tells shops apart by host, so its requests are re-addressed to ``<shop>.myshopify.com``. A
*lost response* (``SandboxBehaviour.lost_response_rate``) closes the connection without an
answer after the vendor did the work, as does any transport failure a planned fault raises (a
connection reset, a timeout). A client that goes away mid-request costs its own connection
only. SIGTERM (or SIGINT) stops accepting, lets the server loop finish and exits 0.

``GET /_stats`` answers, per mounted vendor (``lob``, ..., ``orders/<kind>/<account>``), the
requests it answered, the answers by status (``"lost"``: a lost response), the 429s, the rate
limit it enforces and how many credentials called it; ``?timestamps=1`` adds ``accepted_at``:
per credential (a hash of its ``Authorization`` header, see :func:`credential_label`), the
epoch seconds at which each request that was not refused with 429 was taken in (on arrival,
before its latency: the moment the vendor's rate window counted it), so a benchmark can compute the
share of a per-key or per-token limit it used. The counting costs a lock, a counter and an
append per request.

``POST /_faults`` plans faults on one vendor of a running server, as a test does in process
with ``transport.inject`` (``sandbox.transport.Fault``)::

    {"vendor": "lob", "faults": [{"kind": "server_error", "times": null, "for_seconds": 60},
                                 {"kind": "rate_limited", "times": 3, "seconds": 2}]}

``vendor`` names a mount (``lob``, ..., ``orders/<kind>/<account>``); each fault has the
fields of ``Fault`` (``kind``: ``rate_limited``, ``rate_limited_no_wait``, ``server_error``,
``timeout``, ``slow``, ``connection_reset``, ``lost_response``, ``reset_after_acting``,
``refused``; ``times``, ``for_seconds``, ``seconds``, ``status``, ``method``, ``path``). The
answer is ``200`` with the vendor's planned faults, or ``400`` saying what is wrong.
``GET /_faults`` lists, per vendor, the faults still planned and those injected so far;
``DELETE /_faults?vendor=lob`` (without ``vendor``: every vendor) clears the plans. Over the
network a timeout is the vendor staying silent for ``seconds`` (10 by default, the clients'
read timeout) and then dropping the connection; a slow answer is a real wait.

``--prerendered`` makes the rendering gateway answer one fixed pre-rendered pair of images per
print size after its latency, instead of drawing each postcard: a remote renderer's CPU is not
the pipeline's. ``--builtin-limits off`` switches off the limits a sandbox enforces by itself
(Klaviyo's per-endpoint burst and steady windows), leaving only ``--rate-limit``.
``--webhooks-to-sqs QUEUE_URL`` makes the server deliver the printers' status webhooks to an
SQS queue itself, as the webhook ingress does in production (the production-like mode);
without it the code location's sandbox sensor delivers them from the shared store.

``python -m mail_pipeline.integrations.sandbox.server --store data/sandbox.sqlite --port 8700
--latency lob=0.3,renderer=0.2`` (``--help`` lists the rest; ``*`` in a per-vendor option
means every vendor).
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import json
import logging
import signal
import socketserver
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import h11
import httpx

from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.integrations.billing.sandbox import StripeSandbox
from mail_pipeline.integrations.enrichment.sandbox import FaradaySandbox
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox
from mail_pipeline.integrations.klaviyo.sandbox import KlaviyoLimits, KlaviyoSandbox
from mail_pipeline.integrations.orders.sandbox import sandbox_transport
from mail_pipeline.integrations.printers.sandbox import emit_due_webhooks, sandbox_transports
from mail_pipeline.integrations.printers.sandbox.base import SandboxTimeline
from mail_pipeline.integrations.queues.sqs import SqsQueue
from mail_pipeline.integrations.renderer.pixelixe import parse_documents
from mail_pipeline.integrations.renderer.sandbox import (
    DEFAULT_PIXELIXE_DOCUMENTS,
    PixelixeSandbox,
    RenderingGatewaySandbox,
    sandbox_documents,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import (
    DECIDED_AT,
    Fault,
    SandboxBehaviour,
    SandboxTransport,
)

log = logging.getLogger("mail_pipeline.sandbox.server")

#: The vendors mounted at one fixed prefix each.
VENDORS = (
    "lob",
    "stannp",
    "intelliprint",
    "klaviyo",
    "stripe",
    "cloudflare",
    "renderer",
    "pixelixe",
    "faraday",
)
#: ``/orders/<kind>/<account>``: one transport per account, built on first use.
ORDERS = "orders"
BEHAVIOUR_NAMES = (*VENDORS, *(f"{ORDERS}-{kind.value}" for kind in IntegrationKind))
ALL = "*"
HEALTH_PATH = "/healthz"
STATS_PATH = "/_stats"
FAULTS_PATH = "/_faults"
#: The longest request line and headers a client may send.
MAX_HEADER_BYTES = 64 * 1024
#: The status recorded for a lost response (the vendor did the work, the answer never left).
LOST = "lost"
#: The status recorded for a connection a planned fault reset.
RESET = "reset"

#: Not forwarded in either direction: they describe one hop, not the message.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    }
)


@dataclass(frozen=True)
class ServerConfig:
    """What the vendors need beyond the store; defaults match the local sandbox resources."""

    store_path: str
    #: Where the image host keeps uploads (the Dagster side's ``image_dir`` must be the same).
    image_dir: str
    #: The server's address as clients reach it (Pixelixe's ``image_url`` links use it).
    public_url: str = "http://127.0.0.1:8700"
    #: Per vendor name (``VENDORS``, ``orders-<kind>``); absent: a well-behaved vendor.
    behaviours: Mapping[str, SandboxBehaviour] = field(default_factory=dict)
    timeline: SandboxTimeline = field(
        default_factory=lambda: SandboxTimeline(
            in_production_after=20 / 3,
            mailed_after=40 / 3,
            in_transit_after=20.0,
            in_local_area_after=32.5,
            delivered_after=45.0,
            returned_rate=0.02,
        )
    )
    faraday_ready_after: float = 120.0
    faraday_match_rate: float = 0.7
    pixelixe_documents: str = DEFAULT_PIXELIXE_DOCUMENTS
    #: The rendering gateway answers a fixed pre-rendered pair instead of drawing each card.
    prerendered: bool = False
    #: Limits a sandbox enforces by itself (Klaviyo's per-endpoint windows); off: only
    #: ``behaviours[...].rate_limit``.
    builtin_limits: bool = True

    def behaviour(self, name: str) -> SandboxBehaviour:
        return self.behaviours.get(name) or self.behaviours.get(ALL) or SandboxBehaviour()


def credential_label(headers: Sequence[tuple[str, str]]) -> str:
    """Who is calling, without saying it: 8 hex digits of the ``Authorization`` header's hash
    (``""`` without one). Limits that apply per key or token are measured per label."""
    value = next((v for k, v in headers if k.lower() == "authorization"), "")
    return hashlib.sha256(value.encode()).hexdigest()[:8] if value else ""


class VendorStats:
    """What one mounted vendor answered (``GET /_stats``): thread-safe and cheap."""

    def __init__(self, rate_limit: tuple[int, float] | None) -> None:
        self.rate_limit = rate_limit
        self._lock = threading.Lock()
        self._statuses: Counter[str] = Counter()
        #: Per credential label: when each request not refused with 429 was taken in.
        self._accepted_at: dict[str, array[float]] = {}

    def record(self, status: str, at: float, credential: str = "") -> None:
        """One answer; ``at``: when the vendor took the request in (epoch seconds)."""
        with self._lock:
            self._statuses[status] += 1
            if status != "429":
                times = self._accepted_at.get(credential)
                if times is None:
                    times = self._accepted_at[credential] = array("d")
                times.append(at)

    def snapshot(self, timestamps: bool = False) -> dict[str, Any]:
        with self._lock:
            statuses = dict(self._statuses)
            accepted = {c: t.tolist() for c, t in self._accepted_at.items()} if timestamps else {}
            credentials = len(self._accepted_at)
        snapshot: dict[str, Any] = {
            "requests": sum(statuses.values()),
            "statuses": dict(sorted(statuses.items())),
            "rate_limited": statuses.get("429", 0),
            "rate_limit": list(self.rate_limit) if self.rate_limit else None,
            "credentials": credentials,
        }
        if timestamps:
            snapshot["accepted_at"] = accepted
        return snapshot


class SandboxVendors:
    """The mounted transports over one store; finds the vendor a request path is for, and
    counts what each answered (:class:`VendorStats`)."""

    def __init__(self, config: ServerConfig, store: SandboxStore | None = None) -> None:
        self.config = config
        self.store = store or SandboxStore(config.store_path)
        b = config.behaviour
        printers = {
            name: sandbox_transports(self.store, b(name), config.timeline)[name]
            for name in ("lob", "stannp", "intelliprint")
        }
        documents = parse_documents(config.pixelixe_documents)
        self.fixed: dict[str, SandboxTransport] = {
            **printers,
            "klaviyo": KlaviyoSandbox(
                self.store, b("klaviyo"), limits=KlaviyoLimits() if config.builtin_limits else None
            ),
            "stripe": StripeSandbox(self.store, b("stripe")),
            "cloudflare": CloudflareImagesSandbox(
                self.store, b("cloudflare"), storage_dir=Path(config.image_dir)
            ),
            "renderer": RenderingGatewaySandbox(
                self.store, b("renderer"), prerendered=config.prerendered
            ),
            "pixelixe": PixelixeSandbox(
                self.store,
                b("pixelixe"),
                documents=sandbox_documents(documents),
                base_url=f"{config.public_url.rstrip('/')}/pixelixe",
            ),
            "faraday": FaradaySandbox(
                self.store,
                b("faraday"),
                ready_after_seconds=config.faraday_ready_after,
                match_rate=config.faraday_match_rate,
            ),
        }
        for name, transport in self.fixed.items():
            transport.mount_path = f"/{name}"
        self._accounts: dict[tuple[IntegrationKind, str], SandboxTransport] = {}
        self._lock = threading.Lock()
        #: Per mount path without its leading ``/``.
        self._stats: dict[str, VendorStats] = {}

    def stats_for(self, transport: SandboxTransport) -> VendorStats:
        name = transport.mount_path.lstrip("/")
        stats = self._stats.get(name)
        if stats is None:
            with self._lock:
                stats = self._stats.setdefault(name, VendorStats(transport.behaviour.rate_limit))
        return stats

    def stats(self, timestamps: bool = False) -> dict[str, Any]:
        """``GET /_stats``: per vendor that answered anything, see :class:`VendorStats`."""
        with self._lock:
            stats = dict(self._stats)
        return {
            "now": time.time(),
            "vendors": {name: s.snapshot(timestamps) for name, s in sorted(stats.items())},
        }

    def named(self, name: str) -> SandboxTransport | None:
        """The transport mounted as ``name`` (``lob``, ``orders/<kind>/<account>``), if any."""
        found = self.resolve(f"/{name.strip('/')}/")
        return None if found is None else found[0]

    def plan_faults(self, body: Any) -> dict[str, Any]:
        """``POST /_faults``: plan the faults of ``body`` (see the module docstring); a bad
        body raises ValueError saying what is wrong, and plans nothing."""
        if not isinstance(body, dict) or not isinstance(body.get("vendor"), str):
            raise ValueError('expected {"vendor": "<mount>", "faults": [{"kind": ...}, ...]}')
        transport = self.named(body["vendor"])
        if transport is None:
            raise ValueError(f"no sandbox vendor is mounted as {body['vendor']!r}")
        raw = body.get("faults")
        if not isinstance(raw, list) or not all(isinstance(f, dict) for f in raw):
            raise ValueError('"faults" must be a list of objects')
        try:
            faults = [Fault.from_json(f) for f in raw]
        except TypeError as exc:
            raise ValueError(f"a fault has a field of the wrong type: {exc}") from exc
        for fault in faults:
            transport.faults.add(fault)
        return {"vendor": body["vendor"], "planned": transport.faults.pending()}

    def faults(self) -> dict[str, Any]:
        """``GET /_faults``: per vendor with anything planned or injected."""
        with self._lock:
            transports = [*self.fixed.values(), *self._accounts.values()]
        return {
            t.mount_path.lstrip("/"): {
                "planned": t.faults.pending(),
                "injected": dict(sorted(t.faults.injected.items())),
            }
            for t in transports
            if t.faults.pending() or t.faults.injected
        }

    def clear_faults(self, vendor: str | None) -> None:
        """``DELETE /_faults``: no more planned faults on ``vendor`` (None: on any)."""
        with self._lock:
            transports = [*self.fixed.values(), *self._accounts.values()]
        for transport in transports:
            if vendor is None or transport.mount_path.lstrip("/") == vendor.strip("/"):
                transport.faults.clear()

    def resolve(self, path: str) -> tuple[SandboxTransport, IntegrationKind | None, str] | None:
        """The transport serving ``path``, the order source kind (or None) and the account."""
        parts = path.split("/", 4)  # "", mount, [kind, account, rest]
        mount = parts[1] if len(parts) > 1 else ""
        if mount in self.fixed:
            return self.fixed[mount], None, ""
        if mount != ORDERS or len(parts) < 4:
            return None
        try:
            kind = IntegrationKind(parts[2])
        except ValueError:
            return None
        account = parts[3]
        with self._lock:
            transport = self._accounts.get((kind, account))
            if transport is None:
                built, _credential = sandbox_transport(
                    kind, account, self.store, self.config.behaviour(f"{ORDERS}-{kind.value}")
                )
                assert isinstance(built, SandboxTransport)
                built.mount_path = f"/{ORDERS}/{kind.value}/{account}"
                transport = self._accounts[(kind, account)] = built
        return transport, kind, account

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> httpx.Response:
        """Answer one request (``target``: the path and query as received)."""
        host = next((v for k, v in headers if k.lower() == "host"), "127.0.0.1")
        path = target.split("?", 1)[0]
        found = self.resolve(path)
        if found is None:
            return httpx.Response(
                404,
                json={"error": {"message": f"no sandbox vendor at {path}", "code": "not_found"}},
            )
        transport, kind, account = found
        url = f"http://{host}{target}"
        if kind is IntegrationKind.SHOPIFY:
            # Shopify knows the shop by its host; the client's base URL names it instead.
            rest = target.removeprefix(transport.mount_path)
            url = f"https://{account}.myshopify.com{rest}"
            headers = [(k, v) for k, v in headers if k.lower() != "host"]
        request = httpx.Request(method, url, headers=headers, content=body)
        stats, credential = self.stats_for(transport), credential_label(headers)
        try:
            response = transport.handle_request(request)
            response.read()
        except httpx.TimeoutException:
            stats.record(LOST, request.extensions.get(DECIDED_AT) or time.time(), credential)
            raise
        except httpx.TransportError:
            stats.record(RESET, request.extensions.get(DECIDED_AT) or time.time(), credential)
            raise
        except Exception:
            stats.record("500", request.extensions.get(DECIDED_AT) or time.time(), credential)
            raise
        at = request.extensions.get(DECIDED_AT) or time.time()
        stats.record(str(response.status_code), at, credential)
        return response


class _ClientGone(Exception):
    """The client closed its connection, or sent something that is not HTTP/1.1."""


class _Handler(socketserver.BaseRequestHandler):
    """One client connection: its requests one after the other (HTTP/1.1 keep-alive).

    The messages are read and written by ``h11`` (the HTTP/1.1 state machine httpx's own
    connections use): the standard library's handler parses every request's headers with the
    e-mail parser, which compiles a new regular expression for each multipart boundary and
    was a third of the server's CPU under an upload load.
    """

    server: SandboxHTTPServer
    #: Bytes asked of the socket at a time.
    READ_SIZE = 65536

    def handle(self) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        while True:
            try:
                request, body = self._read(connection)
            except _ClientGone:
                return
            except h11.RemoteProtocolError as exc:
                self._refuse(connection, exc)
                return
            answer = self._answer(request, body)
            if answer is None:  # no answer, as configured: the connection is dropped
                return
            try:
                self._write(connection, request, answer)
            except (BrokenPipeError, ConnectionResetError):
                log.info("%s %s: the client went away before the answer", *_line(request))
                return
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()

    def _read(self, connection: h11.Connection) -> tuple[h11.Request, bytes]:
        """The next request and its whole body; ``_ClientGone`` when the client closed the
        connection (between requests or mid-request)."""
        request: h11.Request | None = None
        chunks: list[bytes] = []
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = self.request.recv(self.READ_SIZE)
                except (ConnectionError, TimeoutError) as exc:
                    raise _ClientGone from exc
                connection.receive_data(data)  # b"": the client closed its side
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise _ClientGone

    def _answer(self, request: h11.Request, body: bytes) -> httpx.Response | None:
        """The answer to one request; None to drop the connection without one."""
        method, target = _line(request)
        path = target.split("?", 1)[0]
        vendors = self.server.vendors
        if target == HEALTH_PATH:
            return httpx.Response(200, text="ok\n")
        if vendors is None:
            return httpx.Response(503, text="starting\n")
        if path == STATS_PATH:
            query = httpx.URL(target).params
            return httpx.Response(
                200, json=vendors.stats(timestamps=query.get("timestamps") == "1")
            )
        if path == FAULTS_PATH:
            return _faults(vendors, method, target, body)
        decoded = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers)
        headers = [(name, value) for name, value in decoded if name not in _HOP_HEADERS]
        try:
            return vendors.handle(method, target, headers, body)
        except httpx.TransportError as exc:
            log.info("%s %s: no answer (as configured): %s", method, target, exc)
            return None
        except Exception:
            log.exception("%s %s: the sandbox failed", method, target)
            return httpx.Response(
                500, json={"error": {"message": "sandbox error", "code": "sandbox_error"}}
            )

    def _write(
        self, connection: h11.Connection, request: h11.Request, response: httpx.Response
    ) -> None:
        content = response.content
        headers = [
            (key, value)
            for key, value in response.headers.multi_items()
            if key.lower() not in _HOP_HEADERS and key.lower() != "content-encoding"
        ]
        headers += [("content-length", str(len(content))), ("date", _http_date())]
        out = connection.send(
            h11.Response(
                status_code=response.status_code, headers=headers, reason=_reason(response)
            )
        )
        if request.method != b"HEAD" and content:
            out += connection.send(h11.Data(data=content))
        out += connection.send(h11.EndOfMessage())
        self.request.sendall(out)

    def _refuse(self, connection: h11.Connection, exc: h11.RemoteProtocolError) -> None:
        """A request that is not HTTP/1.1 gets 400 (when an answer can still be sent)."""
        log.info("a malformed request from %s: %s", self.client_address, exc)
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        content = json.dumps({"error": {"message": str(exc), "code": "bad_request"}}).encode()
        with contextlib.suppress(OSError, h11.LocalProtocolError):
            self.request.sendall(
                connection.send(
                    h11.Response(
                        status_code=exc.error_status_hint,
                        headers=[
                            ("content-type", "application/json"),
                            ("content-length", str(len(content))),
                            ("connection", "close"),
                        ],
                    )
                )
                + connection.send(h11.Data(data=content))
                + connection.send(h11.EndOfMessage())
            )


def _line(request: h11.Request) -> tuple[str, str]:
    return request.method.decode("ascii"), request.target.decode("latin-1")


def _reason(response: httpx.Response) -> bytes:
    try:
        return HTTPStatus(response.status_code).phrase.encode()
    except ValueError:
        return b""


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """Now as an HTTP date (computed once a second)."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.formatdate(second, usegmt=True))
    return _date_cache[1]


def _faults(vendors: SandboxVendors, method: str, target: str, body: bytes) -> httpx.Response:
    """``GET``, ``POST`` and ``DELETE /_faults`` (see the module docstring)."""
    if method == "GET":
        return httpx.Response(200, json=vendors.faults())
    if method == "DELETE":
        vendors.clear_faults(httpx.URL(target).params.get("vendor"))
        return httpx.Response(200, json=vendors.faults())
    if method != "POST":
        return httpx.Response(405, json={"error": "GET, POST or DELETE"})
    try:
        planned = vendors.plan_faults(json.loads(body or b"null"))
    except ValueError as exc:
        return httpx.Response(400, json={"error": str(exc)})
    return httpx.Response(200, json=planned)


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    #: The listen backlog. The standard library's 5 overflows when a few dozen clients
    #: connect at once (the kernel then answers with SYN cookies and connections wait a
    #: retransmit); a vendor's load balancer takes them all.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], vendors: SandboxVendors | None = None) -> None:
        """``vendors`` may be set after binding (their public URL names the bound port);
        until then every vendor answers 503."""
        super().__init__(address, _Handler)
        self.vendors = vendors

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.info("connection from %s dropped: %s", client_address, exc)
            return
        super().handle_error(request, client_address)


# -- command line ---------------------------------------------------------------------------
def parse_per_vendor(raw: Sequence[str], value: Callable[[str], Any]) -> dict[str, Any]:
    """``["lob=0.3,renderer=0.2", "*=0.1"]`` -> ``{"lob": 0.3, "renderer": 0.2, "*": 0.1}``."""
    parsed: dict[str, Any] = {}
    for item in ",".join(raw).split(","):
        if not item.strip():
            continue
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or (name not in BEHAVIOUR_NAMES and name != ALL):
            raise ValueError(
                f"{item!r}: expected VENDOR=VALUE with VENDOR one of {', '.join(BEHAVIOUR_NAMES)}"
                f" or {ALL}"
            )
        parsed[name] = value(text.strip())
    return parsed


def _rate(text: str) -> tuple[int, float]:
    calls, _, seconds = text.partition("/")
    return int(calls), float(seconds or 1)


def behaviours(args: argparse.Namespace) -> dict[str, SandboxBehaviour]:
    options: dict[str, dict[str, Any]] = {
        "latency_seconds": parse_per_vendor(args.latency, float),
        "failure_rate": parse_per_vendor(args.failure_rate, float),
        "lost_response_rate": parse_per_vendor(args.lost_response_rate, float),
        "rate_limit": parse_per_vendor(args.rate_limit, _rate),
    }
    names = {name for per_vendor in options.values() for name in per_vendor}
    result: dict[str, SandboxBehaviour] = {}
    base = SandboxBehaviour(latency_jitter=args.latency_jitter)
    for name in names | {ALL}:
        fields = {
            option: per_vendor.get(name, per_vendor.get(ALL))
            for option, per_vendor in options.items()
        }
        result[name] = replace(base, **{k: v for k, v in fields.items() if v is not None})
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mail-pipeline sandbox-server",
        description="Serve every sandbox vendor over HTTP from one process.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser, default_store: str | None = None) -> None:
    """The server's options on ``parser`` (also ``mail-pipeline sandbox-server``'s)."""
    per_vendor = f"VENDOR=VALUE[,...]; VENDOR: {', '.join(BEHAVIOUR_NAMES)} or {ALL}"
    parser.add_argument(
        "--store",
        required=default_store is None,
        default=default_store,
        help="the shared sandbox SQLite file"
        + (f" (default: {default_store})" if default_store else ""),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700, help="0: any free port")
    parser.add_argument("--image-dir", help="image host uploads (default: images/ by the store)")
    parser.add_argument("--public-url", help="the server's URL for clients (default: bound)")
    parser.add_argument("--latency", action="append", default=[], help=f"seconds; {per_vendor}")
    parser.add_argument("--failure-rate", action="append", default=[], help=per_vendor)
    parser.add_argument("--lost-response-rate", action="append", default=[], help=per_vendor)
    parser.add_argument(
        "--rate-limit", action="append", default=[], help=f"CALLS/SECONDS; {per_vendor}"
    )
    parser.add_argument(
        "--latency-jitter", type=float, default=0.2, help="latency varies by +- this fraction"
    )
    parser.add_argument("--in-transit-after", type=float, default=20.0)
    parser.add_argument("--delivered-after", type=float, default=45.0)
    parser.add_argument("--returned-rate", type=float, default=0.02)
    parser.add_argument("--faraday-ready-after", type=float, default=120.0)
    parser.add_argument("--faraday-match-rate", type=float, default=0.7)
    parser.add_argument(
        "--prerendered",
        action="store_true",
        help="the rendering gateway answers a fixed pre-rendered pair of images (no drawing)",
    )
    parser.add_argument(
        "--builtin-limits",
        choices=("on", "off"),
        default="on",
        help="limits a sandbox enforces by itself (Klaviyo's per-endpoint windows)",
    )
    parser.add_argument(
        "--webhooks-to-sqs",
        metavar="QUEUE_URL",
        default=None,
        help="deliver the printers' due status webhooks to this SQS queue every "
        "--webhook-interval seconds (what the webhook ingress does in production; boto3's "
        "usual settings, AWS_ENDPOINT_URL included, pick the endpoint); default: the "
        "code location's sandbox sensor delivers them from the store",
    )
    parser.add_argument("--webhook-interval", type=float, default=2.0)
    parser.add_argument("--verbose", action="store_true", help="log every request")


def config_from_args(args: argparse.Namespace, public_url: str) -> ServerConfig:
    step = args.in_transit_after / 3
    return ServerConfig(
        store_path=args.store,
        image_dir=args.image_dir or str(Path(args.store).resolve().parent / "images"),
        public_url=args.public_url or public_url,
        behaviours=behaviours(args),
        timeline=SandboxTimeline(
            in_production_after=step,
            mailed_after=2 * step,
            in_transit_after=args.in_transit_after,
            in_local_area_after=(args.in_transit_after + args.delivered_after) / 2,
            delivered_after=args.delivered_after,
            returned_rate=args.returned_rate,
        ),
        faraday_ready_after=args.faraday_ready_after,
        faraday_match_rate=args.faraday_match_rate,
        prerendered=args.prerendered,
        builtin_limits=args.builtin_limits == "on",
    )


def serve(args: argparse.Namespace) -> int:
    """Bind, print ``listening on <url>``, serve until SIGTERM/SIGINT; exit status 0."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        behaviours(args)  # refuse bad options before binding
    except ValueError as exc:
        print(f"sandbox-server: {exc}", file=sys.stderr)
        return 2
    server = SandboxHTTPServer((args.host, args.port))
    server.vendors = SandboxVendors(config_from_args(args, server.url))
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=server.serve_forever, name="sandbox-server", daemon=True)
    loop.start()
    if args.webhooks_to_sqs:
        threading.Thread(
            target=deliver_webhooks,
            args=(server.vendors.store, SqsQueue(args.webhooks_to_sqs), args.webhook_interval),
            kwargs={"stop": stop},
            name="sandbox-webhooks",
            daemon=True,
        ).start()
    print(f"sandbox server listening on {server.url}", flush=True)
    log.info("vendors: %s; orders under /%s/<kind>/<account>", json.dumps(VENDORS), ORDERS)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    loop.join(timeout=5)
    log.info("stopped")
    return 0


def deliver_webhooks(
    store: SandboxStore, queue: SqsQueue, interval: float, *, stop: threading.Event
) -> None:
    """Every ``interval`` seconds, send the printers' due status webhooks to ``queue`` until
    ``stop``. A failed send leaves what was not sent owed again later
    (:func:`emit_due_webhooks`); the loop logs it and goes on."""

    while not stop.wait(interval):
        try:
            sent = emit_due_webhooks(store, queue.send, send_many=queue.send_batch)
        except Exception:
            log.exception("delivering status webhooks to %s failed; retrying", queue.name)
            continue
        if sent:
            log.info("delivered %d status webhooks to %s", sent, queue.name)


def main(argv: Sequence[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
