"""Real sample data sets for the demo, tests and benchmarks; nothing is downloaded.

- Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (idx files under
  ``/usr/share/datasets/fashion-mnist``), written out as PNG files in an image folder.
- The aerial tree images with Pascal VOC boxes shipped inside PyPI ``deepforest``.
- Rendered geometric shapes with exact boxes, when neither is installed.
"""

from __future__ import annotations

import gzip
import io
import importlib.util
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deeptrain.config import Settings

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def fashion_mnist_dir() -> Path:
    """Where Fashion-MNIST's files are (``Settings.fashion_mnist_dir``, ``DEEPTRAIN_FASHION_MNIST``)."""
    return Settings.from_env().fashion_mnist_dir


def fashion_mnist_available() -> bool:
    return all((fashion_mnist_dir() / f).is_file() for pair in _FILES.values() for f in pair)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) from the Debian package's idx files."""
    if not fashion_mnist_available():
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {fashion_mnist_dir()}; install Debian's dataset-fashion-mnist package"
        )
    images_file, labels_file = (fashion_mnist_dir() / f for f in _FILES[split])
    with gzip.open(images_file, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{images_file} is not an idx image file"
        images = np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows, cols)
    with gzip.open(labels_file, "rb") as f:
        magic, n_labels = struct.unpack(">II", f.read(8))
        assert magic == 2049 and n_labels == n, f"{labels_file} does not match {images_file}"
        labels = np.frombuffer(f.read(), dtype=np.uint8)
    return images, labels


def class_folder_name(name: str) -> str:
    return name.replace("/", "-")


def write_fashion_mnist_folder(out: Path, split: str = "train", per_class: int | None = None) -> int:
    """Write ``<out>/<class>/<split>-<index>.png``; ``per_class`` takes the first N of each class."""
    images, labels = load_fashion_mnist(split)
    taken = [0] * len(FASHION_MNIST_CLASSES)
    written = 0
    for class_index, name in enumerate(FASHION_MNIST_CLASSES):
        (out / class_folder_name(name)).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        if per_class is not None and taken[label] >= per_class:
            continue
        taken[label] += 1
        Image.fromarray(img, mode="L").save(out / class_folder_name(FASHION_MNIST_CLASSES[label]) / f"{split}-{i:05d}.png")
        written += 1
    return written


def deepforest_data_dir() -> Path:
    """The folder of VOC-labelled aerial images inside the installed ``deepforest`` package."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("PyPI package deepforest is not installed (pip install --no-deps deepforest==2.1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def write_deepforest_tiles(out: Path, images: list[str], tile: int = 200, min_visible: float = 0.5) -> int:
    """Cut deepforest's large VOC-labelled aerial images into ``tile`` px squares.

    ``images`` are XML file stems inside :func:`deepforest_data_dir`. A box is kept in
    a tile when at least ``min_visible`` of its area lies inside (clipped to the tile);
    edge strips narrower than a tile are dropped. Writes VOC (``JPEGImages/`` +
    ``Annotations/``) and returns the number of boxes written.
    """
    from deeptrain.formats import ExportItem, Region
    from deeptrain.formats import voc

    source = deepforest_data_dir()
    items, boxes = [], 0
    for stem in images:
        record = voc.record_from_xml(source / f"{stem}.xml")
        image = Image.open(io.BytesIO(record.read_bytes(2**31))).convert("RGB")
        for y in range(0, image.height - tile + 1, tile):
            for x in range(0, image.width - tile + 1, tile):
                regions = []
                for r in record.regions:
                    top, left = max(r.top_row, y), max(r.left_col, x)
                    bottom, right = min(r.bottom_row, y + tile), min(r.right_col, x + tile)
                    area = (r.bottom_row - r.top_row) * (r.right_col - r.left_col)
                    if bottom > top and right > left and (bottom - top) * (right - left) >= min_visible * area:
                        regions.append(Region(r.concept, (top - y) / tile, (left - x) / tile,
                                              (bottom - y) / tile, (right - x) / tile))
                buf = io.BytesIO()
                image.crop((x, y, x + tile, y + tile)).save(buf, format="PNG")
                items.append(ExportItem(f"{stem}-{y:05d}-{x:05d}", "png", tile, tile,
                                        lambda d=buf.getvalue(): d, regions=regions))
                boxes += len(regions)
    voc.write(items, out, sorted({r.concept for item in items for r in item.regions}))
    return boxes


SHAPES = ("circle", "square", "triangle")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color: tuple) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=color)


def write_shapes_folder(out: Path, split: str = "train", per_class: int = 100, size: int = 32) -> int:
    """One rendered shape per image in ``<out>/<shape>/<split>-<n>.png`` (synthetic classification set)."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    for shape in SHAPES:
        (out / shape).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
            w = int(rng.integers(size // 3, size - 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - w, 2))
            _draw_shape(ImageDraw.Draw(img), shape, (x0, y0, x0 + w, y0 + w),
                        tuple(int(v) for v in rng.integers(150, 256, 3)))
            img.save(out / shape / f"{split}-{n:05d}.png")
    return per_class * len(SHAPES)


def write_shapes_voc(out: Path, n_images: int = 60, size: int = 128, seed: int = 0) -> int:
    """Rendered shapes with exact VOC boxes: ``<out>/<name>.png`` + ``<name>.xml``."""
    from deeptrain.formats import ExportItem, Region
    from deeptrain.formats import voc

    rng = np.random.default_rng(seed)
    items = []
    for n in range(n_images):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
        draw = ImageDraw.Draw(img)
        regions = []
        for _ in range(int(rng.integers(1, 4))):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            w = int(rng.integers(size // 6, size // 3))
            x0, y0 = (int(v) for v in rng.integers(0, size - w, 2))
            _draw_shape(draw, shape, (x0, y0, x0 + w, y0 + w), tuple(int(v) for v in rng.integers(150, 256, 3)))
            regions.append(Region(shape, y0 / size, x0 / size, (y0 + w) / size, (x0 + w) / size))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
        items.append(ExportItem(f"shapes-{n:04d}", "png", size, size, lambda d=data: d, regions=regions))
    return voc.write(items, out, list(SHAPES))
