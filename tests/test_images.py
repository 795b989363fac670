"""Image validation: every kind of bad file gets its own reason."""

from __future__ import annotations

import pytest

from deeptrain.errors import InvalidInput
from deeptrain.images import inspect_image
from tests import imagegen

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 10_000_000}


def test_good_images():
    png = inspect_image(imagegen.png_bytes(size=(32, 24)), **LIMITS)
    assert (png.width, png.height, png.format, png.extension) == (32, 24, "png", "png")
    jpg = inspect_image(imagegen.jpeg_bytes(), **LIMITS)
    assert (jpg.format, jpg.extension) == ("jpeg", "jpg")
    assert len(png.sha256) == 64


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (imagegen.NOT_AN_IMAGE, "not an image"),
    (imagegen.truncated_jpeg(), "truncated or corrupt"),
    (imagegen.bomb_png(), "decompression bomb: image declares 50000x50000"),
    (imagegen.zero_size_png(), "zero size|header is invalid"),
    (b"x" * 1_000_001, "over the 1,000,000-byte upload limit"),
])
def test_bad_images(data, reason):
    with pytest.raises(InvalidInput, match=reason):
        inspect_image(data, **LIMITS)
