"""Image validation: every kind of bad file gets its own reason."""

from __future__ import annotations

import pytest

from deeptrain.errors import InvalidInput
from deeptrain.images import check_header, inspect_image, read_file_limited
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
    (imagegen.bomb_png(5_000, 5_000), "decompression bomb: image declares 5000x5000 = 25,000,000 pixels"),
    (imagegen.bomb_png(50_000, 50_000), "decompression bomb"),  # past Pillow's own guard, which stays on
    (imagegen.zero_size_png(), "zero size|header is invalid"),
    (b"x" * 1_000_001, "over the 1,000,000-byte upload limit"),
])
def test_bad_images(data, reason):
    with pytest.raises(InvalidInput, match=reason):
        inspect_image(data, **LIMITS)


def test_pillows_own_bomb_guard_stays_on():
    import deeptrain.inference  # noqa: F401 - everything that decodes images
    import deeptrain.training.preprocess  # noqa: F401
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 0
    with pytest.raises(InvalidInput, match="decompression bomb"):  # our limit set above Pillow's: Pillow still refuses
        check_header(imagegen.bomb_png(50_000, 50_000), max_bytes=1_000_000, max_pixels=10**12)


def test_header_check_does_not_decode_but_the_full_check_does():
    data = imagegen.png_bytes(size=(64, 48))[:-40]  # the header whole, the pixel data cut short
    assert check_header(data, **LIMITS) == (64, 48, "png")
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        inspect_image(data, **LIMITS)


def test_a_file_over_the_limit_is_refused_by_its_size(tmp_path):
    big = tmp_path / "big.png"
    with big.open("wb") as f:  # sparse: 300 MiB by its size, nothing written
        f.truncate(300 * 2**20)
    with pytest.raises(InvalidInput, match="314,572,800 bytes, over the 1,000,000-byte upload limit"):
        read_file_limited(big, 1_000_000)
    small = tmp_path / "small.png"
    small.write_bytes(imagegen.png_bytes())
    assert read_file_limited(small, 1_000_000) == small.read_bytes()
