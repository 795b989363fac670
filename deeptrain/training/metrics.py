"""Evaluation metrics per task (torchmetrics + pycocotools), as JSON-friendly dicts.

Every figure is defined once, in README's "Metrics" table; in short:

classification: one decision rule for both heads (softmax and sigmoid/logreg): an image's
    predicted concept is its highest-scoring one (argmax). The confusion matrix counts the
    test images with exactly one concept by (true, predicted) concept, and per-concept
    precision/recall/F1 and their macro means are read off that matrix, so recall of a
    concept is its diagonal cell over its row sum and precision over its column sum.
    ``top1`` (and ``top5`` when a model has more than 5 concepts: top-k with k >= the
    number of concepts is always 1 and is left out) counts an image with at least one
    concept as a hit when one of its k best-scoring concepts is one of them. Threshold-free:
    per-concept average precision ``ap`` (both heads) and ROC ``auc`` (logreg). Under logreg,
    where an image may carry several concepts or none, ``multilabel`` adds the figures of
    the per-concept decision ``score > 0.5`` over every test image.
detection: COCO mAP@[.5:.95], AP50, AP75 and per-concept AP (pycocotools via torchmetrics).
embedding: Recall@1/5/10 and mAP@R by leave-one-out retrieval within the split.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MultilabelAUROC,
    MultilabelAveragePrecision,
    MultilabelF1Score,
    MultilabelPrecision,
    MultilabelRecall,
)

# the scalar metrics each task can report, higher is better; the first is the task's headline
# metric (what tuning optimizes by default). A model reports top-k only for k < its number of
# concepts: ``reported_metrics`` says which of these a given model has.
TASK_METRICS = {
    "classification": ("top1", "top5", "macro_precision", "macro_recall", "macro_f1"),
    "detection": ("map", "ap50", "ap75"),
    "embedding": ("recall@1", "recall@5", "recall@10", "map@r"),
}
TOP_K = (1, 5)
MULTILABEL_THRESHOLD = 0.5  # logreg's per-concept decision in ``multilabel``: score > this


def top_ks(num_concepts: int) -> list[int]:
    """The k of the top-k figures a model of ``num_concepts`` reports: 1 always, larger k only below the count."""
    return [k for k in TOP_K if k == 1 or k < num_concepts]


def reported_metrics(task: str, num_concepts: int) -> tuple[str, ...]:
    """``TASK_METRICS[task]`` less the top-k a model of ``num_concepts`` concepts does not report."""
    ks = {f"top{k}" for k in top_ks(num_concepts)}
    return tuple(m for m in TASK_METRICS[task] if not (m.startswith("top") and m not in ks))


def unreported_metric(task: str, metric: str, num_concepts: int | None = None) -> str | None:
    """Why ``metric`` cannot be asked of a ``task`` model (of ``num_concepts`` concepts, when given), or None."""
    names = TASK_METRICS[task] if num_concepts is None else reported_metrics(task, num_concepts)
    if metric not in TASK_METRICS[task]:
        return f"metric {metric!r} is not one that {task} reports; use one of {', '.join(names)}"
    if metric not in names:
        return (f"metric {metric!r} is not reported by a model of {num_concepts} concepts (top-k needs more than k "
                f"concepts); use one of {', '.join(names)}")
    return None


def _topk_hits(scores: Tensor, targets: Tensor, k: int) -> float:
    if scores.shape[0] == 0:
        return 0.0
    # ties broken towards the lower index, as argmax (the confusion matrix's decision) breaks them: averaged
    # flips can score two concepts exactly alike (0.5 / 0.5)
    top = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return float(targets.gather(1, top).amax(1).gt(0).float().mean())


def confusion_matrix(scores: Tensor, targets: Tensor) -> Tensor:
    """[C, C] counts over the images with exactly one concept: row = true concept, column = argmax of the scores."""
    c = scores.shape[1]
    single = targets.sum(1) == 1
    if c == 1:
        return torch.tensor([[int(single.sum())]])
    metric = MulticlassConfusionMatrix(num_classes=c)
    return metric(scores[single].argmax(1), targets[single].argmax(1)).long()


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def matrix_figures(matrix: Tensor) -> dict[str, list[float | None]]:
    """Per-concept precision, recall and F1 of a confusion matrix (rows true, columns predicted).

    recall = diagonal / row sum (None without test images of the concept); precision =
    diagonal / column sum (0 for a concept with test images that is never predicted, None
    for one with neither); F1 = 2 diagonal / (row sum + column sum).
    """
    diag, rows, cols = matrix.diagonal().tolist(), matrix.sum(1).tolist(), matrix.sum(0).tolist()
    return {
        "precision": [_ratio(d, col) if col or not row else 0.0 for d, row, col in zip(diag, rows, cols)],
        "recall": [_ratio(d, row) for d, row in zip(diag, rows)],
        "f1": [_ratio(2 * d, row + col) for d, row, col in zip(diag, rows, cols)],
    }


def _macro(values: list[float | None], present: list[bool]) -> float:
    """Mean over the concepts that have test images (0.0 when none has)."""
    kept = [v for v, p in zip(values, present) if p and v is not None]
    return sum(kept) / len(kept) if kept else 0.0


def average_precision(scores: Tensor, targets: Tensor) -> list[float | None]:
    """Per-concept (one-vs-rest) average precision over every image; None for a concept without positives."""
    c = scores.shape[1]
    with warnings.catch_warnings():  # torchmetrics warns of a concept without positives: None below
        warnings.simplefilter("ignore", UserWarning)
        ap = MultilabelAveragePrecision(num_labels=c, average=None)(scores.float(), targets.long()).tolist()
    positives = targets.sum(0).tolist()
    return [float(a) if p > 0 else None for a, p in zip(ap, positives)]


def roc_auc(scores: Tensor, targets: Tensor) -> list[float | None]:
    """Per-concept (one-vs-rest) ROC AUC over every image; None for a concept without positives or negatives."""
    with warnings.catch_warnings():  # torchmetrics warns of a concept without positives or negatives: None below
        warnings.simplefilter("ignore", UserWarning)
        auc = MultilabelAUROC(num_labels=scores.shape[1], average=None)(scores.float(), targets.long()).tolist()
    positives, n = targets.sum(0).tolist(), targets.shape[0]
    return [float(a) if 0 < p < n else None for a, p in zip(auc, positives)]


def _multilabel_figures(scores: Tensor, targets: Tensor, concept_ids: Sequence[str]) -> dict[str, Any]:
    """logreg's thresholded figures: each concept decided on its own (score > 0.5) over every image."""
    c, t, th = scores.shape[1], targets.long(), MULTILABEL_THRESHOLD
    per = {name: cls(num_labels=c, average=None, threshold=th, zero_division=0)(scores, t).tolist()
           for name, cls in (("precision", MultilabelPrecision), ("recall", MultilabelRecall),
                             ("f1", MultilabelF1Score))}
    out: dict[str, Any] = {"threshold": th, "num_images": int(scores.shape[0])}
    out.update({f"macro_{name}": sum(v) / c for name, v in per.items()})
    out["per_concept"] = {cid: {name: float(v[i]) for name, v in per.items()} for i, cid in enumerate(concept_ids)}
    return out


def classification_metrics(scores: Tensor, targets: Tensor, concept_ids: Sequence[str], logreg: bool) -> dict[str, Any]:
    """scores: [N, C] probabilities (softmax or sigmoid); targets: [N, C] multi-hot."""
    labelled = targets.sum(1) > 0
    matrix = confusion_matrix(scores, targets)
    present = (matrix.sum(1) > 0).tolist()
    per: dict[str, list[float | None]] = {**matrix_figures(matrix), "ap": average_precision(scores, targets)}
    out: dict[str, Any] = {"num_test": int(scores.shape[0]), "num_single_label": int(matrix.sum())}
    out.update({f"top{k}": _topk_hits(scores[labelled], targets[labelled], k) for k in top_ks(scores.shape[1])})
    out.update({f"macro_{name}": _macro(per[name], present) for name in ("precision", "recall", "f1")})
    out["confusion_matrix"] = matrix.tolist()
    if logreg and scores.shape[1] > 1:
        per["auc"] = roc_auc(scores, targets)
        out["macro_auc"] = _macro(per["auc"], [True] * len(present))
    out["per_concept"] = {cid: {name: values[i] for name, values in per.items()} for i, cid in enumerate(concept_ids)}
    if logreg:
        out["multilabel"] = _multilabel_figures(scores, targets, concept_ids)
    return out


def detection_metrics(preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]],
                      concept_ids: Sequence[str]) -> dict[str, Any]:
    """COCO-style mAP over all predicted boxes (no score threshold), on the test split."""
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
        # pycocotools gives -1 for a concept without test boxes: undefined, None here
        "per_concept": {concept_ids[int(k)]: {"ap": float(v) if v >= 0 else None} for k, v in zip(classes, per_class)},
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
