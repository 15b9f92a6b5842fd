"""Typesetting for the backup generator: the bundled font, colour contrast, wrapping and fitting.

Pure helpers with no knowledge of the postcard layout. Text is fitted by shrinking the font
step by step until it fits its box, then cut with an ellipsis at the smallest size.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

from PIL import ImageDraw, ImageFont

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont

#: Characters the bundled Aileron font draws besides printable ASCII.
_FONT_EXTRAS = frozenset("©«°±´·»‘’“”…‹›⁄™")  # noqa: RUF001 - typographic quotes are wanted
_REPLACEMENTS = {
    "£": "GBP ",
    "€": "EUR ",
    "¥": "JPY ",
    "ß": "ss",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
    "ø": "o",
    "Ø": "O",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "\u2013": "-",
    "\u2014": "-",
    "\u00a0": " ",
    "\u2022": "\u00b7",
}
INK = (17, 17, 17)
WHITE = (255, 255, 255)


def printable(text: str) -> str:
    """``text`` with every character the bundled font lacks transliterated or dropped."""
    out = []
    for ch in text:
        if " " <= ch <= "~" or ch == "\n" or ch in _FONT_EXTRAS:
            out.append(ch)
        elif ch in _REPLACEMENTS:
            out.append(_REPLACEMENTS[ch])
        else:
            out.append("".join(c for c in unicodedata.normalize("NFKD", ch) if " " <= c <= "~"))
    return "".join(out)


@functools.lru_cache(maxsize=64)
def font(size: int) -> Font:
    loaded = ImageFont.load_default(size=size)
    if not isinstance(loaded, ImageFont.FreeTypeFont):
        raise RuntimeError("the backup generator needs Pillow built with FreeType")
    return loaded


# -- colour ---------------------------------------------------------------------------------
def rgb(color: str) -> RGB:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def _luminance(c: RGB) -> float:
    def channel(v: int) -> float:
        x = v / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in c)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def ink_on(background: RGB) -> RGB:
    """Near-black or white, whichever reads better on ``background``."""
    return INK if contrast(INK, background) >= contrast(WHITE, background) else WHITE


def readable(color: RGB, background: RGB, minimum: float = 3.0) -> RGB:
    """``color``, moved toward the ink colour just enough to read on ``background``."""
    ink = ink_on(background)
    for step in range(11):
        candidate = mix(color, ink, step / 10)
        if contrast(candidate, background) >= minimum:
            return candidate
    return ink


def mix(a: RGB, b: RGB, t: float) -> RGB:
    r0, g0, b0 = a
    r1, g1, b1 = b
    return (round(r0 + (r1 - r0) * t), round(g0 + (g1 - g0) * t), round(b0 + (b1 - b0) * t))


# -- text -----------------------------------------------------------------------------------
def wrap(text: str, face: Font, width: float) -> list[str]:
    """Greedy word wrap; paragraphs kept; a word wider than the column is split."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split():
            while face.getlength(word) > width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and face.getlength(word[:cut]) > width:
                    cut -= 1
                if current:
                    lines.append(current)
                    current = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{current} {word}" if current else word
            if not current or face.getlength(candidate) <= width:
                current = candidate
            else:
                lines.append(current)
                current = word
        lines.append(current)
    while lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass(frozen=True)
class TextBlock:
    face: Font
    lines: tuple[str, ...]
    leading: int

    @property
    def height(self) -> int:
        return self.leading * len(self.lines)


def fit(
    text: str, width: float, height: float, largest: int, smallest: int, spacing: float = 1.22
) -> TextBlock:
    """The largest size in ``[smallest, largest]`` at which ``text`` fits the box.

    At the smallest size, lines that still do not fit are cut and the last one ends in "…".
    """
    size = largest
    while True:
        face = font(size)
        leading = round(size * spacing)
        lines = wrap(text, face, width)
        if leading * len(lines) <= height or size <= smallest:
            break
        size = max(smallest, int(size * 0.92))
    room = max(1, int(height // leading))
    if len(lines) > room:
        lines = lines[:room]
        last = lines[-1].rstrip(" .,;:")
        while last and face.getlength(last + "…") > width:
            last = last[:-1].rstrip()
        lines[-1] = last + "…"
    return TextBlock(face, tuple(lines), leading)


def draw_block(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    block: TextBlock,
    fill: RGB,
    *,
    bold: bool = False,
) -> None:
    x, y = xy
    stroke = max(1, round(block.face.size * 0.022)) if bold else 0
    for i, line in enumerate(block.lines):
        draw.text(
            (x, y + i * block.leading),
            line,
            font=block.face,
            fill=fill,
            stroke_width=stroke,
            stroke_fill=fill if bold else None,
        )


def draw_spaced(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    face: Font,
    fill: RGB,
    tracking: float,
    *,
    bold: bool = False,
) -> float:
    """Letter-spaced text (for small capitals); returns the width drawn."""
    x, y = xy
    stroke = max(1, round(face.size * 0.03)) if bold else 0
    for ch in text:
        draw.text(
            (x, y),
            ch,
            font=face,
            fill=fill,
            stroke_width=stroke,
            stroke_fill=fill if bold else None,
        )
        x += face.getlength(ch) + tracking
    return x - xy[0] - tracking


def spaced_width(text: str, face: Font, tracking: float) -> float:
    return sum(face.getlength(ch) for ch in text) + tracking * max(0, len(text) - 1)


def fit_spaced(text: str, width: float, largest: int, tracking: float) -> tuple[Font, str]:
    size = largest
    while size > 12 and spaced_width(text, font(size), tracking * size) > width:
        size -= 2
    face = font(size)
    while text and spaced_width(text, face, tracking * size) > width:
        text = text[:-1]
    return face, text
