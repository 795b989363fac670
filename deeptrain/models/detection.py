"""Single-stage detector: multi-scale backbone features + FPN + RetinaNet-style head.

Architecture (Lin et al. 2017, "Focal Loss for Dense Object Detection"):

* backbone: a timm Inception network (InceptionV2 = timm ``inception_v3``, or
  ``inception_v4``); its stride-8/16/32 features (``forward_intermediates`` taps 2, 3,
  4) feed the neck. The model subclasses the timm class, so the backbone parameters
  keep timm's names (the unused 1000-class classifier is dropped).
* neck ``fpn``: torchvision ``FeaturePyramidNetwork`` (256 channels) with P6/P7
  (``LastLevelP6P7``) -> five levels, strides 8 to 128.
* head ``head``: per level, a class subnet (torchvision ``RetinaNetClassificationHead``,
  GroupNorm) and a box subnet (``BoxRegressionHead`` below), shared across levels.
  With ``use_perclass_regression`` the box subnet has ``num_classes`` sets of 4
  regressors per anchor; the set of the anchor's ground-truth class is trained, the
  set of the predicted class is decoded. Otherwise one set per anchor.
* anchors: the cell anchors of torchvision's ``AnchorGenerator``, 3 scales x 3 aspect
  ratios per level, RetinaNet's sizes: 4 x the level's stride (32, 64, ..., 512 px for
  strides 8 to 128), whatever the image size, so that any object of an anchor's size
  has an anchor close enough to overlap it with IoU >= 0.5. They are centred on the
  receptive-field centres of the cells: the Inception backbones pad nothing in their
  stem and reduction blocks, so cell ``i`` of the stride-``s`` map looks at
  ``offset + s * i`` px (``FEATURE_OFFSETS``: 13.5, 21.5 and 37.5 px at strides 8, 16
  and 32; P6/P7 are padded stride-2 convs of P5 and keep its offset). A grid spread
  over the whole image (torchvision's corners ``i * (size // map)``, or cell centres
  ``(i + 0.5) * size / map``) spaces the anchors wider than the features and puts them
  up to 15 px away from what their cell sees at 96 px.
* losses: sigmoid focal loss (torchvision ``sigmoid_focal_loss``, alpha 0.25, gamma 2)
  over foreground + background anchors, smooth-L1 (beta 1/9) on the ``BoxCoder``
  deltas or GIoU on the decoded boxes, both divided by the number of foreground
  anchors, averaged over the recent batches (Detectron2's ``loss_normalizer``: an
  exponential moving average, momentum 0.9, set by the first training batch, kept as
  the buffer ``head.loss_normalizer`` so a resumed run continues it): with sparse
  objects a batch with one or two boxes would otherwise divide the whole background loss by a handful
  of anchors and spike the gradient; matching with torchvision ``Matcher`` (IoU >= 0.5 foreground, < 0.4
  background, low-quality matches allowed) on ``box_iou``.
* ``predict``: per level the top 1000 (anchor, class) candidates scoring above 0.05,
  decoded with ``BoxCoder``, clipped, merged per class with ``batched_nms`` (IoU 0.5),
  at most 100 per image, best first.

``forward(images)`` returns a dict:
    ``cls_logits``: [B, A, num_classes] class logits of all A anchors (levels concatenated);
    ``bbox_regression``: [B, A, R, 4] box deltas, R = num_classes with per-class regression else 1;
    ``anchors``: [A, 4] xyxy pixel anchors (the same for every image of the batch);
    ``num_anchors_per_level``: list of ints summing to A.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timm.models.inception_v3 import InceptionV3  # noqa: E402
from timm.models.inception_v4 import InceptionV4  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchvision.models.detection import _utils as det_utils  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.retinanet import RetinaNetClassificationHead  # noqa: E402
from torchvision.ops import (  # noqa: E402
    Conv2dNormActivation,
    FeaturePyramidNetwork,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402

from deeptrain.models.tasks import reference_classifier  # noqa: E402

__all__ = [
    "BOX_LOSSES",
    "BoxRegressionHead",
    "DetectionHead",
    "DetectionTask",
    "InceptionV2Detector",
    "InceptionV4Detector",
    "build_inception_v2_detector",
    "build_inception_v4_detector",
]

BOX_LOSSES = ("smooth_l1", "giou")
FEATURE_TAPS = (2, 3, 4)  # timm feature_info indices: strides 8, 16, 32
FPN_CHANNELS = 256
LEVEL_STRIDES = (8, 16, 32, 64, 128)  # P3-P7
# receptive-field centre of cell 0 of the stride 8/16/32 taps (P6, P7 keep P5's): the
# stem's valid convs and pools and each valid stride-2 reduction block map cell i of
# their output to cell 2i+1 (k3 s2) or i+1 (k3 s1) of their input, so
# c8(i) = 8i + 13.5, c16(i) = c8(2i + 1) = 16i + 21.5, c32(i) = 32i + 37.5 for both
# timm inception_v3 and inception_v4 (tests/test_models.py checks it on the networks)
FEATURE_OFFSETS = (13.5, 21.5, 37.5, 37.5, 37.5)
ANCHOR_SIZE_PER_STRIDE = 4  # RetinaNet: 32 px anchors at stride 8
ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ASPECT_RATIOS = (0.5, 1.0, 2.0)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class BoxRegressionHead(nn.Module):
    """Box subnet: 4 x (3x3 conv, GroupNorm, ReLU) + a 3x3 conv to
    ``num_anchors * 4 * num_sets`` deltas (``num_sets`` = num_classes for per-class
    regression, else 1), shared over the FPN levels."""

    def __init__(self, in_channels: int, num_anchors: int, num_sets: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_sets = num_sets
        self.conv = nn.Sequential(
            *(Conv2dNormActivation(in_channels, in_channels, norm_layer=_group_norm) for _ in range(4))
        )
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * num_sets * 4, kernel_size=3, padding=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> Tensor:
        """[B, sum(H*W*A), num_sets, 4], levels concatenated in order."""
        out = []
        for x in features:
            x = self.bbox_reg(self.conv(x))
            b, _, h, w = x.shape
            # [B, A*S*4, H, W] -> [B, H, W, A, S, 4] -> [B, H*W*A, S, 4] (torchvision's anchor order)
            x = x.view(b, self.num_anchors, self.num_sets, 4, h, w).permute(0, 4, 5, 1, 2, 3)
            out.append(x.reshape(b, h * w * self.num_anchors, self.num_sets, 4))
        return torch.cat(out, dim=1)


class DetectionHead(nn.Module):
    LOSS_NORMALIZER_MOMENTUM = 0.9

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, per_class_regression: bool) -> None:
        super().__init__()
        self.register_buffer("loss_normalizer", torch.tensor(0.0))  # 0: no training batch seen yet
        self.classification = RetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, norm_layer=_group_norm
        )
        self.regression = BoxRegressionHead(in_channels, num_anchors, num_classes if per_class_regression else 1)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        return self.classification(features), self.regression(features)

    def normalizer(self, num_foreground: int) -> float:
        """The loss divisor: the moving average of the foreground anchors per batch
        (at least 1 each), updated with this batch's count while training; the first
        training batch sets it. Before any training batch it is this batch's count."""
        count = float(max(1, num_foreground))
        if self.training:
            m = self.LOSS_NORMALIZER_MOMENTUM
            seen = float(self.loss_normalizer) > 0
            self.loss_normalizer.copy_(m * self.loss_normalizer + (1 - m) * count if seen else count)
        return float(self.loss_normalizer) if float(self.loss_normalizer) > 0 else count


class DetectionTask:
    """Mixin for a timm backbone class with ``forward_intermediates`` and ``feature_info``."""

    task = "detection"
    score_thresh = 0.05
    nms_thresh = 0.5
    detections_per_img = 100
    topk_candidates = 1000
    focal_alpha = 0.25
    focal_gamma = 2.0
    smooth_l1_beta = 1.0 / 9.0

    def _init_detection(self, num_classes: int, use_perclass_regression: bool, box_loss: str) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        self.num_classes = num_classes
        self.use_perclass_regression = bool(use_perclass_regression)
        self.box_loss = box_loss
        info = self.feature_info  # type: ignore[attr-defined]
        in_channels = [info[i]["num_chs"] for i in FEATURE_TAPS]
        self.fpn = FeaturePyramidNetwork(
            in_channels, FPN_CHANNELS, extra_blocks=LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS)
        )
        sizes = tuple(tuple(ANCHOR_SIZE_PER_STRIDE * stride * s for s in ANCHOR_SCALES) for stride in LEVEL_STRIDES)
        self.anchor_generator = AnchorGenerator(sizes, (ASPECT_RATIOS,) * 5)
        num_anchors = self.anchor_generator.num_anchors_per_location()[0]
        self.head = DetectionHead(FPN_CHANNELS, num_anchors, num_classes, self.use_perclass_regression)
        self.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=True)

    # -- forward

    def forward(self, images: Tensor) -> dict[str, Any]:
        feats = self.forward_intermediates(images, indices=list(FEATURE_TAPS), intermediates_only=True)  # type: ignore[attr-defined]
        pyramid = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())
        cls_logits, bbox_regression = self.head(pyramid)
        anchors = self._anchors(pyramid)
        num_anchors = self.head.regression.num_anchors
        per_level = [int(p.shape[-2] * p.shape[-1] * num_anchors) for p in pyramid]
        return {
            "cls_logits": cls_logits,
            "bbox_regression": bbox_regression,
            "anchors": anchors,
            "num_anchors_per_level": per_level,
        }

    def _anchors(self, pyramid: list[Tensor]) -> Tensor:
        """[A, 4] xyxy anchors, ordered (level, y, x, cell anchor) like the head's outputs,
        centred at ``FEATURE_OFFSETS[level] + stride * cell``."""
        per_level = []
        for cell, p, stride, offset in zip(self.anchor_generator.cell_anchors, pyramid, LEVEL_STRIDES, FEATURE_OFFSETS):
            h, w = p.shape[-2:]
            ys = torch.arange(h, dtype=torch.float32, device=p.device) * stride + offset
            xs = torch.arange(w, dtype=torch.float32, device=p.device) * stride + offset
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
            per_level.append((shifts + cell.to(p.device, torch.float32).view(1, -1, 4)).reshape(-1, 4))
        return torch.cat(per_level)

    # -- training

    def compute_loss(self, images: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        gts = self._check_targets(images, targets)  # before the (costly) forward pass
        out = self.forward(images)
        anchors: Tensor = out["anchors"]
        cls_logits: Tensor = out["cls_logits"].float()
        bbox_regression: Tensor = out["bbox_regression"].float()
        cls_losses, box_losses, num_foreground = [], [], 0
        for logits, regression, (gt_boxes, gt_labels) in zip(cls_logits, bbox_regression, gts):
            gt_boxes = gt_boxes.to(anchors.dtype)
            if gt_boxes.shape[0] == 0:
                matched = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
            else:
                matched = self.matcher(box_iou(gt_boxes, anchors))
            foreground = matched >= 0
            fg_idx = matched[foreground]
            fg_labels = gt_labels[fg_idx]
            num_foreground += int(foreground.sum())

            cls_target = torch.zeros_like(logits)
            cls_target[foreground, fg_labels] = 1.0
            valid = matched != det_utils.Matcher.BETWEEN_THRESHOLDS
            cls_losses.append(
                sigmoid_focal_loss(
                    logits[valid], cls_target[valid], alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
                )
            )
            deltas = self._select_regression(regression[foreground], fg_labels)
            box_losses.append(self._box_loss(deltas, anchors[foreground], gt_boxes[fg_idx]))
        normalizer = self.head.normalizer(num_foreground)
        loss_cls = torch.stack(cls_losses).sum() / normalizer
        loss_box = torch.stack(box_losses).sum() / normalizer
        return {"loss": loss_cls + loss_box, "loss_cls": loss_cls, "loss_box": loss_box}

    def _check_targets(self, images: Tensor, targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        if len(targets) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(targets)} targets")
        checked = []
        for target in targets:
            boxes = target["boxes"].to(device=images.device, dtype=torch.float32).reshape(-1, 4)
            labels = target["labels"].to(device=images.device, dtype=torch.long).reshape(-1)
            if labels.numel() != boxes.shape[0]:
                raise ValueError(f"each target needs one label per box: {boxes.shape[0]} boxes, {labels.numel()} labels")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"labels must lie in [0, {self.num_classes}), got {labels.tolist()}")
            checked.append((boxes, labels))
        return checked

    def _select_regression(self, regression: Tensor, labels: Tensor) -> Tensor:
        """[N, R, 4] deltas -> [N, 4]: the set of each anchor's class (per-class), else the only set."""
        if self.use_perclass_regression:
            return regression[torch.arange(regression.shape[0], device=regression.device), labels]
        return regression[:, 0]

    def _box_loss(self, deltas: Tensor, anchors: Tensor, gt_boxes: Tensor) -> Tensor:
        if self.box_loss == "giou":
            boxes = self.box_coder.decode_single(deltas, anchors)
            return generalized_box_iou_loss(boxes, gt_boxes, reduction="sum")
        target = self.box_coder.encode_single(gt_boxes, anchors)
        return F.smooth_l1_loss(deltas, target, beta=self.smooth_l1_beta, reduction="sum")

    # -- inference

    @torch.no_grad()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        out = self.forward(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        per_level = out["num_anchors_per_level"]
        anchors_per_level = out["anchors"].split(per_level)
        results = []
        for logits, regression in zip(out["cls_logits"].float(), out["bbox_regression"].float()):
            all_boxes, all_scores, all_labels = [], [], []
            for lvl_logits, lvl_regression, lvl_anchors in zip(
                logits.split(per_level), regression.split(per_level), anchors_per_level
            ):
                scores = torch.sigmoid(lvl_logits).flatten()
                candidates = torch.where(scores > self.score_thresh)[0]
                scores = scores[candidates]
                scores, order = scores.topk(min(self.topk_candidates, candidates.numel()))
                candidates = candidates[order]
                anchor_idx = torch.div(candidates, self.num_classes, rounding_mode="floor")
                labels = candidates % self.num_classes
                deltas = self._select_regression(lvl_regression[anchor_idx], labels)
                boxes = clip_boxes_to_image(self.box_coder.decode_single(deltas, lvl_anchors[anchor_idx]), size)
                # a box clipped to under a pixel (an anchor off the image's edge) is no detection
                kept = remove_small_boxes(boxes, 1.0)
                all_boxes.append(boxes[kept])
                all_scores.append(scores[kept])
                all_labels.append(labels[kept])
            boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results


class InceptionV2Detector(DetectionTask, InceptionV3):
    """Detection template InceptionV2: timm ``inception_v3`` backbone; head = ``fpn`` + ``head``."""

    def __init__(
        self, num_classes: int, use_perclass_regression: bool = False, box_loss: str = "smooth_l1"
    ) -> None:
        InceptionV3.__init__(self, num_classes=0, aux_logits=False)
        self._init_detection(num_classes, use_perclass_regression, box_loss)


class InceptionV4Detector(DetectionTask, InceptionV4):
    """Detection template InceptionV4: timm ``inception_v4`` backbone; head = ``fpn`` + ``head``."""

    def __init__(
        self, num_classes: int, use_perclass_regression: bool = False, box_loss: str = "smooth_l1"
    ) -> None:
        InceptionV4.__init__(self, num_classes=0)
        self._init_detection(num_classes, use_perclass_regression, box_loss)


@reference_classifier("deeptrain.models.inception_v2:build_classifier")
def build_inception_v2_detector(
    num_classes: int, *, use_perclass_regression: bool = False, box_loss: str = "smooth_l1"
) -> InceptionV2Detector:
    return InceptionV2Detector(num_classes, use_perclass_regression, box_loss)


@reference_classifier("deeptrain.models.inception_v4:build_classifier")
def build_inception_v4_detector(
    num_classes: int, *, use_perclass_regression: bool = False, box_loss: str = "smooth_l1"
) -> InceptionV4Detector:
    return InceptionV4Detector(num_classes, use_perclass_regression, box_loss)
