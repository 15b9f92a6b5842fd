"""The rendering gateway client: request shape (respx) and behaviour against its sandbox."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
import respx
from PIL import Image

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.renderer.backup import render_content
from mail_pipeline.integrations.renderer.gateway import GatewayRenderer
from mail_pipeline.integrations.renderer.models import PostcardDesign, ProofRequest
from mail_pipeline.integrations.renderer.personalize import personalize
from mail_pipeline.integrations.renderer.png import UnusableImage
from mail_pipeline.integrations.renderer.sandbox import RenderingGatewaySandbox
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

BASE = "https://render-gateway.internal"
TOKEN = "sandbox-gateway-token"


def request(**overrides: object) -> ProofRequest:
    fields: dict[str, object] = {
        "recipient_id": 7,
        "campaign_id": 3,
        "design": PostcardDesign.from_mapping(
            {
                "template": "classic",
                "brand_name": "Acme",
                "headline": "{first_name}, hello",
                "offer_code": "WELCOME10",
            }
        ),
        "address_lines": ("1 Main St",),
        "city": "Springfield",
        "postal_code": "62701",
        "country": "US",
        "region": "IL",
        "first_name": "Jane",
    }
    fields.update(overrides)
    return ProofRequest(**fields)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def pngs() -> tuple[str, str]:
    proof = render_content(personalize(request()), antialias=False)
    return base64.b64encode(proof.front_png).decode(), base64.b64encode(proof.back_png).decode()


def client(**kwargs: object) -> GatewayRenderer:
    kwargs.setdefault("sleep", lambda s: None)
    return GatewayRenderer(BASE, TOKEN, **kwargs)  # type: ignore[arg-type]


# -- request shape (respx) ------------------------------------------------------------------
@respx.mock
def test_render_posts_template_size_and_personalized_fields(pngs: tuple[str, str]) -> None:
    route = respx.post(f"{BASE}/v1/renders").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "rnd_1",
                "status": "completed",
                "width": 1875,
                "height": 1275,
                "front_png_base64": pngs[0],
                "back_png_base64": pngs[1],
            },
        )
    )
    proof = client().render(request())

    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    key = sent.headers["idempotency-key"]
    assert key == f"render-3-7-{request().fingerprint()}"
    body = json.loads(sent.content)
    assert body["template"] == "classic" and body["size"] == "4x6"
    assert body["reference"] == "campaign-3/recipient-7"
    assert body["fields"]["headline"] == "Jane, hello"
    assert body["fields"]["offer_code"] == "WELCOME10"
    assert body["fields"]["address_block"] == ["Jane", "1 Main St", "Springfield, IL 62701"]
    assert body["fields"]["first_name"] == "Jane"
    assert proof.renderer == "gateway"
    assert proof.front_png == base64.b64decode(pngs[0])


@respx.mock
def test_queued_render_is_polled_until_completed(pngs: tuple[str, str]) -> None:
    clock = FakeClock()
    respx.post(f"{BASE}/v1/renders").mock(
        return_value=httpx.Response(
            202,
            json={"id": "rnd_9", "status": "queued", "poll_url": "/v1/renders/rnd_9"},
            headers={"retry-after": "2"},
        )
    )
    poll = respx.get(f"{BASE}/v1/renders/rnd_9").mock(
        side_effect=[
            httpx.Response(
                200, json={"id": "rnd_9", "status": "rendering"}, headers={"retry-after": "1"}
            ),
            httpx.Response(
                200,
                json={
                    "id": "rnd_9",
                    "status": "completed",
                    "front_png_base64": pngs[0],
                    "back_png_base64": pngs[1],
                },
            ),
        ]
    )
    proof = client(sleep=clock.sleep, clock=clock).render(request())
    assert poll.call_count == 2
    assert clock.now == 1_003.0  # waited what Retry-After asked: 2 s, then 1 s
    assert proof.back_png == base64.b64decode(pngs[1])


@respx.mock
def test_a_render_that_never_finishes_times_out_as_retryable() -> None:
    clock = FakeClock()
    respx.post(f"{BASE}/v1/renders").mock(
        return_value=httpx.Response(
            202, json={"id": "rnd_5", "status": "queued"}, headers={"location": "/v1/renders/rnd_5"}
        )
    )
    respx.get(f"{BASE}/v1/renders/rnd_5").mock(
        return_value=httpx.Response(
            200, json={"id": "rnd_5", "status": "rendering"}, headers={"retry-after": "1"}
        )
    )
    with pytest.raises(VendorUnavailable, match="not ready after 5s") as info:
        client(sleep=clock.sleep, clock=clock, max_wait_seconds=5).render(request())
    assert info.value.retryable


@respx.mock
def test_failed_render_and_bad_images_are_typed_errors() -> None:
    respx.post(f"{BASE}/v1/renders").mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "id": "r",
                    "status": "failed",
                    "error": {"code": "font_missing", "message": "no font"},
                },
            ),
            httpx.Response(
                200,
                json={
                    "id": "r",
                    "status": "completed",
                    "front_png_base64": "!!",
                    "back_png_base64": "!!",
                },
            ),
            httpx.Response(
                200,
                json={
                    "id": "r",
                    "status": "completed",
                    "front_png_base64": base64.b64encode(b"GIF89a").decode(),
                    "back_png_base64": base64.b64encode(b"GIF89a").decode(),
                },
            ),
        ]
    )
    with pytest.raises(UnusableImage, match="failed: no font"):
        client().render(request())
    with pytest.raises(UnusableImage, match="not base64"):
        client().render(request())
    with pytest.raises(UnusableImage, match="not an image"):
        client().render(request())


@respx.mock
def test_wrong_size_image_is_refused() -> None:
    small = io.BytesIO()
    Image.new("RGB", (600, 600), "white").save(small, format="PNG")
    encoded = base64.b64encode(small.getvalue()).decode()
    respx.post(f"{BASE}/v1/renders").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "r",
                "status": "completed",
                "front_png_base64": encoded,
                "back_png_base64": encoded,
            },
        )
    )
    with pytest.raises(UnusableImage, match="rendered 600x600 px; a 4x6 postcard needs 1875x1275"):
        client().render(request())


@respx.mock
def test_error_bodies_become_typed_errors() -> None:
    respx.post(f"{BASE}/v1/renders").mock(
        side_effect=[
            httpx.Response(422, json={"error": {"code": "unknown_template", "message": "no such"}}),
            httpx.Response(503, json={"error": {"code": "unavailable", "message": "down"}}),
            httpx.Response(503, json={"error": {"code": "unavailable", "message": "down"}}),
        ]
    )
    with pytest.raises(RequestRejected) as rejected:
        client().render(request())
    assert rejected.value.code == "unknown_template" and rejected.value.status_code == 422
    with pytest.raises(VendorUnavailable, match="down"):
        client(retry=RetryPolicy(max_attempts=2, base_delay=0)).render(request())


# -- against the sandbox ---------------------------------------------------------------------
def test_sandbox_renders_a_real_personalized_proof_synchronously() -> None:
    sandbox = RenderingGatewaySandbox()
    proof = client(transport=sandbox).render(request())
    front = Image.open(io.BytesIO(proof.front_png))
    assert front.size == (1875, 1275) and proof.renderer == "gateway"
    other = client(transport=sandbox).render(request(first_name="John"))
    assert other.front_png != proof.front_png
    assert sandbox.request_count == 2


def test_sandbox_queues_renders_and_the_client_polls() -> None:
    clock = FakeClock()
    sandbox = RenderingGatewaySandbox(queue_seconds=1.2, poll_after_seconds=0.5, clock=clock)
    proof = client(transport=sandbox, sleep=clock.sleep, clock=clock).render(request())
    assert proof.width == 1875
    assert sandbox.request_count == 4  # POST 202, then polls at +0.5, +1.0, +1.5 s
    assert sandbox.store.count(RenderingGatewaySandbox.RENDERS) == 1


def test_retry_after_lost_response_reuses_the_render_job() -> None:
    store = SandboxStore()
    lossy = RenderingGatewaySandbox(
        store, SandboxBehaviour(lost_response_rate=1.0, seed=1), queue_seconds=60
    )
    with pytest.raises(VendorUnavailable, match="timed out"):
        client(transport=lossy, retry=RetryPolicy(max_attempts=2, base_delay=0)).render(request())
    # Every attempt carried the same Idempotency-Key, so the gateway holds one job.
    assert store.count(RenderingGatewaySandbox.RENDERS) == 1
    assert store.count(RenderingGatewaySandbox.KEYS) == 1


def test_same_key_with_a_different_body_is_a_conflict() -> None:
    sandbox = RenderingGatewaySandbox()
    body = {"template": "classic", "size": "4x6", "fields": {"headline": "a"}}
    with httpx.Client(
        transport=sandbox,
        base_url=BASE,
        headers={"authorization": f"Bearer {TOKEN}", "idempotency-key": "k1"},
    ) as http:
        assert http.post("/v1/renders", json=body).status_code == 200
        again = http.post("/v1/renders", json=body)
        assert again.status_code == 200
        clash = http.post("/v1/renders", json={**body, "fields": {"headline": "b"}})
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "idempotency_key_reused"
    assert sandbox.store.count(RenderingGatewaySandbox.RENDERS) == 1


def test_sandbox_503_is_retried_then_succeeds() -> None:
    sandbox = RenderingGatewaySandbox(behaviour=SandboxBehaviour(failure_rate=0.5, seed=3))
    proof = client(transport=sandbox, retry=RetryPolicy(max_attempts=10, base_delay=0)).render(
        request()
    )
    assert proof.renderer == "gateway"
    assert sandbox.request_count > 1  # seed 3 fails the first attempt


def test_sandbox_429_is_waited_out() -> None:
    clock = FakeClock()
    sandbox = RenderingGatewaySandbox(behaviour=SandboxBehaviour(rate_limit=(1, 2.0)), clock=clock)
    renderer = client(transport=sandbox, sleep=clock.sleep, clock=clock)
    renderer.render(request())
    renderer.render(request(first_name="John"))
    assert sandbox.request_count == 3 and clock.now == 1_002.0


def test_wrong_token_and_unknown_template_are_refused() -> None:
    with pytest.raises(AuthenticationFailed, match="invalid bearer token"):
        GatewayRenderer(BASE, "wrong", transport=RenderingGatewaySandbox()).render(request())
    sandbox = RenderingGatewaySandbox(templates={"bold"})
    with pytest.raises(RequestRejected, match="unknown template 'classic'"):
        client(transport=sandbox).render(request())
