"""A version's evaluation report: ``report.json`` plus PNG plots beside the weights.

Plots (one quantity per axis; README's "Metrics" table defines every figure they show):
training loss, learning rate and the headline validation metric per epoch (every task);
classification: the confusion matrix as counts and row-normalized, and per-concept
precision-recall curves with their AP; detection: AP per concept and the first test images
with true (green) and predicted (red, above ``detection_score_threshold``) boxes; embedding:
Recall@k and mAP@R. Drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from deeptrain.storage import Storage  # noqa: E402
from deeptrain.training.metrics import average_precision  # noqa: E402

REPORT = "report.json"
HEADLINE = ("top1", "map", "recall@1")  # the metric per task that the loss plot follows


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def readable_log_scale(ax, which: str) -> None:
    """Log scale on the ``which`` ("x" or "y") axis of a drawn ``ax``, labelled in plain numbers at 1, 2 and 5
    per decade (0.001, 0.002, 0.005, 0.01 …; each decade only, over more than three) instead of 10^k."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    wide = hi > 0 and lo > 0 and hi / lo > 1e3  # over three decades: one label per decade is enough
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0), numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _epoch_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def loss_lr_plot(history: list[dict[str, Any]]) -> bytes:
    """One panel per quantity, sharing the epoch axis: training loss, learning rate (log scale when it
    spans more than a factor of 10) and, when evaluated, the headline validation metric on [0, 1]."""
    epochs = [h["epoch"] for h in history]
    evaluated = [(h["epoch"], h["metrics"]) for h in history if h.get("metrics")]
    key = next((k for k in HEADLINE if evaluated and k in evaluated[-1][1]), None)
    fig, axes = plt.subplots(3 if key else 2, 1, figsize=(7, 6.5 if key else 4.8), sharex=True)
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", color="C0")
    axes[0].set_ylabel("training loss")
    lrs = [h["lr"] for h in history]
    axes[1].step(epochs, lrs, "o-", where="post", color="C3")
    if min(lrs) > 0 and max(lrs) / min(lrs) > 10:
        readable_log_scale(axes[1], "y")
    else:
        axes[1].set_ylim(0, 1.15 * max(lrs))  # from 0: a constant or halved rate reads as such
        axes[1].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[1].set_ylabel("learning rate")
    if key:
        axes[2].plot([e for e, _ in evaluated], [m[key] for _, m in evaluated], "^--", color="C2")
        axes[2].set_ylim(0, 1.02)
        axes[2].set_ylabel(f"validation {key}")
    for ax in axes:
        _epoch_axis(ax)
    axes[-1].set_xlabel("epoch")
    fig.suptitle("per epoch: training loss, learning rate" + (f", validation {key}" if key else ""))
    fig.tight_layout()
    return figure_png(fig)


def _annotate_cells(ax, values, labels: list[list[str]], threshold: float) -> None:
    """Write each cell's label, white on dark cells (values above ``threshold``), black on light ones."""
    n = len(labels)
    size = 8 if n <= 12 else 6
    for i, row in enumerate(labels):
        for j, text in enumerate(row):
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if values[i][j] > threshold else "black")


def confusion_plot(matrix: list[list[int]], concepts: list[str], split: str = "test") -> bytes:
    """Counts beside the row-normalized matrix (each true concept's share of predictions: its recall on the
    diagonal); both from the argmax decision over the test images with one concept."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(concepts)
    side = 1.6 + 0.55 * n
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side + 0.6))
    panels = ((counts, "counts", counts.max() or 1, lambda v: f"{int(v)}"),
              (share, "share of the true concept (row)", 1.0, lambda v: f"{v:.2f}"))
    for ax, (values, title, vmax, fmt) in zip(axes, panels):
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(n), concepts, rotation=60, ha="right")
        ax.set_yticks(range(n), concepts)
        ax.set_xlabel("predicted (highest score)")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10)
        if n <= 30:
            _annotate_cells(ax, values, [[fmt(v) for v in row] for row in values], 0.55 * vmax)
    fig.suptitle(f"confusion matrix, {int(counts.sum())} {split} images with one concept")
    fig.tight_layout()
    return figure_png(fig)


def pr_curves_plot(scores: torch.Tensor, targets: torch.Tensor, concepts: list[str]) -> bytes:
    """Each concept's one-vs-rest precision-recall curve as steps (the area under the steps is its AP,
    given in the legend); concepts without positive test images are left out and named in the title."""
    from torchmetrics.functional.classification import multilabel_precision_recall_curve

    precision, recall, _ = multilabel_precision_recall_curve(scores.float(), targets.long(), num_labels=len(concepts))
    aps = average_precision(scores, targets)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    missing = []
    for i, (p, r, name, ap) in enumerate(zip(precision, recall, concepts, aps)):
        if ap is None:
            missing.append(name)
            continue
        # torchmetrics ends each curve with the convention point (recall 0, precision 1), not a measured one:
        # the curve runs on to recall 0 at the precision of its highest threshold instead
        p = torch.cat([p[:-1], p[-2:-1]])
        ax.plot(r.numpy(), p.numpy(), drawstyle="steps-post", color=f"C{i % 10}", label=f"{name} (AP {ap:.3f})")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.set_title("precision-recall per concept, one-vs-rest on the test split"
                 + (f"\n(no positive test images: {', '.join(missing)})" if missing else ""), fontsize=10)
    ax.legend(fontsize=7, loc="lower left", ncol=1 if len(concepts) <= 12 else 2)
    return figure_png(fig)


def bar_plot(values: dict[str, float | None], title: str, ylabel: str) -> bytes:
    """Bars on [0, 1] with each value written above its bar (``n/a`` for an undefined one)."""
    fig, ax = plt.subplots(figsize=(max(4, 0.55 * len(values) + 2), 4))
    bars = ax.bar(list(values), [v or 0.0 for v in values.values()], color="C0")
    ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.3f}" for v in values.values()], fontsize=8, padding=2)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=45 if len(values) > 4 else 0, ha="right" if len(values) > 4 else "center")
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
    # the final test evaluation; a run stopped before its end (a trial Tune's scheduler ended) has none: then its
    # last validation evaluation, and the plots say so
    test = next((h["test"] for h in reversed(history) if h.get("test")), None)
    split = "test" if test else "validation"
    metrics = test or next((h["metrics"] for h in reversed(history) if h.get("metrics")), {})
    plots: dict[str, bytes] = {}
    if history:
        plots["loss_lr.png"] = loss_lr_plot(history)
    if task == "classification" and metrics:
        plots["confusion_matrix.png"] = confusion_plot(metrics["confusion_matrix"], concepts, split)
        if raw is not None:
            plots["pr_curves.png"] = pr_curves_plot(raw["scores"], raw["targets"], concepts)
    if task == "detection" and metrics:
        plots["ap_per_concept.png"] = bar_plot({c: v["ap"] for c, v in metrics["per_concept"].items()},
                                               f"AP@[.5:.95] per concept ({split} split)", "AP")
        if raw is not None and raw.get("samples"):
            plots["detection_samples.png"] = detection_samples_plot(raw)
    if task == "embedding" and metrics:
        plots["recall_at_k.png"] = bar_plot({k: v for k, v in metrics.items() if k.startswith(("recall@", "map@"))},
                                            f"leave-one-out retrieval on the {split} split", "Recall@k, mAP@R")
    for name, data in plots.items():
        storage.put_bytes(f"{prefix}/{name}", data)
    report = {"task": task, "concepts": concepts, "split": split if metrics else None, "metrics": metrics,
              "history": history, "plots": sorted(plots)}
    storage.put_bytes(f"{prefix}/{REPORT}", json.dumps(report, indent=2, default=float).encode())
    return report
