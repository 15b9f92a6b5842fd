"""The recipient's offer code and QR code on the postcard, through every renderer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
import segno
from PIL import Image, ImageDraw

from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.renderer import backup
from mail_pipeline.integrations.renderer.backup import (
    QR_QUIET_ZONE,
    BackupRenderer,
    QrPlacement,
    code_lines,
    draw_back,
    fit_code,
    qr_placement,
)
from mail_pipeline.integrations.renderer.gateway import GatewayRenderer
from mail_pipeline.integrations.renderer.models import (
    InvalidDesign,
    InvalidProofRequest,
    PostcardContent,
    PostcardDesign,
    ProofRequest,
)
from mail_pipeline.integrations.renderer.personalize import personalize
from mail_pipeline.integrations.renderer.pixelixe import (
    PixelixeDocuments,
    PixelixeRenderer,
    back_modifications,
    front_modifications,
)
from mail_pipeline.integrations.renderer.sandbox import (
    PixelixeSandbox,
    RenderingGatewaySandbox,
    sandbox_documents,
)
from mail_pipeline.integrations.renderer.typesetting import font

CODE = "TRAIL-7KQ4-M9XP-R2WD"
SHOP = "https://shop.juniper-trail.example"
URL = f"{SHOP}/discount/{CODE}"
NO_WAIT = RetryPolicy(max_attempts=1, base_delay=0, max_delay=0)
DOCUMENTS = {
    "classic": {
        "4x6": PixelixeDocuments(front="doc-front", back="doc-back"),
        "A6": PixelixeDocuments(front="doc-a6-front", back="doc-a6-back"),
    }
}


def design(**overrides: Any) -> PostcardDesign:
    fields: dict[str, Any] = {
        "template": "classic",
        "brand_name": "Juniper Trail",
        "headline": "{first_name}, the trail misses you",
        "back_message": "Thanks, {first_name}. Your code is {offer_code}.",
        "offer_code_prefix": "trail",
        "shop_url": SHOP,
    }
    fields.update(overrides)
    return PostcardDesign.from_mapping({k: v for k, v in fields.items() if v is not None})


def request(code: str | None = CODE, **overrides: Any) -> ProofRequest:
    the_design = overrides.pop("design", None) or design()
    fields: dict[str, Any] = {
        "recipient_id": 7,
        "campaign_id": 3,
        "design": the_design,
        "address_lines": ("1 Main St",),
        "city": "Springfield",
        "postal_code": "62701",
        "country": "US",
        "region": "IL",
        "first_name": "Jane",
        "offer_code": code,
        "qr_url": the_design.qr_url(code),
    }
    fields.update(overrides)
    return ProofRequest(**fields)


def sampled(png: bytes, placement: QrPlacement) -> list[list[bool]]:
    """The image's modules (dark = True) at the placement, quiet zone included."""
    image = Image.open(io.BytesIO(png)).convert("L")
    m, side = placement.module, placement.modules + 2 * QR_QUIET_ZONE
    return [
        [
            image.getpixel((placement.x + c * m + m // 2, placement.y + r * m + m // 2)) < 128
            for c in range(side)
        ]
        for r in range(side)
    ]


def expected(url: str) -> list[list[bool]]:
    """The QR code segno makes of ``url``, with its quiet zone."""
    return [
        [bool(v) for v in row]
        for row in segno.make_qr(url, error="m").matrix_iter(scale=1, border=QR_QUIET_ZONE)
    ]


def assert_qr_of(png: bytes, content: PostcardContent, url: str) -> None:
    placement = qr_placement(content)
    assert placement is not None and placement.url == url
    assert sampled(png, placement) == expected(url)
    # The quiet zone is white pixel for pixel, not only at module centres.
    image = Image.open(io.BytesIO(png)).convert("L")
    q = QR_QUIET_ZONE * placement.module
    x, y, size = placement.x, placement.y, placement.size
    for box in (
        (x, y, x + size, y + q),
        (x, y + size - q, x + size, y + size),
        (x, y, x + q, y + size),
        (x + size - q, y, x + size, y + size),
    ):
        assert image.crop(box).getextrema() == (255, 255)


# -- the design and the request ---------------------------------------------------------------
def test_a_design_takes_a_prefix_a_shop_and_a_qr_template() -> None:
    d = design(qr_url_template="https://go.example.com/r/{code}?src=mail")
    assert d.offer_code_prefix == "TRAIL"
    assert d.shop_url == SHOP
    assert d.qr_url("AB-12CD") == "https://go.example.com/r/AB-12CD?src=mail"
    assert design(qr_url_template=None).qr_url("AB-12CD") == f"{SHOP}/discount/AB-12CD"
    assert design(shop_url=None).qr_url("AB-12CD") is None
    assert PostcardDesign.from_mapping({**d.to_mapping(), "shop_url": ""}).shop_url is None


def test_a_design_with_a_bad_prefix_shop_or_template_names_each_problem() -> None:
    with pytest.raises(InvalidDesign) as raised:
        design(
            offer_code_prefix="TOO-LONG-PREFIX",
            shop_url="http://shop.example.com",
            qr_url_template="https://shop.example.com/discount",
        )
    assert len(raised.value.problems) == 3
    assert "offer_code_prefix" in raised.value.problems[0]
    assert "shop_url must be an https://" in raised.value.problems[1]
    assert "{code} exactly once" in raised.value.problems[2]


def test_the_fingerprint_changes_with_the_code_and_the_qr_link() -> None:
    base = request().fingerprint()
    assert request().fingerprint() == base
    assert request("TRAIL-2222-3333-4444").fingerprint() != base
    assert request(qr_url=None).fingerprint() != base


@pytest.mark.parametrize(
    "overrides",
    [
        {"offer_code": "A" * 33},
        {"offer_code": "AB\nCD"},
        {"offer_code": "  "},
        {"qr_url": "http://shop.example.com/discount/X"},
        {"qr_url": "javascript:alert(1)"},
    ],
)
def test_a_request_refuses_a_bad_code_or_qr_link(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidProofRequest, match="recipient 7 cannot be proofed"):
        request(**overrides)


def test_the_recipients_code_wins_over_the_designs_campaign_code() -> None:
    campaign_code = design(offer_code="SPRING20")
    own = personalize(request(design=campaign_code))
    assert own.offer_code == CODE and own.qr_url == URL
    assert own.back_message == f"Thanks, Jane. Your code is {CODE}."
    legacy = personalize(request(None, design=campaign_code))
    assert legacy.offer_code == "SPRING20" and legacy.qr_url is None


def test_content_fields_round_trip_and_refuse_a_bad_qr_link() -> None:
    content = personalize(request())
    assert content.to_fields()["qr_url"] == URL
    assert PostcardContent.from_fields(content.to_fields()) == content
    with pytest.raises(ValueError, match="https"):
        PostcardContent.from_fields({**content.to_fields(), "qr_url": "ftp://x.example/a"})


# -- the backup generator ---------------------------------------------------------------------
@pytest.mark.parametrize("size", ["4x6", "A6"])
@pytest.mark.parametrize("antialias", [True, False])
def test_the_back_carries_the_qr_of_the_exact_link_with_a_quiet_zone(
    size: str, antialias: bool
) -> None:
    req = request(design=design(size=size))
    proof = BackupRenderer(antialias=antialias).render(req)
    content = personalize(req)
    assert_qr_of(proof.back_png, content, URL)
    placement = qr_placement(content)
    assert placement is not None
    assert placement.module >= backup.QR_MIN_MODULE
    # About 0.9" at 300 DPI, whatever the link's length.
    assert 220 <= placement.modules * placement.module <= 300


def test_a_long_template_link_still_gets_modules_a_phone_can_read() -> None:
    d = design(
        qr_url_template="https://shop.juniper-trail.example/discount/{code}"
        "?redirect=/collections/summer-26&utm_source=postcard&utm_medium=mail"
    )
    code = "M" * 32
    req = request(code, design=d)
    proof = BackupRenderer(antialias=False).render(req)
    content = personalize(req)
    assert_qr_of(proof.back_png, content, d.qr_url(code) or "")
    placement = qr_placement(content)
    assert placement is not None and placement.module >= backup.QR_MIN_MODULE


@pytest.fixture
def drawn_texts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """Every ``ImageDraw.text`` call: (xy, text, font, anchor)."""
    calls: list[tuple[Any, ...]] = []
    original = ImageDraw.ImageDraw.text

    def spy(self: ImageDraw.ImageDraw, xy: Any, text: Any, *args: Any, **kwargs: Any) -> None:
        calls.append((xy, str(text), kwargs.get("font"), kwargs.get("anchor")))
        original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    yield calls


def _boxes(calls: list[tuple[Any, ...]]) -> list[tuple[str, tuple[float, float, float, float]]]:
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return [
        (text, measure.textbbox(xy, text, font=face, anchor=anchor))
        for xy, text, face, anchor in calls
        if text.strip()
    ]


def test_both_sides_print_the_code(drawn_texts: list[tuple[Any, ...]]) -> None:
    content = personalize(request())
    backup.draw_front(content)
    front = [text for _, text, _, _ in drawn_texts]
    drawn_texts.clear()
    draw_back(content)
    back = [text for _, text, _, _ in drawn_texts]
    assert CODE in front
    assert CODE in back
    assert "shop.juniper-trail.example" in back


def test_no_text_overlaps_the_qr_code(drawn_texts: list[tuple[Any, ...]]) -> None:
    long_message = " ".join(["Thanks for walking the trail with us all these years."] * 12)
    content = personalize(request(design=design(back_message=long_message)))
    draw_back(content)
    placement = qr_placement(content)
    assert placement is not None
    qx0, qy0 = placement.x, placement.y
    qx1, qy1 = qx0 + placement.size, qy0 + placement.size
    for text, (x0, y0, x1, y1) in _boxes(drawn_texts):
        apart = x1 <= qx0 or x0 >= qx1 or y1 <= qy0 or y0 >= qy1
        assert apart, f"{text!r} overlaps the QR code"


def test_a_card_without_a_shop_prints_the_code_and_no_qr(
    drawn_texts: list[tuple[Any, ...]],
) -> None:
    req = request(design=design(shop_url=None))
    assert req.qr_url is None
    content = personalize(req)
    assert qr_placement(content) is None
    draw_back(content)
    assert f"Use code {CODE}" in [text for _, text, _, _ in drawn_texts]


def test_a_long_code_breaks_at_a_hyphen_and_is_never_cut() -> None:
    face = font(46)
    assert code_lines("TRAIL-7KQ4", face, 10_000) == ["TRAIL-7KQ4"]
    assert code_lines("SUMMER-7KQ4-M9XP-R2WD", face, 300) == ["SUMMER-7KQ4-", "M9XP-R2WD"]
    assert code_lines("ABCDEFGH", face, 50) == ["ABCD", "EFGH"]
    for code in ("TRAIL-7KQ4-M9XP-R2WD", "M" * 32, "ABCDEFGHJKMN-PQRS-TUVW-XYZ2"):
        _, lines = fit_code(code, 480, 46, 34, 24)
        assert "".join(lines) == code


# -- remote renderers and their sandboxes ------------------------------------------------------
@respx.mock
def test_the_gateway_sends_the_code_and_the_qr_link_as_fields() -> None:
    route = respx.post("https://gw.internal/v1/renders").mock(
        return_value=httpx.Response(500, json={"error": {"code": "x", "message": "down"}})
    )
    with pytest.raises(IntegrationError):
        GatewayRenderer("https://gw.internal", "t", retry=NO_WAIT, sleep=lambda s: None).render(
            request()
        )
    fields = json.loads(route.calls.last.request.content)["fields"]
    assert fields["offer_code"] == CODE
    assert fields["qr_url"] == URL


def test_pixelixe_layers_carry_the_code_and_the_back_the_qr_link() -> None:
    content = personalize(request())
    front = {m["name"]: m for m in front_modifications(content)}
    back = {m["name"]: m for m in back_modifications(content)}
    assert front["offer_code"]["text"] == CODE
    assert back["offer_code"]["text"] == CODE
    assert back["qr_url"] == {"name": "qr_url", "type": "text", "text": URL}
    no_qr = {m["name"]: m for m in back_modifications(personalize(request(qr_url=None)))}
    assert no_qr["qr_url"]["text"] == ""


def test_the_gateway_sandbox_proof_shows_the_code_and_the_qr() -> None:
    renderer = GatewayRenderer(
        "https://gw.internal",
        "sandbox-gateway-token",
        transport=RenderingGatewaySandbox(),
        retry=NO_WAIT,
        sleep=lambda s: None,
    )
    req = request()
    assert_qr_of(renderer.render(req).back_png, personalize(req), URL)


def test_the_pixelixe_sandbox_proof_shows_the_qr() -> None:
    renderer = PixelixeRenderer(
        "sandbox-pixelixe-key",
        DOCUMENTS,
        transport=PixelixeSandbox(documents=sandbox_documents(DOCUMENTS)),
        retry=NO_WAIT,
        sleep=lambda s: None,
    )
    req = request(design=design(size="A6"))
    assert_qr_of(renderer.render(req).back_png, personalize(req), URL)


def test_the_gateway_sandbox_refuses_a_qr_link_that_is_not_https() -> None:
    sandbox = RenderingGatewaySandbox()
    fields = {**personalize(request()).to_fields(), "qr_url": "http://shop.example.com/x"}
    with httpx.Client(transport=sandbox, base_url="https://gw.internal") as client:
        answer = client.post(
            "/v1/renders",
            json={"template": "classic", "size": "4x6", "fields": fields},
            headers={"authorization": "Bearer sandbox-gateway-token"},
        )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_fields"


def test_a_decoder_reads_the_printed_qr_code() -> None:
    """Scannability end to end, where a QR decoder is installed (``zxing-cpp``)."""
    zxingcpp = pytest.importorskip(
        "zxingcpp", reason="zxing-cpp (a dev dependency) is not installed"
    )
    back = Image.open(io.BytesIO(BackupRenderer().render(request()).back_png)).convert("RGB")
    # As printed (300 DPI), and as a phone might see it (a third of the resolution).
    for image in (back, back.resize((back.width // 3, back.height // 3))):
        assert [r.text for r in zxingcpp.read_barcodes(image)] == [URL]
