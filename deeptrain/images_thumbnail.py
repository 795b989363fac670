"""Small PNG copies of stored images, for people to look at (the console's grid, an input's preview).

Bounded like every other decode (``deeptrain.images``): the header is read first and an image declaring more
pixels than ``max_pixels`` (the deployment's ``max_image_pixels``) is refused before anything is decoded. A
JPEG is decoded at a reduced scale when it can be (``draft``), so a thumbnail of a large photo costs a
fraction of its full decode. The aspect ratio is kept; nothing is enlarged (a 28x28 image stays 28x28).
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from deeptrain.errors import InvalidInput
from deeptrain.images import decode_errors

MIN_SIZE = 16
KEEP_MODES = {"L", "LA", "RGB", "RGBA"}  # resized and stored as PNG as they are


def thumbnail_png(data: bytes, size: int, max_pixels: int) -> bytes:
    """``data`` (a stored image) as a PNG whose longest side is at most ``size``, aspect kept."""
    if size < 1:
        raise InvalidInput(f"thumbnail size {size} must be at least 1")
    with decode_errors():  # the header only
        img = Image.open(io.BytesIO(data))
    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise InvalidInput(f"image has zero size ({width}x{height})")
        if width * height > max_pixels:
            raise InvalidInput(f"decompression bomb: image declares {width}x{height} = {width * height:,} pixels, "
                               f"over the {max_pixels:,}-pixel limit")
        with decode_errors():
            img.draft(img.mode, (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale while still >= size
            small = img.copy() if img.mode in KEEP_MODES else img.convert("RGBA" if _has_alpha(img) else "RGB")
            small.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def data_url(png: bytes) -> str:
    """A PNG as a ``data:`` URL an ``<img src>`` shows without another request."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
