"""The rendering gateway sandbox's ``prerendered`` mode: the benchmark's stand-in for a remote
renderer whose CPU is not ours. One pair of images per print size, drawn once; requests are
still checked and recorded as without it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from mail_pipeline.integrations.errors import RequestRejected
from mail_pipeline.integrations.renderer import sandbox as renderer_sandbox
from mail_pipeline.integrations.renderer.gateway import GatewayRenderer
from mail_pipeline.integrations.renderer.models import (
    PRINT_SIZES,
    PostcardDesign,
    ProofRequest,
    RenderedProof,
)
from mail_pipeline.integrations.renderer.sandbox import (
    SANDBOX_GATEWAY_TOKEN,
    RenderingGatewaySandbox,
    prerendered_content,
)

BASE = "https://render-gateway.internal"


def proof_request(recipient_id: int, first_name: str, country: str = "US") -> ProofRequest:
    design = PostcardDesign.from_mapping(
        {
            "template": "classic",
            "brand_name": "Acme",
            "headline": "{first_name}, hello",
            "size": "A6" if country == "GB" else "4x6",
        }
    )
    if country == "GB":
        return ProofRequest(
            recipient_id, 3, design, ("1 High St",), "London", "SW1A 1AA", "GB",
            first_name=first_name,
        )  # fmt: skip
    return ProofRequest(
        recipient_id, 3, design, ("1 Main St",), "Springfield", "62701", "US", region="IL",
        first_name=first_name,
    )  # fmt: skip


@pytest.fixture
def drawings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sides the sandbox draws, by the size of the card."""
    drawn: list[str] = []
    real_front, real_back = renderer_sandbox.draw_front, renderer_sandbox.draw_back

    def front(content: Any, **kwargs: Any) -> Image.Image:
        drawn.append(f"front {content.size}")
        return real_front(content, **kwargs)

    def back(content: Any, **kwargs: Any) -> Image.Image:
        drawn.append(f"back {content.size}")
        return real_back(content, **kwargs)

    monkeypatch.setattr(renderer_sandbox, "draw_front", front)
    monkeypatch.setattr(renderer_sandbox, "draw_back", back)
    return drawn


def render(sandbox: RenderingGatewaySandbox, request: ProofRequest) -> RenderedProof:
    return GatewayRenderer(BASE, SANDBOX_GATEWAY_TOKEN, transport=sandbox).render(request)


def test_every_render_of_a_size_gets_the_same_pair_drawn_once(drawings: list[str]) -> None:
    sandbox = RenderingGatewaySandbox(prerendered=True)

    proofs = [render(sandbox, proof_request(n, name)) for n, name in ((1, "Jane"), (2, "Jo"))]

    assert drawings == ["front 4x6", "back 4x6"]
    assert proofs[0].front_png == proofs[1].front_png
    assert proofs[0].back_png == proofs[1].back_png
    with Image.open(io.BytesIO(proofs[0].front_png)) as front:
        assert front.size == PRINT_SIZES["4x6"]


def test_each_size_has_its_own_pair(drawings: list[str]) -> None:
    sandbox = RenderingGatewaySandbox(prerendered=True)

    us = render(sandbox, proof_request(1, "Jane"))
    uk = render(sandbox, proof_request(2, "Jo", country="GB"))
    render(sandbox, proof_request(3, "Al", country="GB"))

    assert drawings == ["front 4x6", "back 4x6", "front A6", "back A6"]
    assert (uk.width, uk.height) == PRINT_SIZES["A6"] != (us.width, us.height)
    with Image.open(io.BytesIO(uk.back_png)) as back:
        assert back.size == PRINT_SIZES["A6"]


def test_the_pair_is_the_stand_in_card_not_the_recipients(drawings: list[str]) -> None:
    prerendered = render(RenderingGatewaySandbox(prerendered=True), proof_request(1, "Jane"))
    drawn = render(RenderingGatewaySandbox(), proof_request(1, "Jane"))

    assert prerendered.front_png != drawn.front_png, "without the option each card is drawn"
    assert prerendered_content("4x6").address_block[0] == "Pat Sandbox"


def test_requests_are_still_checked_and_recorded(drawings: list[str]) -> None:
    sandbox = RenderingGatewaySandbox(prerendered=True, templates={"bold"})

    with pytest.raises(RequestRejected):
        render(sandbox, proof_request(1, "Jane"))  # template "classic" is unknown here
    assert drawings == []

    accepting = RenderingGatewaySandbox(prerendered=True)
    render(accepting, proof_request(1, "Jane"))
    assert accepting.store.count(RenderingGatewaySandbox.RENDERS) == 1
