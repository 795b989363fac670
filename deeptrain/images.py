"""Validate uploaded image bytes before anything is stored.

Every check names its reason, so an import report or an HTTP 400 can say exactly why a
file was refused: empty, over the byte limit, not an image, zero size, a decompression
bomb (declared pixels over the cap, checked from the header before decoding), or a
truncated/corrupt file (found by decoding it fully).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from deeptrain.errors import InvalidInput

# Pillow's own bomb check fires at open() with a message that has no dimensions and only at
# 2x its default cap; deeptrain checks the declared size itself (``max_pixels``) before
# any decoding, so Pillow's global check is switched off in favour of that one.
Image.MAX_IMAGE_PIXELS = None

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "gif": "gif", "tiff": "tif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # lowercase PIL format name: "jpeg", "png", ...
    sha256: str
    size_bytes: int

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.format, self.format)


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Check that ``data`` is one complete, decodable image within the limits."""
    if not data:
        raise InvalidInput("empty file (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidInput(f"file is {len(data):,} bytes, over the {max_bytes:,}-byte upload limit")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt = (img.format or "").lower()
            if width <= 0 or height <= 0:
                raise InvalidInput(f"image has zero size ({width}x{height})")
            if width * height > max_pixels:
                raise InvalidInput(
                    f"decompression bomb: image declares {width}x{height} = {width * height:,} pixels, "
                    f"over the {max_pixels:,}-pixel limit"
                )
            if fmt not in EXTENSIONS:
                raise InvalidInput(f"unsupported image format {fmt or 'unknown'!r}; use one of {sorted(EXTENSIONS)}")
            img.load()
    except UnidentifiedImageError:
        raise InvalidInput("not an image: the format is not recognized or its header is invalid") from None
    except InvalidInput:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise InvalidInput(f"truncated or corrupt image: {exc}") from None
    return ImageInfo(width, height, fmt, hashlib.sha256(data).hexdigest(), len(data))


def decode_rgb(data: bytes) -> Image.Image:
    """Decode to an RGB PIL image (bytes must have passed ``inspect_image``)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")
