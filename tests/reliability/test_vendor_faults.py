"""Vendor faults from every sandbox, injected at run time (``SandboxTransport.faults``):
printers (Lob, Stannp, IntelliPrint), renderers (the gateway, Pixelixe), the image host
(Cloudflare Images), Stripe (v1 meter events and the v2 stream), Klaviyo events and the order
sources (Klaviyo, Ometria, Shopify).

For each vendor and each fault - a 429 storm with and without the vendor's wait header, a
5xx, a timeout, a slow answer, a connection reset, an answer lost after the vendor acted, a
refusal - the real client is driven through it and the test counts what the sandbox saw:

- a passing fault is retried a bounded number of times with jittered exponential backoff, or
  after exactly the wait the vendor asked for, and the side effect (a postcard, a meter event,
  a Klaviyo event, an image) exists once;
- an outage ends, after exactly the retry budget, in a retryable error naming the vendor;
- a refusal is not retried and reads "<vendor>: <the vendor's message> (HTTP 4xx ...)";
- a vendor that stays down is no longer called once its circuit is open, until one trial call
  after the cool-off.

Then the services: a mailing run whose printer, Stripe or Klaviyo is down leaves every
recipient waiting in Sending (none in Error), calls the vendor a bounded number of times
whatever the batch size, and a resumed run afterwards mails, bills and tells each recipient
once; a proofing run whose image host is down sends its recipients back to Pending without
spending their attempts while the circuit is open; order sync and image cleanup keep their
work for later. SQLite, or PostgreSQL when MAIL_PIPELINE_TEST_DATABASE_URL is set.

Time is a fake clock: the clients' sleeps are recorded and move it on, the sandboxes and the
circuits read it, so no test waits for a backoff or a cool-off.
"""

from __future__ import annotations

import functools
import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import OrderSyncState, OrganizationIntegration
from mail_pipeline.domain.addresses import Address
from mail_pipeline.domain.campaigns import IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.billing import UsageEvent
from mail_pipeline.integrations.billing.sandbox import SANDBOX_API_KEY as STRIPE_KEY
from mail_pipeline.integrations.billing.sandbox import StripeSandbox, StripeSandboxData
from mail_pipeline.integrations.billing.stripe_meter import StripeMeter
from mail_pipeline.integrations.circuit import (
    CircuitOpen,
    CircuitPolicy,
    isolated_registry,
)
from mail_pipeline.integrations.errors import (
    IntegrationError,
    RateLimited,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import HttpApi, RetryPolicy
from mail_pipeline.integrations.images.cloudflare import CloudflareImages
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox, LocalImageUrl
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY as KLAVIYO_KEY
from mail_pipeline.integrations.klaviyo.sandbox import KlaviyoSandbox
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData
from mail_pipeline.integrations.orders.base import OrderClient
from mail_pipeline.integrations.orders.factory import order_client
from mail_pipeline.integrations.orders.klaviyo import KlaviyoOrderClient
from mail_pipeline.integrations.orders.ometria import OmetriaOrderClient
from mail_pipeline.integrations.orders.sandbox import (
    KlaviyoOrdersSandbox,
    OmetriaSandbox,
    OrderSandboxData,
    SandboxOrder,
    ShopifySandbox,
    sandbox_account,
)
from mail_pipeline.integrations.orders.sandbox.ometria import SANDBOX_API_KEY as OMETRIA_KEY
from mail_pipeline.integrations.orders.sandbox.shopify import SANDBOX_ACCESS_TOKEN
from mail_pipeline.integrations.orders.shopify import ShopifyOrderClient
from mail_pipeline.integrations.printers.base import PostcardRequest
from mail_pipeline.integrations.printers.intelliprint import IntelliPrintPrinter
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.sandbox import (
    IntelliPrintSandbox,
    LobSandbox,
    StannpSandbox,
)
from mail_pipeline.integrations.printers.stannp import StannpPrinter
from mail_pipeline.integrations.printers.strategy import PrinterStrategy
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.renderer.chain import FallbackRenderer
from mail_pipeline.integrations.renderer.gateway import GatewayRenderer
from mail_pipeline.integrations.renderer.models import PostcardDesign, ProofRequest
from mail_pipeline.integrations.renderer.pixelixe import PixelixeDocuments, PixelixeRenderer
from mail_pipeline.integrations.renderer.sandbox import (
    SANDBOX_GATEWAY_TOKEN,
    SANDBOX_PIXELIXE_KEY,
    PixelixeSandbox,
    RenderingGatewaySandbox,
    sandbox_documents,
)
from mail_pipeline.integrations.sandbox.server import (
    SandboxHTTPServer,
    SandboxVendors,
    ServerConfig,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import FaultKind, SandboxTransport
from mail_pipeline.resources.queues import LocalQueues
from mail_pipeline.services.image_cleanup import deletion_message, process_image_deletions
from mail_pipeline.services.mailing import MailingServices, mail_batch
from mail_pipeline.services.order_sync import sync_orders
from mail_pipeline.services.proofing import proof_batch
from tests.integration.test_pipeline_services import Shop

S = RecipientStatus
K = FaultKind
#: Every client here retries this way: attempt n waits uniformly within [c/2, c] with
#: c = min(4, 0.5 * 2 ** (n - 1)), unless the vendor says how long.
POLICY = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=4.0)
#: The wait a planned 429 asks for, in the vendor's own header.
WAIT = 2.0
#: Longer than every client's read timeout (10 s; 30 s for the renderers and Stripe).
PAST_EVERY_TIMEOUT = 120.0


def backoff_bounds(attempt: int) -> tuple[float, float]:
    ceiling = min(POLICY.max_delay, POLICY.base_delay * 2 ** (attempt - 1))
    return ceiling / 2, ceiling


class FakeTime:
    """One clock per test: the sandboxes' and the circuits' clock. The clients' sleeps (their
    backoff) and the sandboxes' sleeps (a slow or silent vendor) are recorded apart, and each
    moves the clock on instead of waiting."""

    def __init__(self) -> None:
        self.now = time.time()
        self.client_sleeps: list[float] = []
        self.vendor_sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.client_sleeps.append(seconds)
            self.now += seconds

    def vendor_sleep(self, seconds: float) -> None:
        with self._lock:
            self.vendor_sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


# -- the vendors ------------------------------------------------------------------------------


@dataclass
class Case:
    """One vendor's real client over its sandbox, and what to count."""

    #: The name the client's errors carry.
    vendor: str
    transport: SandboxTransport
    #: The n-th operation (a new idempotency key, identifier or recipient for each n).
    call: Callable[[int], object]
    #: The endpoint the faults hit: method and a pattern of its path.
    method: str
    path: str
    #: Whether its 429 says how long to wait, and the range that wait is read as.
    sends_wait: bool
    wait_range: tuple[float, float]
    #: How many side effects the vendor holds (None: the calls have none).
    effects: Callable[[], int] | None = None
    #: After a lost answer the client finds the work by asking (IntelliPrint's lookup by
    #: reference) instead of sending the create again.
    reconciles_by_lookup: bool = False

    def target(self) -> int:
        """Requests the sandbox received on the faulted endpoint."""
        pattern = re.compile(self.path)
        return sum(
            n
            for key, n in self.transport.requests.items()
            if key.split(" ", 1)[0] == self.method and pattern.search(key.split(" ", 1)[1])
        )

    def inject(self, kind: FaultKind, **options: Any) -> None:
        self.transport.inject(kind, method=self.method, path=self.path, **options)

    def effect_count(self) -> int:
        return 0 if self.effects is None else self.effects()


def us_postcard(n: int) -> PostcardRequest:
    return PostcardRequest(
        idempotency_key=f"faults-key-{n:04d}",
        recipient_id=100 + n,
        campaign_id=3,
        organization_id=11,
        to=Address.build(
            name="Jane Doe",
            line1="210 King St",
            city="San Francisco",
            region="CA",
            postal_code="94107",
            country="US",
        ),
        front_url="https://img.test/front.png",
        back_url="https://img.test/back.png",
    )


def uk_postcard(n: int) -> PostcardRequest:
    return PostcardRequest(
        idempotency_key=f"faults-key-{n:04d}",
        recipient_id=100 + n,
        campaign_id=3,
        organization_id=11,
        to=Address.build(
            name="John Smith",
            line1="10 Downing Street",
            city="London",
            postal_code="SW1A 2AA",
            country="GB",
        ),
        front_url="https://img.test/front.png",
        back_url="https://img.test/back.png",
        size="A6",
    )


def proof_request(n: int) -> ProofRequest:
    return ProofRequest(
        recipient_id=100 + n,
        campaign_id=8,
        design=PostcardDesign.from_mapping(
            {"template": "classic", "brand_name": "Acme", "headline": "{first_name}, hello"}
        ),
        address_lines=("1 Main St",),
        city="Springfield",
        postal_code="62701",
        country="US",
        region="IL",
        first_name="Jane",
    )


@functools.cache
def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def lob(tmp: Path, fake: FakeTime) -> Case:
    sandbox = LobSandbox(SandboxStore(), clock=fake.time, sleep=fake.vendor_sleep)
    printer = LobPrinter(
        sandbox.api_key, transport=sandbox, retry=POLICY, rate_limit=None, sleep=fake.sleep
    )
    # Lob's reset header is epoch seconds rounded up on the wall clock: 2 to 3 s away.
    return Case(
        "lob",
        sandbox,
        lambda n: printer.create_postcard(us_postcard(n)),
        "POST",
        r"/v1/postcards$",
        sends_wait=True,
        wait_range=(WAIT - 0.5, WAIT + 1.01),
        effects=sandbox.created_count,
    )


def stannp(tmp: Path, fake: FakeTime) -> Case:
    sandbox = StannpSandbox(SandboxStore(), clock=fake.time, sleep=fake.vendor_sleep)
    printer = StannpPrinter(
        sandbox.api_key, transport=sandbox, retry=POLICY, rate_limit=None, sleep=fake.sleep
    )
    return Case(
        "stannp",
        sandbox,
        lambda n: printer.create_postcard(uk_postcard(n)),
        "POST",
        r"/postcards/create$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
        effects=sandbox.created_count,
    )


def intelliprint(tmp: Path, fake: FakeTime) -> Case:
    sandbox = IntelliPrintSandbox(SandboxStore(), clock=fake.time, sleep=fake.vendor_sleep)
    printer = IntelliPrintPrinter(
        sandbox.api_key, transport=sandbox, retry=POLICY, rate_limit=None, sleep=fake.sleep
    )
    return Case(
        "intelliprint",
        sandbox,
        lambda n: printer.create_postcard(uk_postcard(n)),
        "POST",
        r"/v1/prints$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
        effects=sandbox.created_count,
        reconciles_by_lookup=True,
    )


def gateway(tmp: Path, fake: FakeTime) -> Case:
    sandbox = RenderingGatewaySandbox(SandboxStore(), clock=fake.time, sleep=fake.vendor_sleep)
    renderer = GatewayRenderer(
        "https://render.example",
        SANDBOX_GATEWAY_TOKEN,
        transport=sandbox,
        retry=POLICY,
        sleep=fake.sleep,
        clock=fake.time,
    )
    return Case(
        "render_gateway",
        sandbox,
        lambda n: renderer.render(proof_request(n)),
        "POST",
        r"/v1/renders$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
    )


DOCUMENTS = {"classic": {"4x6": PixelixeDocuments(front="doc-front", back="doc-back")}}


def pixelixe(tmp: Path, fake: FakeTime) -> Case:
    sandbox = PixelixeSandbox(
        SandboxStore(),
        documents=sandbox_documents(DOCUMENTS),
        clock=fake.time,
        sleep=fake.vendor_sleep,
    )
    renderer = PixelixeRenderer(
        SANDBOX_PIXELIXE_KEY, DOCUMENTS, transport=sandbox, retry=POLICY, sleep=fake.sleep
    )
    return Case(
        "pixelixe",
        sandbox,
        lambda n: renderer.render(proof_request(n)),
        "POST",
        r"/automation/v2$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
    )


def cloudflare(tmp: Path, fake: FakeTime) -> Case:
    # Cloudflare locks a token out for as long as its 429 says (5 minutes in production);
    # here no longer than the planned wait.
    sandbox = CloudflareImagesSandbox(
        SandboxStore(),
        storage_dir=tmp / "images",
        clock=fake.time,
        sleep=fake.vendor_sleep,
        lockout_seconds=0.01,
    )
    images = CloudflareImages(
        sandbox.account_id,
        sandbox.api_token,
        transport=sandbox,
        delivery_url=LocalImageUrl(tmp / "images"),
        retry=POLICY,
        sleep=fake.sleep,
        clock=fake.time,
        batch=False,
    )
    return Case(
        "cloudflare_images",
        sandbox,
        lambda n: images.upload(f"proofs/c3/r{n}/f00d/front.png", small_png(), {"n": n}),
        "POST",
        r"/images/v1$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
        effects=lambda: sandbox.store.count(CloudflareImagesSandbox.IMAGES),
    )


def _stripe(fake: FakeTime) -> tuple[StripeSandbox, StripeMeter]:
    sandbox = StripeSandbox(SandboxStore(), clock=fake.time, sleep=fake.vendor_sleep)
    meter = StripeMeter(
        STRIPE_KEY, transport=sandbox, retry=POLICY, sleep=fake.sleep, clock=fake.time
    )
    return sandbox, meter


def stripe_v1(tmp: Path, fake: FakeTime) -> Case:
    sandbox, meter = _stripe(fake)
    # Stripe's 429 carries no wait (its documentation asks for exponential backoff).
    return Case(
        "stripe",
        sandbox,
        lambda n: meter.record_usage(customer_id="cus_faults", identifier=f"usage-{n}"),
        "POST",
        r"/v1/billing/meter_events$",
        sends_wait=False,
        wait_range=backoff_bounds(1),
        effects=lambda: len(StripeSandboxData(sandbox.store).meter_events()),
    )


def stripe_stream(tmp: Path, fake: FakeTime) -> Case:
    sandbox, meter = _stripe(fake)

    def call(n: int) -> None:
        stamp = datetime.fromtimestamp(fake.time(), UTC)
        meter.record_usage_many([UsageEvent("cus_faults", f"usage-{n}", 1, stamp)])

    return Case(
        "stripe",
        sandbox,
        call,
        "POST",
        r"/v2/billing/meter_event_stream$",
        sends_wait=False,
        wait_range=backoff_bounds(1),
        effects=lambda: len(StripeSandboxData(sandbox.store).meter_events()),
    )


def klaviyo_events(tmp: Path, fake: FakeTime) -> Case:
    sandbox = KlaviyoSandbox(SandboxStore(), clock=fake.time, sleep=fake.vendor_sleep)
    client = KlaviyoClient(KLAVIYO_KEY, transport=sandbox, retry=POLICY, sleep=fake.sleep)
    return Case(
        "klaviyo",
        sandbox,
        lambda n: client.create_event(
            "Postcard Sent",
            unique_id=f"postcard-{n}",
            email=f"person{n}@example.com",
            properties={"printer": "lob"},
        ),
        "POST",
        r"/api/events$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
        effects=lambda: len(KlaviyoSandboxData(sandbox.store).events("Postcard Sent")),
    )


def _orders(
    kind: IntegrationKind, fake: FakeTime
) -> tuple[SandboxStore, str, dict[str, Any], OrderSandboxData]:
    store = SandboxStore()
    settings = {"shop": "shop-a"} if kind is IntegrationKind.SHOPIFY else {}
    account = sandbox_account(kind, 1, settings)
    data = OrderSandboxData(store, clock=fake.time)
    placed = datetime.fromtimestamp(fake.time(), UTC) - timedelta(hours=2)
    for number in (1, 2):
        order = SandboxOrder(
            number=str(number),
            ordered_at=placed + timedelta(minutes=number),
            total=Decimal("25.00"),
            currency="USD",
            email=f"buyer{number}@example.com",
        )
        data.place(kind, account, order)
    return store, account, settings, data


def _order_case(
    kind: IntegrationKind, transport: SandboxTransport, client: OrderClient, fake: FakeTime
) -> Callable[[int], object]:
    api = client.client.api if isinstance(client, KlaviyoOrderClient) else client.api  # type: ignore[attr-defined]
    assert isinstance(api, HttpApi)
    api.retry, api.sleep = POLICY, fake.sleep
    since = datetime.fromtimestamp(fake.time(), UTC) - timedelta(days=1)
    return lambda _n: [o for page in client.order_pages(since) for o in page.orders]


def klaviyo_orders(tmp: Path, fake: FakeTime) -> Case:
    store, account, settings, _ = _orders(IntegrationKind.KLAVIYO, fake)
    sandbox = KlaviyoOrdersSandbox(
        store, account=account, limits=None, clock=fake.time, sleep=fake.vendor_sleep
    )
    client = order_client(IntegrationKind.KLAVIYO, KLAVIYO_KEY, settings, transport=sandbox)
    return Case(
        "klaviyo",
        sandbox,
        _order_case(IntegrationKind.KLAVIYO, sandbox, client, fake),
        "GET",
        r"/api/events$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
    )


def ometria_orders(tmp: Path, fake: FakeTime) -> Case:
    store, account, _settings, _ = _orders(IntegrationKind.OMETRIA, fake)
    sandbox = OmetriaSandbox(
        store, account=account, rate_limit=None, clock=fake.time, sleep=fake.vendor_sleep
    )
    client = OmetriaOrderClient(OMETRIA_KEY, transport=sandbox, rate_limit=None)
    # Ometria's 429 carries no wait.
    return Case(
        "ometria",
        sandbox,
        _order_case(IntegrationKind.OMETRIA, sandbox, client, fake),
        "GET",
        r"/v2/orders$",
        sends_wait=False,
        wait_range=backoff_bounds(1),
    )


def shopify_orders(tmp: Path, fake: FakeTime) -> Case:
    store, _account, settings, _ = _orders(IntegrationKind.SHOPIFY, fake)
    sandbox = ShopifySandbox(store, bucket=None, clock=fake.time, sleep=fake.vendor_sleep)
    client = ShopifyOrderClient.from_settings(SANDBOX_ACCESS_TOKEN, settings, transport=sandbox)
    # Shopify's Retry-After is written with one decimal ("2.0").
    return Case(
        "shopify",
        sandbox,
        _order_case(IntegrationKind.SHOPIFY, sandbox, client, fake),
        "POST",
        r"/graphql\.json$",
        sends_wait=True,
        wait_range=(WAIT, WAIT),
    )


VENDORS: dict[str, Callable[[Path, FakeTime], Case]] = {
    "lob": lob,
    "stannp": stannp,
    "intelliprint": intelliprint,
    "render_gateway": gateway,
    "pixelixe": pixelixe,
    "cloudflare_images": cloudflare,
    "stripe_v1": stripe_v1,
    "stripe_stream": stripe_stream,
    "klaviyo_events": klaviyo_events,
    "klaviyo_orders": klaviyo_orders,
    "ometria_orders": ometria_orders,
    "shopify_orders": shopify_orders,
}


@pytest.fixture(params=list(VENDORS))
def case(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeTime) -> Case:
    return VENDORS[request.param](tmp_path, fake)


#: Faults that pass: (kind, options). ``slow_past_timeout`` is an answer later than the
#: client waits: the vendor acts, the client has given up (a lost answer).
PASSING: dict[str, tuple[FaultKind, dict[str, Any]]] = {
    "rate_limited": (K.RATE_LIMITED, {"seconds": WAIT}),
    "rate_limited_no_wait": (K.RATE_LIMITED_NO_WAIT, {}),
    "server_error_503": (K.SERVER_ERROR, {}),
    "server_error_502": (K.SERVER_ERROR, {"status": 502}),
    "timeout": (K.TIMEOUT, {}),
    "connection_reset": (K.CONNECTION_RESET, {}),
    "lost_response": (K.LOST_RESPONSE, {}),
    "reset_after_acting": (K.RESET_AFTER_ACTING, {}),
    "slow_past_timeout": (K.SLOW, {"seconds": PAST_EVERY_TIMEOUT}),
}
ACTED = {"lost_response", "reset_after_acting", "slow_past_timeout"}


def expect_delays(case: Case, fault: str, delays: list[float], first_attempt: int = 1) -> None:
    """Each delay is the vendor's wait where it sent one, else the backoff of its attempt."""
    for attempt, delay in enumerate(delays, start=first_attempt):
        if fault == "rate_limited" and case.sends_wait:
            low, high = case.wait_range
        else:
            low, high = backoff_bounds(attempt)
        assert low <= delay <= high, f"attempt {attempt} waited {delay:.3f}s, not {low}..{high}"


# -- faults that pass -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(PASSING))
def test_a_passing_fault_is_retried_with_backoff_and_the_work_is_done_once(
    case: Case, fake: FakeTime, fault: str
) -> None:
    case.call(0)  # a clean call: what one costs
    clean, effects = case.target(), case.effect_count()
    kind, options = PASSING[fault]
    case.inject(kind, times=2, **options)
    fake.client_sleeps.clear()

    case.call(1)

    if fault in ACTED and case.reconciles_by_lookup:
        # the first create was done; the lookup before the next one finds it
        assert case.target() - clean == clean
        assert len(fake.client_sleeps) == 1
    else:
        assert case.target() - clean == clean + 2, "two faulted requests, then the clean one"
        assert len(fake.client_sleeps) == 2
    expect_delays(case, fault, fake.client_sleeps)
    if case.effects is not None:
        assert case.effect_count() - effects == 1, "the work exists once"


def test_backoff_is_jittered(case: Case, fake: FakeTime) -> None:
    firsts = []
    for n in range(5):
        case.inject(K.SERVER_ERROR, times=1)
        fake.client_sleeps.clear()
        case.call(n)
        (delay,) = fake.client_sleeps
        firsts.append(delay)
    expect_delays(case, "server_error_503", firsts[:1])
    assert all(backoff_bounds(1)[0] <= d <= backoff_bounds(1)[1] for d in firsts)
    assert len(set(firsts)) > 1, f"every first retry waited the same: {firsts}"


def test_a_slow_answer_within_the_timeout_is_waited_for_not_retried(
    case: Case, fake: FakeTime
) -> None:
    case.call(0)
    clean, effects = case.target(), case.effect_count()
    case.inject(K.SLOW, times=1, seconds=1.5)
    fake.client_sleeps.clear()

    case.call(1)

    assert case.target() - clean == clean
    assert fake.client_sleeps == []
    assert fake.vendor_sleeps == [1.5]
    if case.effects is not None:
        assert case.effect_count() - effects == 1


# -- faults that outlast the retries --------------------------------------------------------

OUTAGES = [
    "rate_limited",
    "rate_limited_no_wait",
    "server_error_503",
    "timeout",
    "connection_reset",
    "lost_response",
]


@pytest.mark.parametrize("fault", OUTAGES)
def test_an_outage_ends_in_a_retryable_error_after_exactly_the_retry_budget(
    case: Case, fake: FakeTime, fault: str
) -> None:
    case.call(0)
    clean, effects = case.target(), case.effect_count()
    kind, options = PASSING[fault]
    case.inject(kind, times=None, **options)
    fake.client_sleeps.clear()

    if fault in ACTED and case.reconciles_by_lookup:
        case.call(1)  # the lost create is found by the lookup before the next one
        assert case.target() - clean == 1
        assert case.effect_count() - effects == 1
        return
    with pytest.raises(IntegrationError) as failed:
        case.call(1)

    error = failed.value
    assert error.retryable and error.vendor == case.vendor
    assert not isinstance(error, CircuitOpen)
    assert isinstance(
        error,
        RateLimited if kind in (K.RATE_LIMITED, K.RATE_LIMITED_NO_WAIT) else VendorUnavailable,
    )
    assert case.target() - clean == POLICY.max_attempts, "bounded: the retry budget, no more"
    assert len(fake.client_sleeps) == POLICY.max_attempts - 1
    expect_delays(case, fault, fake.client_sleeps)
    if case.effects is not None:
        expected = 1 if fault in ACTED else 0
        assert case.effect_count() - effects == expected, "never twice, even when it failed"


# -- refusals ---------------------------------------------------------------------------------


def test_a_refusal_is_not_retried_reads_well_and_never_opens_the_circuit(
    case: Case, fake: FakeTime
) -> None:
    case.call(0)
    clean = case.target()
    case.inject(K.REFUSED, times=None)
    fake.client_sleeps.clear()

    for n in range(1, 8):  # more than the circuit's threshold of failures
        with pytest.raises(IntegrationError) as refused:
            case.call(n)
        error = refused.value
        assert not error.retryable and error.vendor == case.vendor
        assert str(error).startswith(f"{case.vendor}: ")
        assert "the request was refused (a planned fault)" in str(error)
        assert "HTTP 422" in str(error)
    assert case.target() - clean == 7, "one request per call: a refusal is final"
    assert fake.client_sleeps == []

    case.transport.faults.clear()
    case.call(8)  # the vendor is up: no circuit stands in the way


# -- the circuit ------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_a_vendor_that_is_down_is_not_called_while_its_circuit_is_open(
    vendor: str, tmp_path: Path, fake: FakeTime
) -> None:
    policy = CircuitPolicy(failure_threshold=3, cool_off_seconds=30.0)
    with isolated_registry(policy, clock=fake.time, wall_clock=fake.time):
        case = VENDORS[vendor](tmp_path, fake)
        case.transport.inject(K.SERVER_ERROR, times=None)  # every request, every endpoint
        for n in range(3):
            with pytest.raises(VendorUnavailable) as failed:
                case.call(n)
            assert not isinstance(failed.value, CircuitOpen)
        sent = case.transport.request_count

        with pytest.raises(CircuitOpen) as refused:
            case.call(3)

        assert case.transport.request_count == sent, "not called while the circuit is open"
        error = refused.value
        assert error.retryable and error.vendor == case.vendor
        text = str(error)
        assert text.startswith(
            f"{case.vendor}: not called: circuit open after 3 consecutive failures, retrying after "
        )
        assert re.search(r"retrying after \d\d:\d\d:\d\d UTC; last failure: .*503", text), text

        fake.advance(policy.cool_off_seconds + 1)
        case.transport.faults.clear()
        case.call(4)  # the trial call: it is answered, and the circuit closes
        case.call(5)
        assert case.transport.request_count > sent


# -- over the network: the sandbox server's /_faults ----------------------------------------


@pytest.fixture
def sandbox_server(tmp_path: Path) -> Iterator[tuple[str, SandboxVendors]]:
    http = SandboxHTTPServer(("127.0.0.1", 0))
    vendors = SandboxVendors(
        ServerConfig(
            store_path=str(tmp_path / "sandbox.sqlite"),
            image_dir=str(tmp_path / "images"),
            public_url=http.url,
        )
    )
    http.vendors = vendors
    loop = threading.Thread(target=http.serve_forever, daemon=True)
    loop.start()
    yield http.url, vendors
    http.shutdown()
    http.server_close()
    loop.join(timeout=10)


def test_faults_planned_over_http_reach_a_client_over_the_network(
    sandbox_server: tuple[str, SandboxVendors],
) -> None:
    url, vendors = sandbox_server
    lob_sandbox = vendors.fixed["lob"]
    assert isinstance(lob_sandbox, LobSandbox)
    plan = {
        "vendor": "lob",
        "faults": [
            {"kind": "server_error", "times": 1, "method": "POST"},
            {"kind": "connection_reset", "times": 1},
            {"kind": "lost_response", "times": 1},
        ],
    }
    with httpx.Client(base_url=url, timeout=30) as http:
        planned = http.post("/_faults", json=plan)
        assert planned.status_code == 200
        assert [p["kind"] for p in planned.json()["planned"]] == [
            "server_error",
            "connection_reset",
            "lost_response",
        ]
        sleeps: list[float] = []
        printer = LobPrinter(
            lob_sandbox.api_key,
            base_url=f"{url}/lob/v1",
            retry=POLICY,
            rate_limit=None,
            sleep=sleeps.append,
        )
        piece = printer.create_postcard(us_postcard(1))

        assert lob_sandbox.created_count() == 1, "the lost answer's postcard, once"
        assert lob_sandbox.requests["POST /v1/postcards"] == 4
        assert len(sleeps) == 3
        assert printer.find_postcard("faults-key-0001", 101) == piece
        seen = http.get("/_faults").json()
        assert seen == {
            "lob": {
                "planned": [],
                "injected": {"connection_reset": 1, "lost_response": 1, "server_error": 1},
            }
        }
        stats = http.get("/_stats").json()["vendors"]["lob"]["statuses"]
        assert stats["503"] == 1 and stats["reset"] == 1 and stats["lost"] == 1

        # a transport fault drops the connection: no answer at all, as on a real network
        http.post("/_faults", json={"vendor": "lob", "faults": [{"kind": "connection_reset"}]})
        with pytest.raises(httpx.TransportError):
            http.get("/lob/v1/postcards", auth=(lob_sandbox.api_key, ""))

        bad = http.post("/_faults", json={"vendor": "lob", "faults": [{"kind": "meteor"}]})
        assert bad.status_code == 400 and "a fault needs a kind" in bad.json()["error"]
        unknown = http.post("/_faults", json={"vendor": "nobody", "faults": []})
        assert unknown.status_code == 400 and "no sandbox vendor" in unknown.json()["error"]
        http.post(
            "/_faults", json={"vendor": "lob", "faults": [{"kind": "refused", "times": None}]}
        )
        assert http.delete("/_faults", params={"vendor": "lob"}).status_code == 200
        assert http.get("/_faults").json()["lob"]["planned"] == []
    assert printer.create_postcard(us_postcard(2)).provider_piece_id


# -- the services -----------------------------------------------------------------------------


@dataclass
class Vendors:
    """The mailing run's vendors, each a sandbox over one store, with their clients."""

    store: SandboxStore
    lob: LobSandbox
    stripe: StripeSandbox
    klaviyo: KlaviyoSandbox
    fake: FakeTime
    tmp: Path

    @classmethod
    def build(cls, tmp: Path, fake: FakeTime) -> Vendors:
        store = SandboxStore(tmp / "vendors.sqlite")
        common: dict[str, Any] = {"clock": fake.time, "sleep": fake.vendor_sleep}
        return cls(
            store,
            LobSandbox(store, **common),
            StripeSandbox(store, **common),
            KlaviyoSandbox(store, limits=None, **common),
            fake,
            tmp,
        )

    def client_for(self, integration: IntegrationRef) -> KlaviyoClient:
        return KlaviyoClient(
            KLAVIYO_KEY, transport=self.klaviyo, retry=POLICY, sleep=self.fake.sleep
        )

    def mailing(self) -> MailingServices:
        printer = LobPrinter(
            self.lob.api_key,
            transport=self.lob,
            retry=POLICY,
            rate_limit=None,
            sleep=self.fake.sleep,
        )
        return MailingServices(
            printers=PrinterStrategy.default({"lob": printer}),
            billing=StripeMeter(
                STRIPE_KEY,
                transport=self.stripe,
                retry=POLICY,
                sleep=self.fake.sleep,
                clock=self.fake.time,
            ),
            cdp=self,
            image_deletions=LocalQueues(
                path=str(self.tmp / "queues.sqlite")
            ).image_deletion_queue(),
        )

    def done(self) -> dict[str, int]:
        return {
            "lob": self.lob.created_count(),
            "stripe": len(StripeSandboxData(self.store).meter_events()),
            "klaviyo": len(KlaviyoSandboxData(self.store).events("Postcard Sent")),
        }


#: The circuit of the service tests: the production threshold, a fake clock.
SERVICE_POLICY = CircuitPolicy(failure_threshold=5, cool_off_seconds=30.0)
CONCURRENCY = 4


@pytest.mark.parametrize("down", ["lob", "stripe", "klaviyo"])
def test_a_mailing_run_whose_vendor_is_down_leaves_everyone_waiting_and_stops_calling_it(
    db_url: str, tmp_path: Path, fake: FakeTime, down: str
) -> None:
    shop = Shop(db_url, tmp_path)
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 30, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
    with isolated_registry(SERVICE_POLICY, clock=fake.time, wall_clock=fake.time):
        vendors = Vendors.build(tmp_path, fake)
        sandbox: SandboxTransport = getattr(vendors, down)
        sandbox.inject(K.SERVER_ERROR, times=None)

        outage = mail_batch(
            shop.sessions, batch, vendors.mailing(), run_id="outage", concurrency=CONCURRENCY
        )

        assert outage.sent == 0 and outage.errors == {}
        assert set(outage.deferred) == set(ids), "every recipient waits"
        assert shop.status(ids) == dict.fromkeys(ids, S.SENDING)
        reasons = " | ".join(outage.deferred.values())
        assert "circuit open after 5 consecutive failures" in reasons
        # Without the circuit: 30 recipients x 4 attempts. With it: the calls admitted before
        # it opened (5 that failed + at most one in flight per other thread), 4 attempts each.
        bound = (SERVICE_POLICY.failure_threshold + CONCURRENCY - 1) * POLICY.max_attempts
        assert sandbox.request_count <= bound < len(ids) * POLICY.max_attempts
        before = vendors.done()
        assert before[down] == 0
        if down != "lob":
            assert before["lob"] == len(ids), "printed before the follow-up failed"

        sandbox.faults.clear()
        fake.advance(SERVICE_POLICY.cool_off_seconds + 1)
        recovered = shop.recover()
        assert recovered.returned["Sending"] == len(ids)
        resumed = mail_batch(
            shop.sessions, batch, vendors.mailing(), run_id="resumed", concurrency=CONCURRENCY
        )

    assert resumed.sent == len(ids) and resumed.deferred == {} and resumed.errors == {}
    assert shop.status(ids) == dict.fromkeys(ids, S.SENT)
    assert vendors.done() == {"lob": 30, "stripe": 30, "klaviyo": 30}, "each once, never twice"


def test_a_printer_refusal_puts_that_recipient_in_error_with_the_printers_reason(
    db_url: str, tmp_path: Path, fake: FakeTime
) -> None:
    shop = Shop(db_url, tmp_path)
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 3, S.PROOFED)
    batch = shop.claim(S.PROOFED, S.SENDING_STAGED, campaign)
    vendors = Vendors.build(tmp_path, fake)
    vendors.lob.inject(K.REFUSED, times=1, method="POST")

    result = mail_batch(shop.sessions, batch, vendors.mailing(), concurrency=1)

    assert result.sent == 2 and result.deferred == {}
    ((refused, reason),) = result.errors.items()
    assert reason == (
        "lob refused the postcard: lob: the request was refused (a planned fault) "
        "(HTTP 422, REFUSED)"
    )
    rows = shop.rows(ids)
    assert rows[refused].status is S.ERROR and rows[refused].status_reason == reason
    assert vendors.lob.created_count() == 2


@pytest.mark.parametrize("down", ["image_host", "renderer"])
def test_a_proofing_run_whose_vendor_is_down_sends_recipients_back_without_spending_attempts(
    db_url: str, tmp_path: Path, fake: FakeTime, down: str
) -> None:
    shop = Shop(db_url, tmp_path)
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 12)
    with isolated_registry(SERVICE_POLICY, clock=fake.time, wall_clock=fake.time):
        host = CloudflareImagesSandbox(
            SandboxStore(), storage_dir=tmp_path / "images", clock=fake.time, lockout_seconds=0.01
        )
        images = CloudflareImages(
            host.account_id,
            host.api_token,
            transport=host,
            delivery_url=LocalImageUrl(tmp_path / "images"),
            retry=POLICY,
            sleep=fake.sleep,
            clock=fake.time,
            batch=False,
        )
        drawing = RenderingGatewaySandbox(SandboxStore(), clock=fake.time)
        gateway = GatewayRenderer(
            "https://render.example",
            SANDBOX_GATEWAY_TOKEN,
            transport=drawing,
            retry=POLICY,
            sleep=fake.sleep,
            clock=fake.time,
        )
        # the gateway alone: with no renderer to fall back on, its outage is the batch's
        renderer = FallbackRenderer([gateway])
        vendor, named = (host, "cloudflare_images") if down == "image_host" else (drawing, "")
        vendor.inject(K.SERVER_ERROR, times=None)

        def run() -> Any:
            return proof_batch(
                shop.sessions,
                shop.claim(S.PENDING, S.PROOFING_STAGED, campaign),
                renderer,
                images,
                id_key="faults-proof-key",
                concurrency=CONCURRENCY,
                max_attempts=2,
            )

        first = run()
        assert (first.proofed, first.released, first.errors) == (0, len(ids), {})
        bound = (SERVICE_POLICY.failure_threshold + CONCURRENCY - 1) * POLICY.max_attempts
        calls = vendor.request_count
        assert calls <= bound
        rows = shop.rows(ids).values()
        tried = [r for r in rows if "circuit open" not in (r.status_reason or "")]
        waited = [r for r in rows if "circuit open" in (r.status_reason or "")]
        assert waited and len(tried) >= SERVICE_POLICY.failure_threshold
        assert {r.attempts for r in tried} == {1}, "a real attempt counts"
        assert {r.attempts for r in waited} == {0}, "the vendor was not asked: no attempt"

        for _ in range(3):  # the circuit stays open (no time passes): nobody gives up
            again = run()
            assert (again.proofed, again.released, again.errors) == (0, len(ids), {})
        assert vendor.request_count == calls, "no call while the circuit is open"
        rows = shop.rows(ids).values()
        assert {r.status for r in rows} == {S.PENDING}
        says = "will retry: cloudflare_images: " if named else "will retry: renderer: every "
        assert all((r.status_reason or "").startswith(says) for r in rows)
        assert max(r.attempts for r in rows) == 1

        vendor.faults.clear()
        fake.advance(SERVICE_POLICY.cool_off_seconds + 1)
        healed = run()

    assert (healed.proofed, healed.errors) == (len(ids), {})
    assert shop.status(ids) == dict.fromkeys(ids, S.PROOFED)
    assert host.store.count(CloudflareImagesSandbox.IMAGES) == 2 * len(ids)


def test_order_sync_keeps_its_window_while_the_source_is_down_and_reads_it_after(
    db_url: str, tmp_path: Path, fake: FakeTime
) -> None:
    shop = Shop(db_url, tmp_path)
    org = shop.organization()
    with unit_of_work(db_url) as session:
        session.add(
            OrganizationIntegration(
                organization_id=org, kind=IntegrationKind.OMETRIA, secret_ref="OMETRIA_KEY"
            )
        )
    store = SandboxStore()
    account = sandbox_account(IntegrationKind.OMETRIA, org, {})
    data = OrderSandboxData(store, clock=fake.time)
    data.place(
        IntegrationKind.OMETRIA,
        account,
        SandboxOrder(
            number="1",
            ordered_at=datetime.fromtimestamp(fake.time(), UTC) - timedelta(hours=1),
            total=Decimal("30.00"),
            currency="USD",
        ),
    )
    with isolated_registry(
        CircuitPolicy(failure_threshold=1), clock=fake.time, wall_clock=fake.time
    ):
        ometria = OmetriaSandbox(store, account=account, rate_limit=None, clock=fake.time)

        class Sources:
            def client_for(self, integration: IntegrationRef) -> OrderClient:
                client = OmetriaOrderClient(OMETRIA_KEY, transport=ometria, rate_limit=None)
                client.api.retry, client.api.sleep = POLICY, fake.sleep
                return client

        ometria.inject(K.SERVER_ERROR, times=None)
        kinds = [IntegrationKind.OMETRIA]
        down = sync_orders(shop.sessions, Sources(), kinds=kinds)
        (failed,) = down.failures
        assert failed.error is not None and failed.error.startswith("ometria: ")
        assert "HTTP 503" in failed.error
        assert ometria.request_count == POLICY.max_attempts
        open_ = sync_orders(shop.sessions, Sources(), kinds=kinds)
        (refused,) = open_.failures
        assert refused.error is not None
        assert refused.error.startswith("ometria: not called: circuit open after 1 consecutive")
        assert ometria.request_count == POLICY.max_attempts, "not called while open"
        with unit_of_work(db_url) as session:
            state = session.scalars(select(OrderSyncState)).one()
            assert state.last_success_at is None and state.last_error == refused.error

        ometria.faults.clear()
        fake.advance(31)
        healed = sync_orders(shop.sessions, Sources(), kinds=kinds)
    assert healed.failures == [] and healed.inserted == 1


def test_image_cleanup_keeps_its_messages_while_the_image_host_is_down(
    tmp_path: Path, fake: FakeTime
) -> None:
    host = CloudflareImagesSandbox(SandboxStore(), storage_dir=tmp_path / "images")
    images = CloudflareImages(
        host.account_id,
        host.api_token,
        transport=host,
        delivery_url=LocalImageUrl(tmp_path / "images"),
        retry=POLICY,
        sleep=fake.sleep,
        batch=False,
    )
    image_ids = [f"proofs/c3/r{n}/f00d/front.png" for n in range(6)]
    for image_id in image_ids:
        images.upload(image_id, small_png())
    queue = LocalQueue(str(tmp_path / "queues.sqlite"), "image-deletion", clock=fake.time)
    for n, image_id in enumerate(image_ids):
        queue.send(deletion_message(n + 1, [image_id]))

    host.inject(K.SERVER_ERROR, times=None)
    down = process_image_deletions(queue, images, visibility_timeout=60, concurrency=2)

    assert (down.images_deleted, down.messages_deleted) == (0, 0)
    assert down.messages_retained == len(image_ids)
    assert host.store.count(CloudflareImagesSandbox.IMAGES) == len(image_ids)

    host.faults.clear()
    fake.advance(61)  # the messages are visible again
    with isolated_registry():  # a later pass, the circuit closed again
        healed = process_image_deletions(queue, images, visibility_timeout=60, concurrency=2)
    assert healed.images_deleted == len(image_ids)
    assert host.store.count(CloudflareImagesSandbox.IMAGES) == 0
