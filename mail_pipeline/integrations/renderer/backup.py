"""The backup generator: draws a real, print-size postcard locally with Pillow.

It is the last renderer in the fallback chain, so it needs nothing but the process it runs in:
no network, no font downloads (Pillow's bundled Aileron via ``ImageFont.load_default(size=)``).
Output is deterministic: the same :class:`~.models.PostcardContent` always gives the same PNG
bytes, on any machine with the same Pillow.

Layout (landscape, 300 DPI, every length scaled to the card height):

- front: brand name, a personalized headline, the body wrapped to the column, an offer-code
  box, and a panel in the accent colour carrying the brand's monogram;
- back: a message column (brand, message, and the offer: the QR code with the code beside it,
  or a code reminder when the card has no QR) and, right of a divider, the mailing address
  block below a clear zone where the printer puts the postage indicia.

The QR code (built by ``segno``, error correction M or better) is drawn module by module in
black on white at a whole number of pixels per module (at least :data:`QR_MIN_MODULE`, about
0.34 mm at 300 DPI), about :data:`QR_SIZE` pixels (0.9") wide on a 4x6 card, inside a white
quiet zone of :data:`QR_QUIET_ZONE` modules, at the bottom left of the message column. The code
printed beside it is never cut: it shrinks, then breaks at a hyphen, to fit.

The bundled font covers Latin letters without accents; other characters are transliterated
(``é`` -> ``e``, ``£`` -> ``GBP``) rather than printed as boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import segno
from PIL import Image, ImageDraw

from mail_pipeline.integrations.renderer.chain import Renderer
from mail_pipeline.integrations.renderer.models import (
    PRINT_SIZES,
    PostcardContent,
    ProofRequest,
    RenderedProof,
)
from mail_pipeline.integrations.renderer.personalize import personalize
from mail_pipeline.integrations.renderer.png import encode_png
from mail_pipeline.integrations.renderer.typesetting import (
    INK,
    RGB,
    WHITE,
    Font,
    draw_block,
    draw_spaced,
    fit,
    fit_spaced,
    font,
    ink_on,
    mix,
    printable,
    readable,
    rgb,
    spaced_width,
)

#: The QR code's symbol width on a 4x6 card (scaled to other sizes), quiet zone excluded.
QR_SIZE = 270
#: Fewest pixels per QR module.
QR_MIN_MODULE = 4
#: White modules around the symbol (the QR standard's minimum).
QR_QUIET_ZONE = 4
QR_DARK = (0, 0, 0)
QR_LIGHT = (255, 255, 255)


def monogram(brand: str) -> str:
    letters = [w[0] for w in brand.split() if w[:1].isalnum()]
    return "".join(letters[:2]).upper() or "*"


# -- the two sides ----------------------------------------------------------------------------
class Card:
    """A blank print-size side with the scale every length is measured in."""

    def __init__(self, size: str, background: RGB, *, antialias: bool = True) -> None:
        self.width, self.height = PRINT_SIZES[size]
        # Palette mode draws text without anti-aliasing: invisible at 300 DPI, and the image
        # encodes in a third of the time (what the sandboxes use).
        mode = "RGB" if antialias else "P"
        self.image = Image.new(mode, (self.width, self.height), background)
        self.draw = ImageDraw.Draw(self.image)
        self.unit = self.height / 1275

    def u(self, value: float) -> int:
        """``value`` pixels of the 4x6 design, scaled to this card."""
        return round(value * self.unit)


def draw_front(content: PostcardContent, *, antialias: bool = True) -> Image.Image:
    background = rgb(content.background_color)
    accent = rgb(content.accent_color)
    card = Card(content.size, background, antialias=antialias)
    d, u = card.draw, card.u
    ink = ink_on(background)
    soft_ink = mix(ink, background, 0.22)
    margin = u(120)

    # The accent panel with the brand monogram.
    panel_x = round(card.width * 0.655)
    d.rectangle((panel_x, 0, card.width, card.height), fill=accent)
    d.rectangle((panel_x - u(14), 0, panel_x, card.height), fill=mix(accent, INK, 0.25))
    cx, cy = (panel_x + card.width) / 2, card.height * 0.44
    outer = min(u(330), (card.width - panel_x) / 2 - u(30))
    for radius, shade in ((outer, 0.10), (outer * 0.76, 0.20)):
        d.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius), fill=mix(accent, WHITE, shade)
        )
    disc = u(175)
    d.ellipse((cx - disc, cy - disc, cx + disc, cy + disc), fill=background)
    mark = printable(monogram(content.brand_name))
    mark_face = font(u(190 if len(mark) == 1 else 140))
    mark_ink = readable(accent, background, 2.0)
    d.text(
        (cx, cy),
        mark,
        font=mark_face,
        fill=mark_ink,
        anchor="mm",
        stroke_width=u(4),
        stroke_fill=mark_ink,
    )
    accent_ink = ink_on(accent)
    tag_face, tag = fit_spaced(
        printable(content.brand_name.upper()), card.width - panel_x - 2 * u(70), u(34), 0.12
    )
    tag_w = spaced_width(tag, tag_face, 0.12 * tag_face.size)
    draw_spaced(
        d,
        (cx - tag_w / 2, card.height * 0.44 + u(390)),
        tag,
        tag_face,
        accent_ink,
        0.12 * tag_face.size,
    )

    # The text column.
    column = panel_x - u(14) - margin - u(90)
    brand_face, brand = fit_spaced(printable(content.brand_name.upper()), column, u(40), 0.16)
    draw_spaced(d, (margin, margin), brand, brand_face, ink, 0.16 * brand_face.size, bold=True)
    rule = readable(accent, background, 1.6)
    d.rectangle((margin, margin + u(70), margin + u(120), margin + u(80)), fill=rule)

    has_offer = bool(content.offer_code)
    top = margin + u(150)
    bottom = card.height - margin - (u(200) if has_offer else 0)
    headline = fit(
        printable(content.headline), column, (bottom - top) * 0.55, u(112), u(64), spacing=1.12
    )
    draw_block(d, (margin, top), headline, ink, bold=True)
    y = top + headline.height + u(40)
    if content.body:
        body = fit(printable(content.body), column, bottom - y - u(20), u(50), u(34), spacing=1.38)
        draw_block(d, (margin, y), body, soft_ink)

    if has_offer:
        _offer_box(card, content, (margin, card.height - margin - u(150)), accent)
    return card.image


def _offer_box(card: Card, content: PostcardContent, xy: tuple[int, int], accent: RGB) -> None:
    d, u = card.draw, card.u
    x, y = xy
    label_face = font(u(28))
    code = printable(content.offer_code or "")
    code_face = font(u(62))
    while code_face.size > u(30) and code_face.getlength(code) > card.width * 0.5:
        code_face = font(code_face.size - 4)
    label = "USE CODE"
    box_w = max(code_face.getlength(code), spaced_width(label, label_face, u(5))) + 2 * u(44)
    box_h = u(150)
    d.rounded_rectangle((x, y, x + box_w, y + box_h), radius=u(22), fill=accent)
    ink = ink_on(accent)
    draw_spaced(d, (x + u(44), y + u(22)), label, label_face, mix(ink, accent, 0.2), u(5))
    d.text(
        (x + u(44), y + u(58)),
        code,
        font=code_face,
        fill=ink,
        stroke_width=max(1, u(2)),
        stroke_fill=ink,
    )


def draw_back(
    content: PostcardContent, *, address: bool = True, antialias: bool = True
) -> Image.Image:
    accent = rgb(content.accent_color)
    card = Card(content.size, WHITE, antialias=antialias)
    d, u = card.draw, card.u
    margin = u(110)
    divider = round(card.width * 0.53)
    brand_ink = readable(accent, WHITE)

    # Message column.
    d.rectangle((0, 0, divider, u(58)), fill=accent)
    column = divider - margin - u(80)
    brand_face, brand = fit_spaced(printable(content.brand_name.upper()), column, u(38), 0.16)
    draw_spaced(
        d, (margin, margin + u(20)), brand, brand_face, brand_ink, 0.16 * brand_face.size, bold=True
    )
    has_offer = bool(content.offer_code)
    qr = qr_placement(content) if has_offer else None
    top = margin + u(120)
    if qr is not None:
        bottom = qr.symbol_top - u(40)
    else:
        bottom = card.height - margin - (u(130) if has_offer else 0)
    if content.back_message:
        message = fit(
            printable(content.back_message),
            column,
            bottom - top - u(30),
            u(46),
            u(30),
            spacing=1.42,
        )
        draw_block(d, (margin, top), message, mix(INK, WHITE, 0.1))
    if qr is not None:
        _qr_offer(card, content, qr, divider - u(80), brand_ink)
    elif has_offer:
        pill_face = font(u(38))
        text = f"Use code {printable(content.offer_code or '')}"
        pill_w = pill_face.getlength(text) + 2 * u(34)
        y = card.height - margin - u(84)
        d.rounded_rectangle((margin, y, margin + pill_w, y + u(84)), radius=u(42), fill=accent)
        d.text(
            (margin + u(34), y + u(42)),
            text,
            font=pill_face,
            fill=ink_on(accent),
            anchor="lm",
            stroke_width=1,
            stroke_fill=ink_on(accent),
        )

    # Divider, then the address side: indicia zone top right is left clear.
    d.rectangle((divider, margin, divider + u(3), card.height - margin), fill=(200, 200, 200))
    if address and content.address_block:
        left = divider + u(120)
        width = card.width - margin - left
        face = font(u(48))
        lines = [printable(line) for line in content.address_block]
        while face.size > u(32) and max(face.getlength(line) for line in lines) > width:
            face = font(face.size - 2)
        leading = round(face.size * 1.3)
        y = round(max(card.height * 0.50, card.height - margin - u(60) - leading * len(lines)))
        for i, line in enumerate(lines):
            while line and face.getlength(line) > width:
                line = line[:-1]
            d.text((left, y + i * leading), line, font=face, fill=INK)
    return card.image


# -- the QR code ------------------------------------------------------------------------------
def qr_symbol(url: str) -> segno.QRCode:
    """The QR code of ``url``: a full (not micro) symbol, error correction M or better."""
    return segno.make_qr(url, error="m")


@dataclass(frozen=True)
class QrPlacement:
    """Where the back side draws the QR code: the top left of its quiet zone, the pixels per
    module, and the symbol (without the quiet zone) in modules."""

    url: str
    x: int
    y: int
    module: int
    modules: int

    @property
    def size(self) -> int:
        """The width of the drawn square, quiet zone included."""
        return (self.modules + 2 * QR_QUIET_ZONE) * self.module

    @property
    def symbol_top(self) -> int:
        return self.y + QR_QUIET_ZONE * self.module

    @property
    def symbol_right(self) -> int:
        return self.x + (QR_QUIET_ZONE + self.modules) * self.module


def qr_placement(content: PostcardContent) -> QrPlacement | None:
    """Where the back of ``content`` carries its QR code; None when it has none."""
    if not content.qr_url or not content.offer_code:
        return None
    height = PRINT_SIZES[content.size][1]
    unit = height / 1275
    margin = round(110 * unit)
    modules = len(qr_symbol(content.qr_url).matrix)
    module = max(QR_MIN_MODULE, round(QR_SIZE * unit) // modules)
    quiet = QR_QUIET_ZONE * module
    symbol = modules * module
    # The symbol's edges line up with the margins; the quiet zone reaches into them.
    return QrPlacement(
        content.qr_url, margin - quiet, height - margin - symbol - quiet, module, modules
    )


def draw_qr(draw: ImageDraw.ImageDraw, placement: QrPlacement) -> None:
    """The QR code of ``placement.url``, dark modules as rectangles, one per run in a row."""
    x0, y0, m = placement.x, placement.y, placement.module
    draw.rectangle((x0, y0, x0 + placement.size - 1, y0 + placement.size - 1), fill=QR_LIGHT)
    matrix = qr_symbol(placement.url).matrix
    for row, cells in enumerate(matrix):
        y = y0 + (QR_QUIET_ZONE + row) * m
        col = 0
        while col < len(cells):
            if not cells[col]:
                col += 1
                continue
            start = col
            while col < len(cells) and cells[col]:
                col += 1
            x = x0 + (QR_QUIET_ZONE + start) * m
            draw.rectangle((x, y, x + (col - start) * m - 1, y + m - 1), fill=QR_DARK)


def code_lines(code: str, face: Font, width: float) -> list[str]:
    """``code`` on one line if it fits, else broken in two at the hyphen nearest its middle
    (the hyphen ends the first line), else in two halves. Never cut."""
    if face.getlength(code) <= width:
        return [code]
    hyphens = [i for i, ch in enumerate(code) if ch == "-" and 0 < i < len(code) - 1]
    if hyphens:
        cut = min(hyphens, key=lambda i: abs(i + 1 - len(code) / 2)) + 1
    else:
        cut = (len(code) + 1) // 2
    return [code[:cut], code[cut:]]


def fit_code(
    code: str, width: float, largest: int, one_line_smallest: int, smallest: int
) -> tuple[Font, list[str]]:
    """The face and lines of ``code`` in ``width``: one line at the largest size down to
    ``one_line_smallest``, else broken in two (:func:`code_lines`) down to ``smallest``."""
    size = largest
    while size > one_line_smallest and font(size).getlength(code) > width:
        size -= 2
    if font(size).getlength(code) <= width:
        return font(size), [code]
    size = largest
    while True:
        face = font(size)
        lines = code_lines(code, face, width)
        if size <= smallest or all(face.getlength(line) <= width for line in lines):
            return face, lines
        size -= 2


def _qr_offer(
    card: Card, content: PostcardContent, qr: QrPlacement, right: int, label_ink: RGB
) -> None:
    """The QR code and, right of it, how to use it: the label, the code, the shop's host."""
    d, u = card.draw, card.u
    draw_qr(d, qr)
    left = qr.symbol_right + u(44)
    width = right - left
    face, lines = fit_code(printable(content.offer_code or ""), width, u(46), u(34), u(24))
    label_face = font(u(26))
    host = urlsplit(content.qr_url or "").hostname or ""
    host_face = font(u(28))
    show_host = bool(host) and host_face.getlength(host) <= width
    leading = round(face.size * 1.15)
    block = u(34) + u(26) + leading * len(lines) + (u(22) + u(34) if show_host else 0)
    symbol = qr.modules * qr.module
    y = qr.symbol_top + max(0, (symbol - block) // 2)
    draw_spaced(d, (left, y), "SCAN TO SHOP", label_face, label_ink, u(4), bold=True)
    y += u(34)
    d.text((left, y), "or use code", font=font(u(24)), fill=mix(INK, WHITE, 0.35))
    y += u(26) + u(8)
    for line in lines:
        d.text((left, y), line, font=face, fill=INK, stroke_width=1, stroke_fill=INK)
        y += leading
    if show_host:
        d.text((left, y + u(14)), host, font=host_face, fill=mix(INK, WHITE, 0.35))


class BackupRenderer(Renderer):
    """The local generator as a :class:`Renderer`: always available, never calls out."""

    name = "backup"

    def __init__(self, *, address_block: bool = True, antialias: bool = True) -> None:
        #: Printers that print their own address block (Lob, Stannp) may want it off.
        self.address_block = address_block
        self.antialias = antialias

    def render(self, request: ProofRequest) -> RenderedProof:
        return render_content(
            personalize(request),
            renderer=self.name,
            address_block=self.address_block,
            antialias=self.antialias,
        )


def render_content(
    content: PostcardContent,
    *,
    renderer: str = "backup",
    address_block: bool = True,
    antialias: bool = True,
) -> RenderedProof:
    """Both sides of ``content`` as print-size PNGs."""
    width, height = PRINT_SIZES[content.size]
    return RenderedProof(
        front_png=encode_png(draw_front(content, antialias=antialias)),
        back_png=encode_png(draw_back(content, address=address_block, antialias=antialias)),
        width=width,
        height=height,
        renderer=renderer,
    )
