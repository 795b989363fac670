"""The modules an export traces: a version's served output from raw pixels, preprocessing and
post-processing inside the graph.

Input ``images``: uint8 [N, 3, H, W], RGB, 0-255 — the pixels of the image as the served path
prepares it (``deeptrain.exports.pixels``): classification/embedding the ``image_size`` centre
crop, detection the whole image with its shorter side resized to ``image_size`` (any H, W).
The graph divides by 255 and normalizes with the template's mean/std, then runs exactly what
``deeptrain.inference`` runs (``predict_with_flips``, with the version's
``average_horizontal_flips``):

* classification ``probabilities`` [N, C] (sigmoid with ``logreg``, else softmax);
* embedding ``embeddings`` [N, D], unit vectors;
* detection, one image per run (N = 1): ``boxes`` [K, 4] xyxy in input pixels, ``scores`` [K],
  ``labels`` [K] (int64 concept index), best first, only scores above the version's
  ``detection_score_threshold`` — the anchor decoding, clipping, per-class NMS (ONNX
  ``NonMaxSuppression``), the flip merge and the threshold are all in the graph.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import nms, remove_small_boxes

from deeptrain.models.detection import FEATURE_OFFSETS, FEATURE_TAPS, LEVEL_STRIDES
from deeptrain.models.tasks import hflip_boxes, predict_with_flips

OUTPUT_NAMES = {"classification": ["probabilities"], "embedding": ["embeddings"],
                "detection": ["boxes", "scores", "labels"]}


class _Normalize(nn.Module):
    """uint8 [N, 3, H, W] -> float, / 255, (x - mean) / std: the served path's arithmetic."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return (images.float() / 255.0 - self.mean) / self.std


class DenseGraph(nn.Module):
    """Classification probabilities or unit embeddings of uint8 crops."""

    def __init__(self, model: nn.Module, task: str, mean: Sequence[float], std: Sequence[float], flips: bool) -> None:
        super().__init__()
        self.model, self.task, self.flips = model, task, flips
        self.normalize = _Normalize(mean, std)

    def forward(self, images: Tensor) -> Tensor:
        return predict_with_flips(self.model, self.task, self.normalize(images), self.flips)


def _hw(x: Tensor) -> tuple[Any, Any]:
    """(height, width) of ``x`` that stay symbolic in the export: shape tensors for the ONNX tracer,
    (symbolic) ints for ``torch.export`` and eager runs."""
    if torch.jit.is_tracing():
        shape = torch._shape_as_tensor(x)
        return shape[-2], shape[-1]
    return x.shape[-2], x.shape[-1]


def _clip(boxes: Tensor, height: Any, width: Any) -> Tensor:
    """``clip_boxes_to_image`` with the sizes of ``_hw``."""
    if isinstance(width, Tensor):
        width, height = width.to(boxes.dtype), height.to(boxes.dtype)
        return torch.stack([boxes[:, k].clamp(min=0).minimum(lim) for k, lim in enumerate((width, height) * 2)], 1)
    return torch.stack([boxes[:, k].clamp(min=0, max=lim) for k, lim in enumerate((width, height) * 2)], 1)


def _batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou: float, height: Any, width: Any) -> Tensor:
    """``batched_nms`` (its coordinate trick) with each class shifted by the image's size instead of
    the largest coordinate: no data-dependent size, so one ONNX ``NonMaxSuppression`` or one
    ``torch.export`` graph serves every image."""
    side = torch.maximum(height, width) if isinstance(width, Tensor) else max(height, width)
    offsets = labels.to(boxes.dtype) * (side + 1)
    return nms(boxes + offsets[:, None], scores, iou)


def _level_anchors(cell: Tensor, p: Tensor, stride: int, offset: float) -> Tensor:
    """The detector's anchors of one level (``DetectionTask._anchors``), sizes read from the graph."""
    h, w = _hw(p)
    ys = torch.arange(h, dtype=torch.float32) * stride + offset  # type: ignore[call-overload]
    xs = torch.arange(w, dtype=torch.float32) * stride + offset  # type: ignore[call-overload]
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
    return (shifts + cell.to(torch.float32).view(1, -1, 4)).reshape(-1, 4)


class DetectionGraph(nn.Module):
    """``predict_with_flips`` of a ``DetectionTask`` model on one image, then the score threshold;
    the decoding is ``DetectionTask.predict`` written with shape-free ops (the top-k candidates of
    all scores, then those above ``score_thresh``: the same set as the threshold first)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], flips: bool,
                 score_threshold: float) -> None:
        super().__init__()
        self.model, self.flips, self.score_threshold = model, flips, float(score_threshold)
        self.normalize = _Normalize(mean, std)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.normalize(images)
        boxes, scores, labels = self._predict(x)
        if self.flips:
            m_boxes, m_scores, m_labels = self._predict(x.flip(-1))
            height, width = _hw(x)
            flipped = hflip_boxes(m_boxes, width.to(torch.float32) if isinstance(width, Tensor) else width)
            boxes = torch.cat((boxes, flipped))
            scores, labels = torch.cat((scores, m_scores)), torch.cat((labels, m_labels))
            keep = _batched_nms(boxes, scores, labels, self.model.nms_thresh, height, width)
            keep = keep[: self.model.detections_per_img]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        shown = scores > self.score_threshold
        return boxes[shown], scores[shown], labels[shown]

    def _pyramid(self, x: Tensor) -> list[Tensor]:
        m = self.model
        feats = m.forward_intermediates(x, indices=list(FEATURE_TAPS), intermediates_only=True)
        return list(m.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())

    def _predict(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        height, width = _hw(x)
        all_boxes, all_scores, all_labels = [], [], []
        for level, p in enumerate(self._pyramid(x)):
            logits = m.head.classification([p])[0]  # [H*W*A, C]
            regression = m.head.regression([p])[0]  # [H*W*A, R, 4]
            anchors = _level_anchors(m.anchor_generator.cell_anchors[level], p, LEVEL_STRIDES[level],
                                     FEATURE_OFFSETS[level])
            scores = torch.sigmoid(logits.float()).flatten()
            scores, candidates = scores.topk(det_utils._topk_min(scores, m.topk_candidates, 0))
            above = scores > m.score_thresh
            scores, candidates = scores[above], candidates[above]
            anchor_idx = torch.div(candidates, m.num_classes, rounding_mode="floor")
            labels = candidates % m.num_classes
            deltas = regression.float()[anchor_idx]
            if m.use_perclass_regression:
                deltas = deltas.gather(1, labels.view(-1, 1, 1).expand(-1, 1, 4))
            boxes = m.box_coder.decode_single(deltas[:, 0], anchors[anchor_idx])
            boxes = _clip(boxes, height, width)
            kept = remove_small_boxes(boxes, 1.0)
            all_boxes.append(boxes[kept])
            all_scores.append(scores[kept])
            all_labels.append(labels[kept])
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        keep = _batched_nms(boxes, scores, labels, m.nms_thresh, height, width)[: m.detections_per_img]
        return boxes[keep], scores[keep], labels[keep]


def served_graph(model: nn.Module, manifest: dict, flips: bool, score_threshold: float) -> nn.Module:
    """The module to export for a version (eval mode)."""
    pre = manifest["preprocessing"]
    if manifest["task"] == "detection":
        return DetectionGraph(model, pre["mean"], pre["std"], flips, score_threshold).eval()
    return DenseGraph(model, manifest["task"], pre["mean"], pre["std"], flips).eval()
