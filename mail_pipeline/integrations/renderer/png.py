"""PNG in and out: deterministic encoding, and checking what a remote renderer sent back.

A remote renderer's answer is printed as-is, so it is checked before anyone hosts it: it must
decode as an image at the print size of the request. An image of the right shape at another
resolution (a legacy template designed at 150 DPI) is resampled to the print size; anything
else is :class:`UnusableImage`, and the fallback chain moves on to the next renderer.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, UnidentifiedImageError

from mail_pipeline.integrations.errors import RequestRejected
from mail_pipeline.integrations.renderer.models import PRINT_SIZES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: How far an image's aspect ratio may differ from the print size's and still be resampled.
ASPECT_TOLERANCE = 0.01


class UnusableImage(RequestRejected):
    """A renderer answered with something that is not a print-ready image of the request."""


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with no metadata, so equal pixels always give equal bytes.

    RGB images are written directly (filter "none" on every row, zlib level 3): for flat
    postcard art that is as small as Pillow's adaptive filtering and about a third faster.
    """
    if image.mode != "RGB":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=3)
        return buffer.getvalue()
    width, height = image.size
    raw = image.tobytes()
    stride = width * 3
    rows = b"".join(b"\x00" + raw[i : i + stride] for i in range(0, len(raw), stride))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows, 3)),
            _chunk(b"IEND", b""),
        )
    )


def print_ready_png(vendor: str, data: bytes, size: str) -> bytes:
    """``data`` as a PNG of exactly the print size for ``size``, or :class:`UnusableImage`."""
    width, height = PRINT_SIZES[size]
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Opening reads only the header: a PNG of the right size is passed on undecoded.
            if image.format == "PNG" and image.size == (width, height):
                return data
            got_w, got_h = image.size
            if abs(got_w / got_h - width / height) > ASPECT_TOLERANCE * (width / height):
                raise UnusableImage(
                    vendor,
                    f"rendered {got_w}x{got_h} px; a {size} postcard needs {width}x{height} px",
                )
            converted = image.convert("RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.LANCZOS)
            return encode_png(converted)
    except (UnidentifiedImageError, OSError, ValueError, ZeroDivisionError) as exc:
        raise UnusableImage(vendor, f"answered with data that is not an image: {exc}") from exc
