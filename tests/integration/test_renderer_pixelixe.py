"""The legacy Pixelixe client: request shape (respx) and behaviour against its sandbox."""

from __future__ import annotations

import io
import json

import httpx
import pytest
import respx
from PIL import Image

from mail_pipeline.integrations.errors import AuthenticationFailed, NotFound, RequestRejected
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.renderer.backup import render_content
from mail_pipeline.integrations.renderer.models import PostcardDesign, ProofRequest
from mail_pipeline.integrations.renderer.personalize import personalize
from mail_pipeline.integrations.renderer.pixelixe import PixelixeDocuments, PixelixeRenderer
from mail_pipeline.integrations.renderer.sandbox import PixelixeSandbox, sandbox_documents
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour

API = "https://studio.pixelixe.com/api/graphic/automation/v2"
KEY = "sandbox-pixelixe-key"
DOCUMENTS = {"classic": {"4x6": PixelixeDocuments(front="doc-front", back="doc-back")}}


def request(**overrides: object) -> ProofRequest:
    fields: dict[str, object] = {
        "recipient_id": 5,
        "campaign_id": 8,
        "design": PostcardDesign.from_mapping(
            {
                "template": "classic",
                "brand_name": "Acme",
                "headline": "{first_name}, hello",
                "back_message": "See you, {first_name}",
                "accent_color": "#123456",
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


def client(**kwargs: object) -> PixelixeRenderer:
    kwargs.setdefault("sleep", lambda s: None)
    return PixelixeRenderer(KEY, DOCUMENTS, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def png() -> bytes:
    return render_content(personalize(request()), antialias=False).front_png


@respx.mock
def test_generate_posts_document_and_modifications_then_downloads(png: bytes) -> None:
    automate = respx.post(API).mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "status": "success",
                    "uid": "doc-front",
                    "image_url": "https://studio.pixelixe.com/storage/file/f.png",
                },
            ),
            httpx.Response(
                200,
                json={
                    "status": "success",
                    "uid": "doc-back",
                    "image_url": "https://studio.pixelixe.com/storage/file/b.png",
                },
            ),
        ]
    )
    download = respx.get(url__regex=r"https://studio\.pixelixe\.com/storage/file/[fb]\.png").mock(
        return_value=httpx.Response(200, content=png, headers={"content-type": "image/png"})
    )
    proof = client().render(request())

    front, back = (json.loads(call.request.content) for call in automate.calls)
    assert front["api_key"] == KEY and front["document_uid"] == "doc-front"
    assert front["format"] == "json" and front["image_type"] == "png"
    assert front["custom_field"] == "campaign-8/recipient-5"
    mods = {m["name"]: m for m in front["modifications"]}
    assert mods["headline"] == {"name": "headline", "type": "text", "text": "Jane, hello"}
    assert mods["accent"] == {"name": "accent", "type": "shape", "background-color": "#123456"}
    back_mods = {m["name"]: m for m in back["modifications"]}
    assert back["document_uid"] == "doc-back"
    assert back_mods["back_message"]["text"] == "See you, Jane"
    assert back_mods["address_block"]["text"] == "Jane\n1 Main St\nSpringfield, IL 62701"
    assert download.call_count == 2
    assert proof.renderer == "pixelixe" and proof.front_png == png


@respx.mock
def test_image_format_takes_the_bytes_from_the_answer(png: bytes) -> None:
    respx.post(API).mock(
        return_value=httpx.Response(200, content=png, headers={"content-type": "image/png"})
    )
    proof = client(response_format="image").render(request())
    assert proof.front_png == png and proof.back_png == png


@respx.mock
def test_error_bodies_become_typed_errors() -> None:
    respx.post(API).mock(
        side_effect=[
            httpx.Response(401, json={"status": "error", "message": "Invalid API key"}),
            httpx.Response(200, json={"status": "error", "message": "Quota exceeded"}),
        ]
    )
    with pytest.raises(AuthenticationFailed, match="Invalid API key"):
        client().render(request())
    with pytest.raises(RequestRejected, match="Quota exceeded"):
        client().render(request())


def test_template_without_documents_is_refused_before_any_call() -> None:
    design = PostcardDesign.from_mapping({"template": "bold", "brand_name": "A", "headline": "H"})
    with pytest.raises(RequestRejected, match=r"no Pixelixe documents .* 'bold' at size 4x6"):
        client(transport=httpx.MockTransport(lambda r: httpx.Response(500))).render(
            request(design=design)
        )


# -- against the sandbox ---------------------------------------------------------------------
@pytest.mark.parametrize("response_format", ["json", "image"])
def test_sandbox_draws_both_sides_at_print_size(response_format: str) -> None:
    sandbox = PixelixeSandbox(documents=sandbox_documents(DOCUMENTS))
    proof = client(transport=sandbox, response_format=response_format).render(request())
    for side in (proof.front_png, proof.back_png):
        assert Image.open(io.BytesIO(side)).size == (1875, 1275)
    assert proof.front_png != proof.back_png
    assert sandbox.request_count == (4 if response_format == "json" else 2)
    other = client(transport=sandbox, response_format=response_format).render(
        request(first_name="John")
    )
    assert other.front_png != proof.front_png


def test_legacy_low_resolution_documents_are_resampled_to_print_size() -> None:
    sandbox = PixelixeSandbox(documents=sandbox_documents(DOCUMENTS, scale=0.5))
    proof = client(transport=sandbox, response_format="image").render(request())
    assert Image.open(io.BytesIO(proof.front_png)).size == (1875, 1275)


def test_sandbox_refuses_bad_key_and_unknown_documents() -> None:
    sandbox = PixelixeSandbox(documents=sandbox_documents(DOCUMENTS))
    with pytest.raises(AuthenticationFailed, match="Invalid API key"):
        PixelixeRenderer("wrong", DOCUMENTS, transport=sandbox).render(request())
    other_docs = {"classic": {"4x6": PixelixeDocuments("missing-front", "missing-back")}}
    with pytest.raises(NotFound, match="missing-front"):
        PixelixeRenderer(KEY, other_docs, transport=sandbox).render(request())


def test_sandbox_5xx_is_retried() -> None:
    sandbox = PixelixeSandbox(
        documents=sandbox_documents(DOCUMENTS), behaviour=SandboxBehaviour(failure_rate=0.5, seed=3)
    )
    proof = client(transport=sandbox, retry=RetryPolicy(max_attempts=10, base_delay=0)).render(
        request()
    )
    assert proof.renderer == "pixelixe"
    assert sandbox.request_count > 4
