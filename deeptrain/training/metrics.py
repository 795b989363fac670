"""Evaluation metrics per task (torchmetrics + pycocotools), as JSON-friendly dicts.

classification: top1/top5 (an image counts as a hit when one of its k best-scoring
    concepts is a positive), macro precision/recall/F1 (at 0.5 for sigmoid/logreg, at the
    argmax for softmax), per-concept figures, ROC AUC (sigmoid), confusion matrix.
detection: COCO mAP@[.5:.95], AP50, AP75 and per-concept AP (pycocotools via torchmetrics).
embedding: Recall@1/5/10 and mAP@R by leave-one-out retrieval within the test split.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelAUROC,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
)

# the scalar test metrics each task reports, higher is better; the first is the task's headline
# metric (what tuning optimizes by default)
TASK_METRICS = {
    "classification": ("top1", "top5", "macro_precision", "macro_recall", "macro_f1"),
    "detection": ("map", "ap50", "ap75"),
    "embedding": ("recall@1", "recall@5", "recall@10", "map@r"),
}


def _topk_hits(scores: Tensor, targets: Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float(targets.gather(1, top).amax(1).gt(0).float().mean())


def classification_metrics(scores: Tensor, targets: Tensor, concept_ids: Sequence[str], logreg: bool) -> dict[str, Any]:
    """scores: [N, C] probabilities; targets: [N, C] multi-hot."""
    c = scores.shape[1]
    labelled = targets.sum(1) > 0
    out: dict[str, Any] = {
        "num_test": int(scores.shape[0]),
        "top1": _topk_hits(scores[labelled], targets[labelled], 1),
        "top5": _topk_hits(scores[labelled], targets[labelled], 5),
    }
    truth = targets.argmax(1)
    pred = scores.argmax(1)
    cm = MulticlassConfusionMatrix(num_classes=c)(pred[labelled], truth[labelled]) if c > 1 else torch.zeros(1, 1)
    out["confusion_matrix"] = cm.long().tolist()
    if logreg:
        t = targets.long()
        per = {
            "precision": MultilabelPrecision(num_labels=c, average=None, threshold=0.5)(scores, t),
            "recall": MultilabelRecall(num_labels=c, average=None, threshold=0.5)(scores, t),
            "f1": MultilabelF1Score(num_labels=c, average=None, threshold=0.5)(scores, t),
        }
        if c > 1:
            per["auc"] = MultilabelAUROC(num_labels=c, average=None)(scores, t)
    else:
        per = {
            "precision": MulticlassPrecision(num_classes=c, average=None)(pred[labelled], truth[labelled]),
            "recall": MulticlassRecall(num_classes=c, average=None)(pred[labelled], truth[labelled]),
            "f1": MulticlassF1Score(num_classes=c, average=None)(pred[labelled], truth[labelled]),
        }
    for name, values in per.items():
        out[f"macro_{name}"] = float(values.float().mean())
    out["per_concept"] = {
        cid: {name: float(values[i]) for name, values in per.items()} for i, cid in enumerate(concept_ids)
    }
    return out


def detection_metrics(preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]],
                      concept_ids: Sequence[str]) -> dict[str, Any]:
    """COCO-style mAP over all predicted boxes (no score threshold)."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, backend="pycocotools")
    metric.update(
        [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in preds],
        [{k: t[k].detach().cpu() for k in ("boxes", "labels")} for t in targets],
    )
    result = metric.compute()
    per_class = result["map_per_class"].reshape(-1).tolist()
    classes = result["classes"].reshape(-1).tolist()
    return {
        "num_test": len(preds),
        "map": float(result["map"]),
        "ap50": float(result["map_50"]),
        "ap75": float(result["map_75"]),
        "per_concept": {concept_ids[int(k)]: {"ap": float(v)} for k, v in zip(classes, per_class)},
    }


def embedding_metrics(embeddings: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Leave-one-out retrieval: each test embedding queries all others (cosine similarity)."""
    keep = labels >= 0
    e = torch.nn.functional.normalize(embeddings[keep].float(), dim=1)
    y = labels[keep]
    n = e.shape[0]
    sim = e @ e.T
    sim.fill_diagonal_(-float("inf"))
    order = sim.argsort(dim=1, descending=True)[:, : n - 1]
    same = y[order] == y[:, None]  # [n, n-1] relevance of each ranked neighbour
    out: dict[str, Any] = {"num_test": int(n)}
    for k in ks:
        out[f"recall@{k}"] = float(same[:, :k].any(1).float().mean())
    relevant = same.sum(1)
    ap_r = []
    for i in range(n):
        r = int(relevant[i])
        if r == 0:
            ap_r.append(0.0)
            continue
        hits = same[i, :r].float()
        precision_at = hits.cumsum(0) / torch.arange(1, r + 1)
        ap_r.append(float((precision_at * hits).sum() / r))
    out["map@r"] = float(torch.tensor(ap_r).mean()) if ap_r else 0.0
    return out
