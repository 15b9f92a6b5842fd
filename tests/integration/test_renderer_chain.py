"""The configured fallback order: gateway -> Pixelixe -> backup."""

from __future__ import annotations

import pytest

from mail_pipeline.integrations.errors import RequestRejected, VendorUnavailable
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.renderer.backup import BackupRenderer
from mail_pipeline.integrations.renderer.chain import (
    AllRenderersFailed,
    FallbackRenderer,
    Renderer,
    UnknownRenderer,
    build_fallback_order,
)
from mail_pipeline.integrations.renderer.gateway import GatewayRenderer
from mail_pipeline.integrations.renderer.models import (
    InvalidDesign,
    PostcardDesign,
    ProofRequest,
    RenderedProof,
)
from mail_pipeline.integrations.renderer.pixelixe import PixelixeDocuments, PixelixeRenderer
from mail_pipeline.integrations.renderer.sandbox import (
    PixelixeSandbox,
    RenderingGatewaySandbox,
    sandbox_documents,
)
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

DOCUMENTS = {"classic": {"4x6": PixelixeDocuments("doc-front", "doc-back")}}
NO_WAIT = RetryPolicy(max_attempts=2, base_delay=0)


def request() -> ProofRequest:
    design = PostcardDesign.from_mapping(
        {"template": "classic", "brand_name": "Acme", "headline": "{first_name}, hello"}
    )
    return ProofRequest(
        1, 2, design, ("1 Main St",), "Springfield", "62701", "US", region="IL", first_name="Jane"
    )


def gateway(failure_rate: float = 0.0) -> tuple[GatewayRenderer, RenderingGatewaySandbox]:
    sandbox = RenderingGatewaySandbox(behaviour=SandboxBehaviour(failure_rate=failure_rate))
    renderer = GatewayRenderer(
        "https://gw.internal",
        "sandbox-gateway-token",
        transport=sandbox,
        retry=NO_WAIT,
        sleep=lambda s: None,
    )
    return renderer, sandbox


def pixelixe(failure_rate: float = 0.0) -> tuple[PixelixeRenderer, PixelixeSandbox]:
    sandbox = PixelixeSandbox(
        documents=sandbox_documents(DOCUMENTS),
        behaviour=SandboxBehaviour(failure_rate=failure_rate),
    )
    renderer = PixelixeRenderer(
        "sandbox-pixelixe-key", DOCUMENTS, transport=sandbox, retry=NO_WAIT, sleep=lambda s: None
    )
    return renderer, sandbox


class Scripted(Renderer):
    """A renderer that raises the scripted errors, then delegates to the backup generator."""

    def __init__(self, name: str, *errors: Exception) -> None:
        self.name = name
        self.errors = list(errors)
        self.calls = 0

    def render(self, request: ProofRequest) -> RenderedProof:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        proof = BackupRenderer(antialias=False).render(request)
        return RenderedProof(proof.front_png, proof.back_png, proof.width, proof.height, self.name)


def test_first_healthy_renderer_draws_the_proof() -> None:
    gw, _ = gateway()
    px, px_sandbox = pixelixe()
    outcome = FallbackRenderer([gw, px, BackupRenderer()]).render_with_report(request())
    assert outcome.proof.renderer == "gateway"
    assert outcome.failures == ()
    assert px_sandbox.request_count == 0


def test_gateway_503s_fall_back_to_the_next_renderer() -> None:
    gw, gw_sandbox = gateway(failure_rate=1.0)
    px, _ = pixelixe()
    outcome = FallbackRenderer([gw, px, BackupRenderer()]).render_with_report(request())
    assert outcome.proof.renderer == "pixelixe"
    assert gw_sandbox.request_count == 2  # its own retry budget was spent first
    [failure] = outcome.failures
    assert failure.renderer == "gateway" and failure.retryable
    assert "HTTP 503" in failure.reason


def test_both_vendors_down_falls_back_to_the_backup_generator() -> None:
    gw, _ = gateway(failure_rate=1.0)
    px, _ = pixelixe(failure_rate=1.0)
    proof = FallbackRenderer([gw, px, BackupRenderer()]).render(request())
    assert proof.renderer == "backup"
    assert (proof.width, proof.height) == (1875, 1275)


def test_a_rejected_request_also_falls_back() -> None:
    first = Scripted("gateway", RequestRejected("render_gateway", "unknown template"))
    proof = FallbackRenderer([first, BackupRenderer()]).render(request())
    assert proof.renderer == "backup"


def test_invalid_design_is_raised_without_trying_the_next_renderer() -> None:
    first = Scripted("gateway", InvalidDesign(["headline is empty"]))
    second = Scripted("backup")
    with pytest.raises(InvalidDesign, match="headline is empty"):
        FallbackRenderer([first, second]).render(request())
    assert second.calls == 0


def test_all_renderers_failing_is_one_error_naming_each() -> None:
    chain = FallbackRenderer(
        [
            Scripted("gateway", VendorUnavailable("render_gateway", "down")),
            Scripted("pixelixe", RequestRejected("pixelixe", "bad key")),
        ]
    )
    with pytest.raises(AllRenderersFailed) as info:
        chain.render(request())
    assert info.value.retryable  # the gateway may come back
    assert "gateway: render_gateway: down" in str(info.value)
    assert "pixelixe: pixelixe: bad key" in str(info.value)
    with pytest.raises(AllRenderersFailed) as info:
        FallbackRenderer([Scripted("x", RequestRejected("x", "no"))]).render(request())
    assert not info.value.retryable


def test_a_failing_renderer_is_skipped_for_a_cooldown() -> None:
    now = [0.0]
    down = Scripted("gateway", *[VendorUnavailable("render_gateway", "down")] * 3)
    chain = FallbackRenderer(
        [down, Scripted("backup")], open_after=2, cooldown_seconds=30, clock=lambda: now[0]
    )
    for _ in range(4):
        assert chain.render(request()).renderer == "backup"
    assert down.calls == 2  # skipped after the second failure
    skipped = chain.render_with_report(request()).failures
    assert skipped[0].skipped
    now[0] = 31.0  # cooldown over: tried again; still failing, so skipped again
    chain.render(request())
    assert down.calls == 3
    now[0] = 62.0  # recovered
    assert chain.render(request()).renderer == "gateway"


def test_the_last_renderer_is_never_skipped() -> None:
    last = Scripted("backup", *[VendorUnavailable("b", "down")] * 3)
    chain = FallbackRenderer([last], open_after=1)
    for _ in range(3):
        with pytest.raises(AllRenderersFailed):
            chain.render(request())
    assert chain.render(request()).renderer == "backup"
    assert last.calls == 4


def test_build_fallback_order_follows_configuration() -> None:
    available: dict[str, Renderer] = {
        "gateway": Scripted("gateway"),
        "pixelixe": Scripted("pixelixe"),
        "backup": BackupRenderer(),
    }
    order = build_fallback_order(["Backup", " gateway"], available)
    assert [r.name for r in order] == ["backup", "gateway"]
    with pytest.raises(
        UnknownRenderer,
        match=r"unknown renderer\(s\) 'figma'.*known "
        "renderers: backup, gateway, pixelixe",
    ):
        build_fallback_order(["gateway", "figma"], available)
    with pytest.raises(UnknownRenderer, match="empty"):
        build_fallback_order([], available)
    with pytest.raises(UnknownRenderer, match="appear twice"):
        build_fallback_order(["backup", "backup"], available)
    with pytest.raises(UnknownRenderer, match="not a string"):
        build_fallback_order("gateway,backup", available)
