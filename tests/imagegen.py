"""Image bytes for tests: good ones, and each kind of bad file the importers must refuse."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(color: tuple[int, int, int] = (30, 200, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    for x in range(size[0]):  # some texture so the JPEG has real scan data
        img.putpixel((x, x % size[1]), (255, 255, 255))
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(size=(64, 64))
    return data[: len(data) // 2]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A tiny, valid-looking PNG whose header declares a huge canvas (by default 100 million pixels: over
    deeptrain's default limit of 64 million, under the 179 million where Pillow's own guard refuses)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def zero_size_png() -> bytes:
    return bomb_png(0, 0)


NOT_AN_IMAGE = b"this is a text file, not an image\n"
