"""Parity of an export with the served path, on real images.

``graph_inputs`` prepares each image exactly as ``deeptrain.inference`` does and keeps the uint8
pixels the exported graph takes; ``served_outputs`` runs the served computation
(``predict_with_flips`` of the loaded PyTorch model, the detection score threshold) on the same
images; ``compare`` measures how far the export's outputs are from it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from deeptrain.artifacts import LoadedModel
from deeptrain.errors import InvalidInput
from deeptrain.inference import Prepared, model_input, prepare_all
from deeptrain.models.tasks import predict_with_flips


def pixels(loaded: LoadedModel, item: Prepared) -> np.ndarray:
    """uint8 [3, H, W] of a prepared image: the centre crop (classification, embedding) or the
    resized whole image (detection) — what the exported graph takes, before normalization."""
    if item.resized is not None:
        return np.ascontiguousarray(np.asarray(item.resized.image.convert("RGB")).transpose(2, 0, 1))
    assert item.arrays is not None
    s = loaded.manifest["preprocessing"]["image_size"]
    h, w = (int(v) for v in item.arrays["valid_hw"][0])
    top, left = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(item.arrays["image"][0, top: top + s, left: left + s].transpose(2, 0, 1))


def graph_inputs(loaded: LoadedModel, images: Sequence[bytes]) -> tuple[list[Prepared], list[np.ndarray]]:
    if not images:
        raise InvalidInput("the parity check needs at least one image (pass images, or --images DIR)")
    prepared = prepare_all(loaded, images, [f"parity image {k}" for k in range(len(images))])
    return prepared, [pixels(loaded, item) for item in prepared]


@torch.no_grad()
def served_outputs(loaded: LoadedModel, prepared: Sequence[Prepared], flips: bool,
                   score_threshold: float) -> list[list[np.ndarray]]:
    """The served outputs, one list of arrays (in the export's output order) per image."""
    task = loaded.manifest["task"]
    if task == "detection":
        outs = []
        for item in prepared:
            det = predict_with_flips(loaded.model, task, item.tensor, flips)[0]
            shown = det["scores"] > score_threshold
            outs.append([det[k][shown].numpy() for k in ("boxes", "scores", "labels")])
        return outs
    rows = predict_with_flips(loaded.model, task, model_input(loaded, prepared), flips)
    return [[row.numpy()] for row in rows]


def compare(task: str, expected: Sequence[Sequence[np.ndarray]], got: Sequence[Sequence[np.ndarray]]) -> dict[str, Any]:
    """classification: ``top1_agreement`` (fraction of images whose best concept is the same) and
    ``max_abs_diff`` of the probabilities; embedding: ``cosine_min`` and ``max_abs_diff``;
    detection: ``counts_equal`` (same number of boxes on every image), ``labels_equal``,
    ``max_box_diff`` (pixels) and ``max_abs_diff`` (scores), over images with equal counts."""
    result: dict[str, Any] = {"images": len(expected)}
    if task == "detection":
        same = [(e, g) for e, g in zip(expected, got) if len(e[0]) == len(g[0])]
        result["counts_equal"] = len(same) == len(expected)
        result["detections"] = int(sum(len(e[0]) for e in expected))
        result["labels_equal"] = all(np.array_equal(e[2], g[2]) for e, g in same)
        result["max_box_diff"] = max([float(np.abs(e[0] - g[0]).max(initial=0.0)) for e, g in same], default=0.0)
        result["max_abs_diff"] = max([float(np.abs(e[1] - g[1]).max(initial=0.0)) for e, g in same], default=0.0)
        return result
    e = np.stack([x[0] for x in expected]).astype(np.float64)
    g = np.stack([x[0] for x in got]).astype(np.float64)
    result["max_abs_diff"] = float(np.abs(e - g).max())
    if task == "classification":
        result["top1_agreement"] = float((e.argmax(1) == g.argmax(1)).mean())
    else:
        cosine = (e * g).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(g, axis=1))
        result["cosine_min"] = float(cosine.min())
    return result
