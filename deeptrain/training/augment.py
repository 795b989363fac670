"""Worker-side crop, flip and normalization of preprocessed uint8 batches (plain PyTorch).

Randomness comes from an explicit ``torch.Generator`` seeded by (seed, epoch, rank, step),
so the same run reproduces exactly, and a resumed run continues as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def batch_generator(seed: int, epoch: int, rank: int, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(((seed * 1_000_003 + epoch) * 1009 + rank) * 100_003 + step)
    return g


def crop_flip_normalize(
    batch: dict[str, Tensor],
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    flip: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Any]:
    """(images float [B, 3, S, S], targets) from a preprocessed batch.

    Training: a random S x S crop inside each image's valid region and, when ``flip``, a
    horizontal flip with p = 0.5 (boxes follow). Evaluation: the centre crop, no flip.
    Targets: the multi-hot ``target`` (classification), ``label`` (embedding), or a list
    of ``{"boxes", "labels"}`` dicts in crop pixels (detection).
    """
    images, valid = batch["image"], batch["valid_hw"]
    n, s = images.shape[0], image_size
    out = torch.empty((n, s, s, 3), dtype=torch.uint8)
    offsets, flips = [], []
    for i in range(n):
        h, w = int(valid[i, 0]), int(valid[i, 1])
        if train:
            top = int(torch.randint(0, h - s + 1, (1,), generator=generator)) if h > s else 0
            left = int(torch.randint(0, w - s + 1, (1,), generator=generator)) if w > s else 0
            flipped = flip and bool(torch.rand((), generator=generator) < 0.5)
        else:
            top, left, flipped = (h - s) // 2, (w - s) // 2, False
        crop = images[i, top : top + s, left : left + s]
        out[i] = crop.flip(1) if flipped else crop
        offsets.append((left, top))
        flips.append(flipped)
    x = out.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    d = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - m) / d
    if "boxes" in batch:
        return x, [_crop_boxes(batch["boxes"][i], batch["labels"][i], offsets[i], flips[i], s) for i in range(n)]
    if "label" in batch:
        return x, batch["label"].long()
    return x, batch["target"].float()


def _crop_boxes(boxes: Tensor, labels: Tensor, offset: tuple[int, int], flipped: bool, size: int) -> dict[str, Tensor]:
    keep = labels >= 0
    b = boxes[keep].clone().float()
    b[:, [0, 2]] -= offset[0]
    b[:, [1, 3]] -= offset[1]
    b.clamp_(0, size)
    if flipped:
        b[:, [0, 2]] = size - b[:, [2, 0]]
    visible = ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
    return {"boxes": b[visible], "labels": labels[keep][visible].long()}
