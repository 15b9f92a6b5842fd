"""The backup generator draws real, deterministic, print-size postcards."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from mail_pipeline.integrations.renderer.backup import BackupRenderer, draw_back, draw_front
from mail_pipeline.integrations.renderer.models import PostcardDesign, ProofRequest
from mail_pipeline.integrations.renderer.personalize import personalize
from mail_pipeline.integrations.renderer.typesetting import contrast, fit, font, printable, readable

DESIGN = {
    "template": "classic",
    "brand_name": "Northwind Coffee",
    "headline": "{first_name}, your autumn treat is waiting",
    "body": "Come back this month and enjoy 20% off any bag of our seasonal roasts.",
    "offer_code": "AUTUMN20",
    "background_color": "#fdf6ec",
    "accent_color": "#b4532a",
    "back_message": "Hi {first_name|there},\nwe saved you a bag.",
}


def request(size: str = "4x6", **overrides: object) -> ProofRequest:
    fields: dict[str, object] = {
        "recipient_id": 1,
        "campaign_id": 2,
        "design": PostcardDesign.from_mapping({**DESIGN, "size": size}),
        "address_lines": ("123 Main Street",),
        "city": "Springfield",
        "postal_code": "62701",
        "country": "US",
        "region": "IL",
        "first_name": "Jane",
        "last_name": "Doe",
    }
    fields.update(overrides)
    return ProofRequest(**fields)  # type: ignore[arg-type]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


@pytest.mark.parametrize(("size", "pixels"), [("4x6", (1875, 1275)), ("A6", (1748, 1240))])
def test_both_sides_are_pngs_of_exactly_the_print_size(size: str, pixels: tuple[int, int]) -> None:
    proof = BackupRenderer().render(request(size))
    assert (proof.width, proof.height) == pixels
    assert proof.renderer == "backup"
    for side in (proof.front_png, proof.back_png):
        assert decode(side).size == pixels


def test_rendering_is_deterministic() -> None:
    first = BackupRenderer().render(request())
    second = BackupRenderer().render(request())
    assert first.front_png == second.front_png
    assert first.back_png == second.back_png


def test_personalization_is_visible_on_both_sides() -> None:
    jane = BackupRenderer().render(request(first_name="Jane"))
    john = BackupRenderer().render(request(first_name="John"))
    assert jane.front_png != john.front_png
    assert jane.back_png != john.back_png
    # Only the text differs: the pixels that changed lie in the headline area of the front.
    diff = ImageChops.difference(
        decode(jane.front_png).convert("RGB"), decode(john.front_png).convert("RGB")
    )
    _, top, right, bottom = diff.getbbox() or (0, 0, 0, 0)
    assert right < 1875 * 0.66 and top > 150 and bottom < 1275 * 0.6


def test_a_different_address_changes_only_the_back() -> None:
    here = BackupRenderer().render(request())
    there = BackupRenderer().render(request(address_lines=("9 Elm Road",)))
    assert here.front_png == there.front_png
    assert here.back_png != there.back_png


def test_missing_first_name_still_renders_a_sensible_card() -> None:
    proof = BackupRenderer().render(request(first_name=None))
    assert decode(proof.front_png).size == (1875, 1275)
    assert personalize(request(first_name=None)).headline == "Your autumn treat is waiting"


def test_address_block_can_be_left_to_the_printer() -> None:
    with_address = draw_back(personalize(request()))
    without = draw_back(personalize(request()), address=False)
    diff = ImageChops.difference(with_address, without).getbbox()
    assert diff is not None and diff[0] > 1875 * 0.53  # only the address side differs


def test_indicia_zone_top_right_of_the_back_is_left_clear() -> None:
    back = draw_back(personalize(request())).convert("RGB")
    zone = back.crop((1875 - 110 - 330, 110, 1875 - 110, 110 + 300))
    assert zone.getcolors() == [(330 * 300, (255, 255, 255))]


def test_front_uses_the_design_colours() -> None:
    front = draw_front(personalize(request())).convert("RGB")
    assert front.getpixel((30, 1200)) == (0xFD, 0xF6, 0xEC)
    assert front.getpixel((1860, 20)) == (0xB4, 0x53, 0x2A)


def test_palette_mode_is_the_same_card_without_antialiasing() -> None:
    content = personalize(request())
    fast = draw_front(content, antialias=False)
    assert fast.mode == "P" and fast.size == (1875, 1275)
    assert fast.convert("RGB").getpixel((30, 1200)) == (0xFD, 0xF6, 0xEC)


def test_long_text_shrinks_then_ellipsizes_within_its_box() -> None:
    block = fit("word " * 400, 600, 300, 50, 30)
    assert block.face.size == 30
    assert block.height <= 300
    assert block.lines[-1].endswith("…")


def test_characters_outside_the_bundled_font_are_transliterated() -> None:
    assert printable("Renée £5 straße \u2013 “ok”") == "Renee GBP 5 strasse - “ok”"


def test_colours_the_back_brand_uses_are_readable() -> None:
    orange = (0xFC, 0xA3, 0x11)
    assert contrast(readable(orange, (255, 255, 255)), (255, 255, 255)) >= 3.0


def test_a_renderer_loads_its_fonts_once_for_all_its_proofs() -> None:
    """What keeps a proof cheap (its timing is measured in benchmarks/proof_rendering.py):
    the second proof of a batch loads no font again."""
    renderer = BackupRenderer()
    first = renderer.render(request())
    loaded = font.cache_info().misses
    second = renderer.render(request())
    assert font.cache_info().misses == loaded
    assert second.front_png == first.front_png and second.back_png == first.back_png
