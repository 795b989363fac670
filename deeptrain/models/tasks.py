"""Task logic shared by every architecture: losses, ``predict``, flip averaging.

The model contract (what training, evaluation and serving rely on):

* ``forward(images)``: images float [B, 3, H, W], normalized with the template's
  mean/std. Classification: logits [B, C]. Embedding: L2-normalized [B, D].
  Detection: the raw head outputs (see ``deeptrain.models.detection``).
* ``compute_loss(images, targets) -> dict[str, Tensor]``: ``"loss"`` is the total
  (the one to backpropagate), other keys are its components.
* ``predict(images)``: classification: probabilities [B, C] (sigmoid with
  ``logreg``, else softmax); embedding: unit vectors [B, D]; detection: one dict per
  image ``{"boxes": [K, 4] xyxy pixels, "scores": [K], "labels": [K]}``.
  ``predict`` runs without gradients and leaves train/eval mode alone: call
  ``model.eval()`` first.
* ``model.task`` names the task.

Naming: the task behaviour comes as a mixin on the backbone class, so the base
parameters of every model keep the names of the backbone (the timm names for the
timm architectures). A timm state_dict, or a model of another task on the same
backbone, loads into the base with ``load_state_dict(..., strict=False)``; the head
parameters are the ones under the template's ``head_prefixes``.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

if TYPE_CHECKING:  # pragma: no cover
    from deeptrain.templates import Template

__all__ = [
    "ClassificationTask",
    "EmbeddingHead",
    "EmbeddingTask",
    "count_params",
    "count_reference_params",
    "hflip_boxes",
    "predict_with_flips",
    "reference_classifier",
]

F_ = TypeVar("F_", bound=Callable[..., Any])


# ---------------------------------------------------------------- classification


class ClassificationTask:
    """Mixin for a network whose ``forward`` returns logits [B, num_classes].

    ``logreg=True``: sigmoid + binary cross-entropy (mean over batch and classes),
    multi-label. ``logreg=False``: softmax + cross-entropy; the multi-hot target row
    must have exactly one 1 (its argmax is the class).
    """

    task = "classification"
    logreg: bool = True

    def compute_loss(self, images: Tensor, targets: Tensor) -> dict[str, Tensor]:
        logits = self(images)  # type: ignore[operator]
        if targets.shape != logits.shape:
            raise ValueError(f"targets must be multi-hot {tuple(logits.shape)}, got {tuple(targets.shape)}")
        if self.logreg:
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
        else:
            loss = F.cross_entropy(logits, targets.argmax(dim=1))
        return {"loss": loss}

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        logits = self(images).float()  # type: ignore[operator]
        return torch.sigmoid(logits) if self.logreg else torch.softmax(logits, dim=1)


# ---------------------------------------------------------------- embedding


class EmbeddingHead(nn.Module):
    """Linear projection to ``embedding_dim`` + L2 normalization, and the concept proxies.

    Training: normalized softmax with an additive cosine margin (CosFace, Wang et al.
    2018; normalized-softmax proxies as in Zhai & Wu 2018, "Classification is a Strong
    Baseline for Deep Metric Learning"): logits = scale * (cos(e, p_c) - margin * [c = y]),
    cross-entropy over the ``num_classes`` proxies p_c. The proxies are parameters of
    the head (``embedding.proxies``); serving uses only the normalized vector.
    """

    def __init__(
        self,
        in_features: int,
        embedding_dim: int,
        num_classes: int,
        scale: float = 20.0,
        margin: float = 0.1,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.embedding_dim = embedding_dim
        self.scale = scale
        self.margin = margin
        self.proj = nn.Linear(in_features, embedding_dim)
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim))
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(in_features))
        nn.init.zeros_(self.proj.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.proj(pooled).float(), dim=1)  # float32 even under autocast

    def loss(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        cosine = embeddings @ F.normalize(self.proxies, dim=1).t()
        margin = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype) * self.margin
        loss = F.cross_entropy(self.scale * (cosine - margin), labels)
        return {"loss": loss}


class EmbeddingTask:
    """Mixin for a timm-style backbone (``forward_features``, ``forward_head(x,
    pre_logits=True)``) with an ``embedding`` attribute holding an ``EmbeddingHead``."""

    task = "embedding"
    embedding: EmbeddingHead

    def forward(self, images: Tensor) -> Tensor:
        pooled = self.forward_head(self.forward_features(images), pre_logits=True)  # type: ignore[attr-defined]
        return self.embedding(pooled)

    def compute_loss(self, images: Tensor, targets: Tensor) -> dict[str, Tensor]:
        if targets.dim() != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(f"targets must be class indices [{images.shape[0]}], got {tuple(targets.shape)}")
        return self.embedding.loss(self.forward(images), targets.long())

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        return self.forward(images)


# ---------------------------------------------------------------- flips


def hflip_boxes(boxes: Tensor, width: int | float) -> Tensor:
    """Mirror xyxy pixel boxes of an image of ``width``: x' = width - x (x1/x2 swap)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((width - x2, y1, width - x1, y2), dim=-1)


@torch.no_grad()
def predict_with_flips(model: nn.Module, task: str, images: Tensor, average_horizontal_flips: bool) -> Any:
    """``model.predict(images)``, averaged with the prediction on the mirrored images.

    classification: mean of the two probability vectors; embedding: mean of the two
    embeddings, re-normalized; detection: the mirrored pass's boxes are un-flipped and
    both sets are merged per image with ``batched_nms`` (``model.nms_thresh``), keeping
    at most ``model.detections_per_img``.
    """
    if not average_horizontal_flips:
        return model.predict(images)  # type: ignore[operator]
    flipped = images.flip(-1)
    if task in ("classification", "embedding"):  # one forward of both halves: half the per-call overhead
        plain, mirrored = model.predict(torch.cat((images, flipped))).chunk(2)  # type: ignore[operator]
        return (plain + mirrored) / 2 if task == "classification" else F.normalize(plain + mirrored, dim=1)
    plain, mirrored = model.predict(images), model.predict(flipped)  # type: ignore[operator]
    if task == "detection":
        width = images.shape[-1]
        nms_thresh = float(getattr(model, "nms_thresh", 0.5))
        cap = int(getattr(model, "detections_per_img", 100))
        merged = []
        for a, b in zip(plain, mirrored):
            boxes = torch.cat((a["boxes"], hflip_boxes(b["boxes"], width)))
            scores = torch.cat((a["scores"], b["scores"]))
            labels = torch.cat((a["labels"], b["labels"]))
            keep = batched_nms(boxes, scores, labels, nms_thresh)[:cap]
            merged.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return merged
    raise ValueError(f"unknown task {task!r}")


# ---------------------------------------------------------------- parameter counts


def reference_classifier(builder_path: str) -> Callable[[F_], F_]:
    """Mark a detection/embedding builder with the classifier builder of its backbone
    ("module:function"); ``count_reference_params`` builds that one at 1000 classes."""

    def mark(func: F_) -> F_:
        func.reference_classifier = builder_path  # type: ignore[attr-defined]
        return func

    return mark


def _resolve(path: str) -> Callable[..., nn.Module]:
    module_name, _, func_name = path.partition(":")
    return getattr(importlib.import_module(module_name), func_name)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_reference_params(template: "Template") -> int:
    """Parameters of the template's network at 1000 classes, comparable with
    ``template.reference_num_params``: the classifier itself for classification, the
    backbone with its 1000-class classifier for detection and embedding."""
    builder = _resolve(template.builder)
    ref = getattr(builder, "reference_classifier", None)
    model = _resolve(ref)(num_classes=1000) if ref else template.build(1000)
    return count_params(model)
