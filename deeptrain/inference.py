"""Predictions for a trained version on raw image bytes — the one path the CLI, SDK and Ray Serve share.

Classification and embedding images go through exactly the evaluation preprocessing
(shorter side to ``image_size``, centre crop), so a served prediction equals the offline
evaluation's output for the same image. Detection keeps the whole image (shorter side
resized; a side longer than ``MAX_ASPECT_RATIO`` times the shorter is cropped to its
centre) and maps boxes back to Clarifai's normalized convention of the original image.

Two stages, so a server can decode each image once, on its own, and drop one that is
corrupt or past its deadline without failing the others: ``prepare`` decodes and
preprocesses one image (``InvalidInput`` if it cannot be decoded), ``predict_prepared``
runs the model on any number of prepared images. ``predict_bytes`` is both in a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from deeptrain.artifacts import LoadedModel
from deeptrain.errors import InvalidInput
from deeptrain.images import decode_checked, decode_errors
from deeptrain.inference_graph import InferenceGraph, inference_graph
from deeptrain.models.tasks import predict_with_flips
from deeptrain.training.augment import crop_flip_normalize
from deeptrain.training.preprocess import Preprocessor, Resized, resize_shorter


@dataclass(frozen=True)
class Prepared:
    """One decoded, preprocessed image: a canvas (classification, embedding) or a normalized tensor (detection)."""

    arrays: dict[str, np.ndarray] | None = None
    tensor: torch.Tensor | None = None
    resized: Resized | None = None
    source_size: tuple[int, int] = (0, 0)


def _canvas(loaded: LoadedModel, data: bytes) -> Prepared:
    pre = loaded.manifest["preprocessing"]
    rows = {"image": np.array([data], dtype=object), "concepts": [np.array([], dtype=np.int32)],
            "boxes": [[]], "width": np.zeros(1), "height": np.zeros(1)}
    processor = Preprocessor(task=loaded.manifest["task"], image_size=pre["image_size"], canvas=pre["canvas"],
                             class_map=[], num_classes=len(loaded.manifest["concepts"]))
    with decode_errors():  # the one decode of this image
        arrays = processor(rows)
    return Prepared(arrays={k: v for k, v in arrays.items() if k in ("image", "valid_hw")})


def _detection_input(loaded: LoadedModel, data: bytes) -> Prepared:
    """The whole image, shorter side resized to ``image_size``, normalized."""
    pre = loaded.manifest["preprocessing"]
    image = decode_checked(data)
    resized = resize_shorter(image, pre["image_size"])
    x = torch.from_numpy(np.asarray(resized.image).copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(pre["mean"]).view(3, 1, 1)
    std = torch.tensor(pre["std"]).view(3, 1, 1)
    return Prepared(tensor=((x - mean) / std).unsqueeze(0), resized=resized, source_size=image.size)


def prepare(loaded: LoadedModel, data: bytes) -> Prepared:
    """Decode and preprocess one image for ``loaded``; ``InvalidInput`` when it cannot be decoded."""
    if loaded.manifest["task"] == "detection":
        return _detection_input(loaded, data)
    return _canvas(loaded, data)


def _regions(loaded: LoadedModel, item: Prepared, det: dict[str, torch.Tensor], limit: float) -> list[dict[str, Any]]:
    concepts = loaded.manifest["concepts"]
    r = item.resized
    assert r is not None
    width, height = r.image.size
    source_w, source_h = item.source_size
    cropped = (r.width, r.height) != (source_w, source_h)
    regions = []
    for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        if score <= limit:
            continue
        # pixels of the resized image -> fractions of it, which are the fractions of the original
        # (each axis on its own: rounding the longer side makes its scale differ slightly)
        x0, y0, x1, y1 = box[0] / width, box[1] / height, box[2] / width, box[3] / height
        if cropped:  # fractions of the centre part the image was cropped to -> fractions of the whole
            x0, x1 = ((r.left + f * r.width) / source_w for f in (x0, x1))
            y0, y1 = ((r.top + f * r.height) / source_h for f in (y0, y1))
        regions.append({
            "bounding_box": {"top_row": max(0.0, y0), "left_col": max(0.0, x0),
                             "bottom_row": min(1.0, y1), "right_col": min(1.0, x1)},
            "concept": concepts[label], "value": score,
        })
    return regions


def predict_model(loaded: LoadedModel) -> Any:
    """What ``loaded`` predicts with: its inference graph (``deeptrain.inference_graph``: classification and
    embedding on CPU), else the model itself; built on the first call and kept on ``loaded``."""
    if loaded.predictor is None:
        graph = inference_graph(loaded.model, loaded.manifest["task"],
                                int(loaded.manifest["preprocessing"]["image_size"]))
        loaded.predictor = graph or loaded.model
    return loaded.predictor


def runs_on_one_thread(loaded: LoadedModel) -> bool:
    """Whether ``loaded`` predicts with its inference graph, which is fast on one thread: a server runs several
    such forwards side by side, one thread each, rather than one forward on all its threads."""
    return isinstance(predict_model(loaded), InferenceGraph)


def model_input(loaded: LoadedModel, items: Sequence[Prepared]) -> torch.Tensor:
    """The classification/embedding model's input for prepared images: centre crops, normalized, [B, 3, S, S]."""
    pre = loaded.manifest["preprocessing"]
    batch = {k: torch.from_numpy(np.concatenate([item.arrays[k] for item in items]))  # type: ignore[index]
             for k in ("image", "valid_hw")}
    x, _ = crop_flip_normalize({**batch, "target": torch.zeros(len(items), 1)}, image_size=pre["image_size"],
                               mean=pre["mean"], std=pre["std"], train=False, flip=False)
    return x


@torch.no_grad()
def predict_prepared(loaded: LoadedModel, items: Sequence[Prepared], *, threshold: float | None = None,
                     top_k: int | None = None) -> list[dict[str, Any]]:
    """One output per prepared image: ``concepts`` (classification), ``regions`` (detection) or ``embedding``."""
    task = loaded.manifest["task"]
    flips = loaded.params.average_horizontal_flips
    if not items:
        return []
    device = next(loaded.model.parameters()).device  # a model moved to a GPU predicts there
    if task == "detection":
        limit = loaded.params.detection_score_threshold if threshold is None else threshold
        return [{"regions": _regions(loaded, item, predict_with_flips(loaded.model, task, item.tensor.to(device),
                                                                      flips)[0], limit)} for item in items]
    out = predict_with_flips(predict_model(loaded), task, model_input(loaded, items).to(device), flips).float().cpu()
    if task == "embedding":
        return [{"embedding": row.tolist()} for row in out]
    concepts = loaded.manifest["concepts"]
    results = []
    for row in out.tolist():
        ranked = sorted(zip(concepts, row), key=lambda cv: -cv[1])[: top_k or None]
        results.append({"concepts": [{"id": c, "value": v} for c, v in ranked]})
    return results


def predict_bytes(loaded: LoadedModel, images: Sequence[bytes], *, threshold: float | None = None,
                  top_k: int | None = None, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One output per image; an image that cannot be decoded is an ``InvalidInput`` naming it
    (``names[k]``, else ``image k``)."""
    return predict_prepared(loaded, prepare_all(loaded, images, names), threshold=threshold, top_k=top_k)


def prepare_all(loaded: LoadedModel, images: Sequence[bytes], names: Sequence[str] | None = None) -> list[Prepared]:
    """``prepare`` of each image; one that cannot be decoded is an ``InvalidInput`` naming it (``names[k]``,
    else ``image k``)."""
    prepared = []
    for k, data in enumerate(images):
        try:
            prepared.append(prepare(loaded, data))
        except InvalidInput as exc:
            raise InvalidInput(f"{names[k] if names else f'image {k}'}: {exc}") from None
    return prepared

