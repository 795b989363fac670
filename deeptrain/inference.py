"""Predictions for a trained version on raw image bytes — the one path the CLI, SDK and Ray Serve share.

Classification and embedding images go through exactly the evaluation preprocessing
(shorter side to ``image_size``, centre crop), so a served prediction equals the offline
evaluation's output for the same image. Detection keeps the whole image (shorter side
resized) and maps boxes back to Clarifai's normalized convention of the original image.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from deeptrain.artifacts import LoadedModel
from deeptrain.models.tasks import predict_with_flips
from deeptrain.training.augment import crop_flip_normalize
from deeptrain.training.preprocess import Preprocessor, resize_shorter


def _classification_batch(loaded: LoadedModel, images: Sequence[bytes]) -> torch.Tensor:
    pre = loaded.manifest["preprocessing"]
    n = len(images)
    rows = {"image": np.array(images, dtype=object), "concepts": [np.array([], dtype=np.int32)] * n,
            "boxes": [[]] * n, "width": np.zeros(n), "height": np.zeros(n)}
    processor = Preprocessor(task=loaded.manifest["task"], image_size=pre["image_size"], canvas=pre["canvas"],
                             class_map=[], num_classes=len(loaded.manifest["concepts"]))
    batch = {k: torch.from_numpy(v) for k, v in processor(rows).items() if k in ("image", "valid_hw")}
    x, _ = crop_flip_normalize({**batch, "target": torch.zeros(n, 1)}, image_size=pre["image_size"],
                               mean=pre["mean"], std=pre["std"], train=False, flip=False)
    return x


def _detection_input(loaded: LoadedModel, data: bytes) -> tuple[torch.Tensor, int, int]:
    """The whole image, shorter side resized to ``image_size``, normalized; and the resized width, height."""
    pre = loaded.manifest["preprocessing"]
    with Image.open(io.BytesIO(data)) as raw:
        img, _ = resize_shorter(raw.convert("RGB"), pre["image_size"])
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(pre["mean"]).view(3, 1, 1)
    std = torch.tensor(pre["std"]).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0), img.width, img.height


@torch.no_grad()
def predict_bytes(loaded: LoadedModel, images: Sequence[bytes], *, threshold: float | None = None,
                  top_k: int | None = None) -> list[dict[str, Any]]:
    """One output per image: ``concepts`` (classification), ``regions`` (detection) or ``embedding``."""
    task = loaded.manifest["task"]
    concepts = loaded.manifest["concepts"]
    flips = loaded.params.average_horizontal_flips
    if task == "detection":
        limit = loaded.params.detection_score_threshold if threshold is None else threshold
        outputs = []
        for data in images:
            x, width, height = _detection_input(loaded, data)
            det = predict_with_flips(loaded.model, task, x, flips)[0]
            regions = []
            for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
                if score <= limit:
                    continue
                # pixels of the resized image -> fractions of it, which are the fractions of the original
                # (each axis on its own: rounding the longer side makes its scale differ slightly)
                x0, y0, x1, y1 = box
                regions.append({
                    "bounding_box": {"top_row": max(0.0, y0 / height), "left_col": max(0.0, x0 / width),
                                     "bottom_row": min(1.0, y1 / height), "right_col": min(1.0, x1 / width)},
                    "concept": concepts[label], "value": score,
                })
            outputs.append({"regions": regions})
        return outputs
    x = _classification_batch(loaded, images)
    out = predict_with_flips(loaded.model, task, x, flips)
    if task == "embedding":
        return [{"embedding": row.tolist()} for row in out]
    results = []
    for row in out.tolist():
        ranked = sorted(zip(concepts, row), key=lambda cv: -cv[1])[: top_k or None]
        results.append({"concepts": [{"id": c, "value": v} for c, v in ranked]})
    return results
