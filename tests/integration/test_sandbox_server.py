"""The sandbox vendors as a separate HTTP process: the real clients, built by the sandbox
resources in URL mode, talk to it over the network; what they did is in the shared store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import boto3
import httpx
import pytest
from PIL import Image

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.definitions import sandbox_resources
from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.integrations.enrichment.base import IdentityRow
from mail_pipeline.integrations.enrichment.sandbox import FaradaySandbox
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, demo_profiles
from mail_pipeline.integrations.orders.sandbox import OrderSandboxData, SandboxOrder
from mail_pipeline.integrations.printers.base import PostcardRequest
from mail_pipeline.integrations.printers.sandbox import LobSandbox
from mail_pipeline.integrations.renderer.models import PRINT_SIZES, PostcardDesign, ProofRequest
from mail_pipeline.integrations.renderer.png import encode_png
from mail_pipeline.integrations.sandbox.server import behaviours, build_parser
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.billing import SandboxBilling
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.resources.enrichment import SandboxAddressEnrichment
from mail_pipeline.resources.images import SandboxImageHost
from mail_pipeline.resources.orders import SandboxOrderSources
from mail_pipeline.resources.printing import SandboxPrinters
from mail_pipeline.resources.rendering import SandboxRendering
from mail_pipeline.settings import load_settings

LATENCY = 0.4  # intelliprint's, set on the command line below


class Server:
    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.store_path = str(tmp / "sandbox.sqlite")
        self.image_dir = str(tmp / "images")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mail_pipeline.integrations.sandbox.server",
                "--store",
                self.store_path,
                "--image-dir",
                self.image_dir,
                "--port",
                "0",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "sandbox server listening on <url>"
        if "listening on" not in line:
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise RuntimeError(f"the sandbox server did not start: {line!r} {err}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.store = SandboxStore(self.store_path)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("sandbox-server"),
        "--latency",
        f"intelliprint={LATENCY}",
        "--latency-jitter",
        "0",
        "--faraday-ready-after",
        "0",
    )
    yield running
    running.stop()


def postcard(key: str) -> PostcardRequest:
    return PostcardRequest(
        idempotency_key=key,
        recipient_id=7,
        campaign_id=3,
        organization_id=11,
        to=Address.build(
            name="Jane Doe",
            line1="210 King St",
            city="San Francisco",
            postal_code="94107",
            country="US",
            region="CA",
        ),
        front_url="https://img.test/front.png",
        back_url="https://img.test/back.png",
    )


def test_lob_creates_once_and_a_replay_answers_the_same_piece(server: Server) -> None:
    lob = SandboxPrinters(sandbox_path=server.store_path, sandbox_url=server.url).printers()["lob"]
    first = lob.create_postcard(postcard("server-key-1"))
    again = lob.create_postcard(postcard("server-key-1"))

    assert again.provider_piece_id == first.provider_piece_id
    seen = LobSandbox(server.store)
    assert seen.created_count() == 1
    assert seen.accepted_keys() == ["test:server-key-1"]  # keys are kept per mode
    assert seen.piece(first.provider_piece_id) is not None
    assert seen.pending_webhooks() > 0, "the webhooks it owes are in the shared store"


def test_klaviyo_segment_pages_follow_links_through_the_server(server: Server) -> None:
    KlaviyoSandboxData(server.store).put_segment_profiles("SEG-SRV", demo_profiles(150, seed=4))
    cdp = SandboxCdp(sandbox_path=server.store_path, sandbox_url=server.url, page_size=100)
    integration = IntegrationRef(1, IntegrationKind.KLAVIYO, "KLAVIYO_KEY", {})

    pages = list(cdp.segment_pages(integration, "SEG-SRV"))

    assert [len(p.profiles) for p in pages] == [100, 50]
    assert pages[0].next_url is not None and pages[0].next_url.startswith(server.url)


def test_an_uploaded_proof_is_stored_by_the_server(server: Server) -> None:
    host = SandboxImageHost(
        sandbox_path=server.store_path, image_dir=server.image_dir, sandbox_url=server.url
    )
    png = encode_png(Image.new("RGB", (4, 4), "white"))
    hosted = host.client().upload("proof-server-1", png)

    assert hosted.id == "proof-server-1"
    assert server.store.get(CloudflareImagesSandbox.IMAGES, "proof-server-1") is not None
    assert any(Path(server.image_dir).rglob("proof-server-1*")), "the server wrote the file"


def test_a_meter_event_is_recorded_once_through_the_stripe_sdk(server: Server) -> None:
    meter = SandboxBilling(sandbox_path=server.store_path, sandbox_url=server.url).meter()
    meter.record_usage(customer_id="cus_server", identifier="srv-recipient-1")
    meter.record_usage(customer_id="cus_server", identifier="srv-recipient-1")

    assert server.store.count("stripe.meter_events") == 1


def test_a_faraday_batch_is_submitted_once(server: Server) -> None:
    people = [IdentityRow(reference=f"ref-{n}", email=f"p{n}@example.com") for n in range(5)]
    enrichment = SandboxAddressEnrichment(sandbox_path=server.store_path, sandbox_url=server.url)
    with enrichment.enricher() as enricher:
        batch_id = enricher.submit("server-batch", people)
        assert enricher.submit("server-batch", people) == batch_id

    assert FaradaySandbox(server.store).count("targets") == 1


@pytest.mark.parametrize("name", ["gateway", "pixelixe"])
def test_a_proof_is_rendered_by_the_servers_renderers(server: Server, name: str) -> None:
    rendering = SandboxRendering(sandbox_path=server.store_path, sandbox_url=server.url)
    design = PostcardDesign.from_mapping(
        {"template": "classic", "brand_name": "Acme", "headline": "{first_name}, hello"}
    )
    request = ProofRequest(
        1, 2, design, ("1 Main St",), "Springfield", "62701", "US", region="IL", first_name="Jane"
    )

    proof = rendering.available()[name].render(request)

    assert proof.renderer == name
    assert proof.front_png.startswith(b"\x89PNG")


def test_order_sources_are_served_per_account(server: Server) -> None:
    data = OrderSandboxData(server.store)
    now = datetime.now(UTC)
    kinds: tuple[tuple[IntegrationKind, dict[str, str], str], ...] = (
        (IntegrationKind.OMETRIA, {}, "organization-4"),
        (IntegrationKind.KLAVIYO, {}, "organization-4"),
        (IntegrationKind.SHOPIFY, {"shop": "shop-srv"}, "shop-srv"),
    )
    for number, (kind, _settings, account) in enumerate(kinds, start=1):
        order = SandboxOrder(
            number=str(number),
            ordered_at=now - timedelta(hours=1),
            total=Decimal("10.00"),
            currency="USD",
        )
        data.place(kind, account, order)
    sources = SandboxOrderSources(sandbox_path=server.store_path, sandbox_url=server.url)

    found = {}
    for kind, settings, _account in kinds:
        client = sources.client_for(IntegrationRef(4, kind, "ORDERS_KEY", settings))
        pages = client.order_pages(now - timedelta(days=1))
        found[kind] = [o.external_id for page in pages for o in page.orders]
        client.close()
    assert found == {
        IntegrationKind.OMETRIA: ["1"],
        IntegrationKind.KLAVIYO: ["2"],
        IntegrationKind.SHOPIFY: ["gid://shopify/Order/3"],
    }


def test_a_vendors_latency_is_observed_and_others_are_not_slowed(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        started = time.monotonic()
        slow = client.get("/intelliprint/v1/prints")
        slow_took = time.monotonic() - started
        started = time.monotonic()
        client.get("/stannp/v1/postcards/get/nothing")
        fast_took = time.monotonic() - started

    assert slow.status_code == 401, "the vendor itself answered (no key given)"
    assert slow_took >= LATENCY
    assert fast_took < LATENCY


def test_the_server_survives_clients_that_go_away_mid_request(server: Server) -> None:
    host, port = httpx.URL(server.url).host, httpx.URL(server.url).port
    assert port is not None
    with socket.create_connection((host, port)) as half_body:  # body promised, never sent
        half_body.sendall(
            b'POST /lob/v1/postcards HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"to"'
        )
    with socket.create_connection((host, port)) as impatient:  # gone before the answer
        impatient.sendall(b"GET /intelliprint/v1/prints HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection((host, port)) as chunked:  # a chunk cut short
        chunked.sendall(
            b"POST /stripe/v1/billing/meter_events HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n100\r\nabc"
        )
    time.sleep(LATENCY + 0.2)  # the impatient request's answer has hit a closed socket

    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/healthz").text == "ok\n"
    lob = SandboxPrinters(sandbox_path=server.store_path, sandbox_url=server.url).printers()["lob"]
    assert lob.create_postcard(postcard("after-disconnects")).provider_piece_id


def _exchange(server: Server, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it."""
    url = httpx.URL(server.url)
    assert url.port is not None
    with socket.create_connection((url.host, url.port), timeout=10) as conn:
        conn.sendall(raw)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def test_requests_on_one_connection_are_answered_in_turn(server: Server) -> None:
    """Keep-alive: two requests sent together on one connection get two answers in order;
    a HEAD answer has the length of the body and no body."""
    answer = _exchange(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /lob/v1/postcards HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )

    assert answer.count(b"HTTP/1.1 ") == 3
    first, head, lob = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 OK") and first.endswith(b"\r\n\r\nok\n")
    assert head.startswith(b"200 OK") and b"content-length: 3" in head.lower()
    assert head.endswith(b"\r\n\r\n"), "no body after a HEAD answer's headers"
    assert lob.startswith(b"401 "), "Lob wants its key"
    assert b"date: " in lob.lower()


def test_a_request_that_is_not_http_gets_400_and_the_server_goes_on(server: Server) -> None:
    answer = _exchange(server, b"HELLO THERE\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"bad_request" in answer
    assert httpx.get(f"{server.url}/healthz").text == "ok\n"


def test_sigterm_stops_the_server(tmp_path: Path) -> None:
    running = Server(tmp_path)
    assert httpx.get(f"{running.url}/healthz").status_code == 200

    assert running.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.url}/healthz", timeout=2)


# -- configuration --------------------------------------------------------------------------


def test_per_vendor_behaviour_from_the_command_line() -> None:
    args = build_parser().parse_args(
        [
            "--store",
            "x.sqlite",
            "--latency",
            "lob=0.3,renderer=0.2",
            "--latency",
            "*=0.05",
            "--rate-limit",
            "stripe=25/1",
            "--failure-rate",
            "orders-shopify=0.1",
        ]
    )
    parsed = behaviours(args)

    assert parsed["lob"].latency_seconds == 0.3
    assert parsed["renderer"].latency_seconds == 0.2
    assert parsed["stripe"] == SandboxBehaviour(latency_seconds=0.05, rate_limit=(25, 1.0))
    assert parsed["orders-shopify"].failure_rate == 0.1
    assert parsed["*"] == SandboxBehaviour(latency_seconds=0.05)


def test_an_unknown_vendor_is_refused() -> None:
    args = build_parser().parse_args(["--store", "x.sqlite", "--latency", "lobb=0.3"])
    with pytest.raises(ValueError, match="lobb"):
        behaviours(args)


def test_the_sandbox_url_variable_binds_every_sandbox_resource_to_the_server(
    tmp_path: Path,
) -> None:
    environ = {"MAIL_PIPELINE_DATA_DIR": str(tmp_path)}
    settings = load_settings({**environ, "MAIL_PIPELINE_SANDBOX_URL": "http://127.0.0.1:8700/"})
    bound = sandbox_resources(settings)
    names = ("cdp", "rendering", "image_host", "printers", "billing")
    assert {name: bound[name].sandbox_url for name in names} == dict.fromkeys(
        names, "http://127.0.0.1:8700"
    )
    assert bound["order_sources"].sandbox_url == "http://127.0.0.1:8700"
    assert bound["address_enrichment"].sandbox_url == "http://127.0.0.1:8700"

    in_process = sandbox_resources(load_settings(environ))
    assert all(in_process[name].sandbox_url is None for name in names)


# -- accounting, 429s, pre-rendered proofs ---------------------------------------------------

KLAVIYO_HEADERS = {"Authorization": "Klaviyo-API-Key pk_sandbox_klaviyo", "revision": "2026-07-15"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One call per minute for each limited vendor, and pre-rendered proofs."""
    running = Server(
        tmp_path_factory.mktemp("sandbox-server-limited"),
        "--rate-limit",
        "lob=1/60,stannp=1/60,intelliprint=1/60,cloudflare=1/60,stripe=1/60",
        "--prerendered",
    )
    yield running
    running.stop()


def over_the_limit(server: Server, method: str, path: str) -> httpx.Response:
    """The answer to the second call in a row (the first takes the window's one slot)."""
    with httpx.Client(base_url=server.url) as client:
        client.request(method, path)
        return client.request(method, path)


def test_lob_answers_429_with_its_rate_limit_headers(limited: Server) -> None:
    answer = over_the_limit(limited, "POST", "/lob/v1/postcards")

    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    assert answer.headers["X-Rate-Limit-Limit"] == "1"
    assert answer.headers["X-Rate-Limit-Remaining"] == "0"
    assert time.time() < int(answer.headers["X-Rate-Limit-Reset"]) <= time.time() + 61  # epoch
    assert answer.headers["ratelimit-reset"] == "60"


def test_stannp_answers_429_with_its_rate_limit_headers(limited: Server) -> None:
    answer = over_the_limit(limited, "POST", "/stannp/v1/postcards/create")

    assert answer.status_code == 429
    assert answer.json() == {"success": False, "error": "Too many requests"}
    assert answer.headers["X-RateLimit-Limit"] == "1"
    assert answer.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(answer.headers["X-RateLimit-Reset"]) <= 60  # seconds until the reset


def test_intelliprint_answers_429_rate_limited_with_retry_after(limited: Server) -> None:
    answer = over_the_limit(limited, "POST", "/intelliprint/v1/prints")

    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "rate_limited"
    assert 0 < int(answer.headers["Retry-After"]) <= 60


def test_cloudflare_answers_429_with_ratelimit_policy_and_retry_after(limited: Server) -> None:
    answer = over_the_limit(limited, "POST", "/cloudflare/client/v4/accounts/x/images/v1")

    assert answer.status_code == 429
    assert answer.json()["errors"][0]["code"] == 971
    assert int(answer.headers["retry-after"]) > 0
    assert answer.headers["Ratelimit"].startswith('"default";r=0;t=')
    assert answer.headers["Ratelimit-Policy"] == '"default";q=1;w=60'  # the limit enforced


def test_stripe_answers_429_in_its_error_shape(limited: Server) -> None:
    answer = over_the_limit(limited, "POST", "/stripe/v1/billing/meter_events")

    assert answer.status_code == 429
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "rate_limit")
    assert "rate limit" in error["message"].lower()


def test_klaviyo_answers_429_with_retry_after_and_no_ratelimit_headers(limited: Server) -> None:
    """Its own per-endpoint windows (accounts: 1/s): RateLimit-* on answers, not on 429s.

    The windows are fixed seconds: two calls that straddle a second's boundary are both
    answered, so the test asks until a call lands in its predecessor's window (on a loaded
    machine the first pair may not)."""
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=limited.url, headers=KLAVIYO_HEADERS) as client:
        while len(answers) < 10 and (not answers or answers[-1].status_code != 429):
            answers.append(client.get("/klaviyo/api/accounts"))
    first, second = answers[0], answers[-1]

    assert first.status_code == 200
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(first.headers)
    assert second.status_code == 429
    assert all(answer.status_code == 200 for answer in answers[:-1])
    assert second.json()["errors"][0]["code"] == "throttled"
    assert int(second.headers["Retry-After"]) >= 1
    assert not any(name.lower().startswith("ratelimit") for name in second.headers)


def test_builtin_limits_off_lets_klaviyo_answer_every_call(tmp_path: Path) -> None:
    running = Server(tmp_path, "--builtin-limits", "off")
    try:
        with httpx.Client(base_url=running.url, headers=KLAVIYO_HEADERS) as client:
            answers = [client.get("/klaviyo/api/accounts").status_code for _ in range(3)]
    finally:
        running.stop()

    assert answers == [200, 200, 200]


def test_stats_count_each_vendors_answers_and_when_it_took_them_in(tmp_path: Path) -> None:
    running = Server(
        tmp_path,
        "--rate-limit",
        "stannp=2/60",
        "--latency",
        "stannp=0.2",
        "--latency-jitter",
        "0",
        "--lost-response-rate",
        "pixelixe=1",
    )
    try:
        with httpx.Client(base_url=running.url) as client:
            sent_at = time.time()
            statuses, took = [], []
            for _ in range(3):
                started = time.monotonic()
                statuses.append(client.post("/stannp/v1/postcards/create").status_code)
                took.append(time.monotonic() - started)
            keyed = client.post("/stannp/v1/postcards/create", headers={"Authorization": "k"})
            with pytest.raises(httpx.TransportError):
                client.post("/pixelixe/api/graphic/automation/v2", json={})
            counts = client.get("/_stats").json()
            timed = client.get("/_stats", params={"timestamps": "1"}).json()
    finally:
        running.stop()

    assert statuses == [401, 401, 429]
    assert keyed.status_code == 429
    stannp = counts["vendors"]["stannp"]
    assert stannp == {
        "requests": 4,
        "statuses": {"401": 2, "429": 2},
        "rate_limited": 2,
        "rate_limit": [2, 60.0],
        "credentials": 1,
    }
    assert counts["vendors"]["pixelixe"]["statuses"] == {"lost": 1}, "answered, then lost"
    assert "lob" not in counts["vendors"], "only vendors that answered something"
    accepted = timed["vendors"]["stannp"]["accepted_at"]
    assert list(accepted) == [""], "accepted calls per credential; these had none"
    first, second = accepted[""]
    # Counted when it arrived, before its 0.2 s of latency; the next one came after it.
    assert sent_at <= first < sent_at + 0.2 <= second <= sent_at + 5, "taken in on arrival"
    assert took[0] >= 0.2 and took[1] >= 0.2, "an accepted call takes the latency"
    assert took[2] < 0.2, "a 429 is answered at once"
    assert len(timed["vendors"]["pixelixe"]["accepted_at"][""]) == 1


def test_stats_keep_credentials_apart_without_revealing_them(limited: Server) -> None:
    with httpx.Client(base_url=limited.url) as client:
        for token in ("token-a", "token-b", "token-b"):
            client.get("/faraday/v1/targets", headers={"Authorization": f"Bearer {token}"})
        faraday = client.get("/_stats", params={"timestamps": "1"}).json()["vendors"]["faraday"]

    assert faraday["credentials"] == 2
    assert sorted(len(t) for t in faraday["accepted_at"].values()) == [1, 2]
    assert not any("token" in label for label in faraday["accepted_at"])


def test_prerendered_proofs_are_one_fixed_pair_at_the_print_size(limited: Server) -> None:
    rendering = SandboxRendering(sandbox_path=limited.store_path, sandbox_url=limited.url)
    gateway = rendering.available()["gateway"]
    design = PostcardDesign.from_mapping(
        {"template": "classic", "brand_name": "Acme", "headline": "{first_name}, hello"}
    )
    proofs = [
        gateway.render(
            ProofRequest(
                n,
                2,
                design,
                (f"{n} Main St",),
                "Springfield",
                "62701",
                "US",
                region="IL",
                first_name=name,
            )
        )
        for n, name in ((1, "Jane"), (2, "John"))
    ]

    assert proofs[0].front_png == proofs[1].front_png
    assert proofs[0].back_png == proofs[1].back_png
    assert proofs[0].front_png != proofs[0].back_png
    with Image.open(BytesIO(proofs[0].front_png)) as front:
        assert front.size == (proofs[0].width, proofs[0].height) == PRINT_SIZES["4x6"]


def test_the_server_delivers_status_webhooks_to_an_sqs_queue(tmp_path: Path) -> None:
    """``--webhooks-to-sqs``: the server itself puts the printers' due webhooks on the status
    queue (the production-like mode), signed as the printer signs them, found by boto3's
    ``AWS_ENDPOINT_URL`` (a moto server here)."""
    from moto.server import ThreadedMotoServer

    from mail_pipeline.integrations.printers.webhooks import parse_envelope

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        sqs = boto3.client(
            "sqs",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        queue_url = sqs.create_queue(QueueName="mail-status")["QueueUrl"]
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        running = Server(
            tmp_path,
            "--webhooks-to-sqs",
            queue_url,
            "--webhook-interval",
            "0.2",
            "--in-transit-after",
            "0.3",
            "--delivered-after",
            "0.6",
            "--returned-rate",
            "0",
            env=env,
        )
        try:
            lob = SandboxPrinters(sandbox_path=running.store_path, sandbox_url=running.url)
            piece = lob.printers()["lob"].create_postcard(postcard("to-sqs"))
            bodies: list[str] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any("delivered" in b for b in bodies):
                answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
                bodies += [m["Body"] for m in answer.get("Messages", [])]
        finally:
            running.stop()
    finally:
        moto.stop()

    # Verified with the printer's own webhook secret, as the status consumer does.
    printers = SandboxPrinters(sandbox_path=running.store_path, sandbox_url=running.url)
    updates = [u for b in bodies for u in parse_envelope(b, printers.printers())]
    assert {u.provider_piece_id for u in updates} == {piece.provider_piece_id}
    assert "delivered" in [u.status for u in updates], "the piece's whole timeline arrived"
    assert LobSandbox(SandboxStore(running.store_path)).pending_webhooks() == 0
