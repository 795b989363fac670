"""Decode and resize dataset rows into fixed-size uint8 batches (runs in Ray Data ``map_batches``).

This stage is deterministic: it decodes each image, resizes its shorter side to
``image_size`` (``resize_shorter``: a longer side past ``MAX_ASPECT_RATIO`` times the
shorter is cropped, centred, before resizing, so one image never takes more than
``MAX_ASPECT_RATIO * image_size**2`` pixels however thin it is) and keeps at most
``canvas`` pixels of the longer side (centred), placed
top-left on a ``canvas x canvas`` uint8 array with its valid height/width recorded. The
random part of augmentation (the square crop position and the horizontal flip) happens
on the training worker with a seeded generator (``augment.py``), so a run is repeatable
and a resumed run sees the same augmentation as an uninterrupted one.

Labels are turned into arrays the loop can use directly: a multi-hot ``target`` for
classification, a class ``label`` for embedding, padded ``boxes``/``labels`` for detection
(box coordinates in canvas pixels, label -1 = padding). Only numpy and Pillow here.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image


def round_up(value: float, multiple: int = 16) -> int:
    return int(-(-value // multiple) * multiple)


def canvas_size(image_size: int, max_aspect: float, crop_slack: float = 1.25) -> int:
    """Side of the square canvas: the image size, plus room for random crops along the longer side."""
    return max(image_size, round_up(image_size * min(max(max_aspect, 1.0), crop_slack)))


MAX_ASPECT_RATIO = 8  # a resized image is at most image_size x 8*image_size; longer sides are cropped (centred)


class Resized(NamedTuple):
    """A resized image; ``left, top, width, height``: the part of the source it shows (all of it unless cropped)."""

    image: Image.Image
    scale: float
    left: int
    top: int
    width: int
    height: int


def resize_shorter(img: Image.Image, size: int) -> Resized:
    """Resize so the shorter side is ``size``, the longer at most ``MAX_ASPECT_RATIO * size`` (centre kept).

    Without the bound a 1x200000 image resized to 32 would be 32x6,400,000 pixels (600 MB);
    the crop happens on the source, before any pixel is scaled up.
    """
    w, h = img.size
    scale = size / min(w, h)
    keep = math.ceil(MAX_ASPECT_RATIO * size / scale)  # source pixels of a side that survive the bound
    left, top = max(0, (w - keep) // 2), max(0, (h - keep) // 2)
    if w > keep or h > keep:
        img = img.crop((left, top, left + min(w, keep), top + min(h, keep)))
    cw, ch = img.size
    new = (max(size, round(cw * scale)), max(size, round(ch * scale)))
    if new != (cw, ch):
        img = img.resize(new, Image.BILINEAR, reducing_gap=3.0)
    return Resized(img, scale, left, top, cw, ch)


@dataclass(frozen=True)
class Preprocessor:
    """Callable for ``Dataset.map_batches(batch_format="numpy")``.

    class_map: for each concept index of the dataset version, the model's class index
        (or -1 when the model does not use that concept).
    """

    task: str
    image_size: int
    canvas: int
    class_map: Sequence[int]
    num_classes: int
    max_boxes: int = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image"])
        c = self.canvas
        images = np.zeros((n, c, c, 3), dtype=np.uint8)
        valid = np.zeros((n, 2), dtype=np.int32)
        out: dict[str, Any] = {"image": images, "valid_hw": valid}
        if self.task == "detection":
            boxes = np.zeros((n, self.max_boxes, 4), dtype=np.float32)
            labels = np.full((n, self.max_boxes), -1, dtype=np.int64)
            out.update(boxes=boxes, labels=labels)
        cmap = np.asarray(self.class_map, dtype=np.int64)
        targets = np.zeros((n, self.num_classes), dtype=np.float32)
        for i in range(n):
            with Image.open(io.BytesIO(batch["image"][i])) as raw:
                resized = resize_shorter(raw.convert("RGB"), self.image_size)
            img, scale = resized.image, resized.scale
            w, h = img.size
            left, top = max(0, (w - c) // 2), max(0, (h - c) // 2)
            img = img.crop((left, top, min(w, left + c), min(h, top + c)))
            arr = np.asarray(img)
            images[i, : arr.shape[0], : arr.shape[1]] = arr
            valid[i] = arr.shape[:2]
            for concept in batch["concepts"][i]:
                if cmap[concept] >= 0:
                    targets[i, cmap[concept]] = 1.0
            if self.task == "detection":
                self._boxes(batch["boxes"][i], scale, left + resized.left * scale, top + resized.top * scale,
                            batch["width"][i], batch["height"][i], cmap, out["boxes"][i], out["labels"][i])
        if self.task == "embedding":
            out["label"] = np.where(targets.any(1), targets.argmax(1), -1).astype(np.int64)
        else:
            out["target"] = targets
        return out

    def _boxes(self, boxes: Any, scale: float, left: float, top: float, width: int, height: int,
               cmap: np.ndarray, out_boxes: np.ndarray, out_labels: np.ndarray) -> None:
        k = 0
        for b in boxes:
            label = cmap[b["concept"]]
            if label < 0 or k >= self.max_boxes:
                continue
            x0 = b["left_col"] * width * scale - left
            x1 = b["right_col"] * width * scale - left
            y0 = b["top_row"] * height * scale - top
            y1 = b["bottom_row"] * height * scale - top
            out_boxes[k] = (x0, y0, x1, y1)
            out_labels[k] = label
            k += 1
