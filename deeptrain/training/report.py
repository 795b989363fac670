"""A version's evaluation report: ``report.json`` plus PNG plots beside the weights.

Plots: loss and learning rate per epoch (every task); classification: confusion matrix
and per-concept precision/recall curves; detection: AP per concept and the first test
images with true (green) and predicted (red, above ``detection_score_threshold``)
boxes; embedding:
Recall@k. Drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from deeptrain.storage import Storage  # noqa: E402

REPORT = "report.json"


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def loss_lr_plot(history: list[dict[str, Any]]) -> bytes:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.step(epochs, [h["lr"] for h in history], "r-", where="post", label="lr")
    ax2.set_ylabel("learning rate", color="r")
    evaluated = [(h["epoch"], h["metrics"]) for h in history if h.get("metrics")]
    key = next((k for k in ("top1", "map", "recall@1") if evaluated and k in evaluated[0][1]), None)
    if key:
        ax3 = ax.twinx()
        ax3.spines["right"].set_position(("axes", 1.15))
        ax3.plot([e for e, _ in evaluated], [m[key] for _, m in evaluated], "g^--", label=key)
        ax3.set_ylabel(f"test {key}", color="g")
    ax.set_title("training loss, learning rate" + (f" and test {key}" if key else "") + " per epoch")
    return figure_png(fig)


def confusion_plot(matrix: list[list[int]], concepts: list[str]) -> bytes:
    n = len(concepts)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), concepts, rotation=60, ha="right")
    ax.set_yticks(range(n), concepts)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax.set_title("confusion matrix (test split)")
    return figure_png(fig)


def pr_curves_plot(scores: torch.Tensor, targets: torch.Tensor, concepts: list[str]) -> bytes:
    from torchmetrics.functional.classification import multilabel_precision_recall_curve

    precision, recall, _ = multilabel_precision_recall_curve(scores, targets.long(), num_labels=len(concepts))
    fig, ax = plt.subplots(figsize=(7, 5))
    for p, r, name in zip(precision, recall, concepts):
        ax.plot(r.numpy(), p.numpy(), label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall per concept (test split)")
    ax.legend(fontsize=7, loc="lower left")
    return figure_png(fig)


def bar_plot(values: dict[str, float], title: str, ylabel: str) -> bytes:
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(values) + 2), 4))
    ax.bar(list(values), list(values.values()))
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    return figure_png(fig)


def detection_samples_plot(raw: dict[str, Any]) -> bytes:
    samples = raw["samples"]
    cols = min(3, len(samples))
    rows = (len(samples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, truth in zip(axes.flat, samples, raw["preds"], raw["targets"]):
        ax.imshow(image.permute(1, 2, 0).numpy())
        keep = pred["scores"] >= raw["score_threshold"]
        for boxes, color in ((truth["boxes"], "lime"), (pred["boxes"][keep], "red")):
            for x0, y0, x1, y1 in boxes.tolist():
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, linewidth=1))
        ax.set_title(f"{len(truth['boxes'])} true, {int(keep.sum())} predicted", fontsize=8)
    fig.suptitle(f"test images: true boxes green, predicted red (score >= {raw['score_threshold']:g})", fontsize=9)
    return figure_png(fig)


def write_report(storage: Storage, prefix: str, task: str, concepts: list[str], history: list[dict[str, Any]],
                 raw: dict[str, Any] | None) -> dict[str, Any]:
    """Write report.json and the plots; returns the report document."""
    metrics = next((h["metrics"] for h in reversed(history) if h.get("metrics")), {})
    plots: dict[str, bytes] = {}
    if history:
        plots["loss_lr.png"] = loss_lr_plot(history)
    if task == "classification" and metrics:
        plots["confusion_matrix.png"] = confusion_plot(metrics["confusion_matrix"], concepts)
        if raw is not None:
            plots["pr_curves.png"] = pr_curves_plot(raw["scores"], raw["targets"], concepts)
    if task == "detection" and metrics:
        plots["ap_per_concept.png"] = bar_plot({c: v["ap"] for c, v in metrics["per_concept"].items()},
                                               "AP@[.5:.95] per concept (test split)", "AP")
        if raw is not None and raw.get("samples"):
            plots["detection_samples.png"] = detection_samples_plot(raw)
    if task == "embedding" and metrics:
        plots["recall_at_k.png"] = bar_plot({k: v for k, v in metrics.items() if k.startswith("recall@")},
                                            "leave-one-out retrieval on the test split", "recall")
    for name, data in plots.items():
        storage.put_bytes(f"{prefix}/{name}", data)
    report = {"task": task, "concepts": concepts, "metrics": metrics, "history": history, "plots": sorted(plots)}
    storage.put_bytes(f"{prefix}/{REPORT}", json.dumps(report, indent=2, default=float).encode())
    return report
