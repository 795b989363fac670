"""A tuning run's report: ``tune_report.json`` plus PNG plots in the run's artifact folder.

Plots: the last validation metric of each trial (what Tune compared) against each searched parameter (log axis
for a log-uniform range; trials stopped early drawn as crosses at the metric they were
stopped with, the best trial as a star), and the metric of every trial over the epochs
it ran.
"""

from __future__ import annotations

import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from deeptrain.storage import Storage  # noqa: E402
from deeptrain.training.report import figure_png, readable_log_scale  # noqa: E402

TUNE_REPORT = "tune_report.json"


def _marker(row: dict[str, Any]) -> tuple[str, str]:
    if row["best"]:
        return "*", "best"
    if row["stopped_early"]:
        return "x", "stopped early"
    return "o", "finished"


def metric_vs_params_plot(run: dict[str, Any], rows: list[dict[str, Any]]) -> bytes:
    names = list(run["space"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    scored = [r for r in rows if r["metric"] is not None]
    for ax, name in zip(axes[0], names):
        seen: set[str] = set()
        for row in scored:
            value = row["params"][name]
            x = value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
            marker, label = _marker(row)
            ax.scatter([x], [row["metric"]], marker=marker, s=120 if marker == "*" else 45,
                       color="C2" if marker == "*" else ("C3" if marker == "x" else "C0"),
                       label=None if label in seen else label)
            seen.add(label)
        if run["space"][name].startswith(("loguniform", "lograndint")):
            readable_log_scale(ax, "x")
        elif run["space"][name].startswith("choice") and all(isinstance(r["params"][name], (int, float))
                                                             for r in scored):  # ticks at the values chosen from
            ax.set_xticks(sorted({r["params"][name] for r in scored}))
        ax.set_xlabel(name)
        ax.set_ylabel(f"validation {run['metric']}")
        ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.collections  # one legend, under the panels
               if not h.get_label().startswith("_")}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"tuning run {run['id']}: last {run['metric']} per trial ({len(scored)} trials)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return figure_png(fig)


def metric_per_epoch_plot(run: dict[str, Any], rows: list[dict[str, Any]]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, row in enumerate(rows):
        if not row["curve"]:
            continue
        epochs, values = zip(*row["curve"])
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["params"].items())
        params += " (best)" if row["best"] else (" (stopped early)" if row["stopped_early"] else "")
        style = "--" if row["stopped_early"] else "-"
        ax.plot(epochs, values, style, marker=_marker(row)[0], color=f"C{i % 10}",
                linewidth=2.5 if row["best"] else 1.2, label=params)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {run['metric']}")
    ax.set_title(f"validation {run['metric']} per trial over epochs (dashed: stopped early by {run['scheduler']['name']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="trial params", title_fontsize=7)
    return figure_png(fig)


def write_tune_report(storage: Storage, run: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write tune_report.json and the plots under the run's artifacts; returns the report document."""
    plots = {"metric_vs_params.png": metric_vs_params_plot(run, rows),
             "metric_per_epoch.png": metric_per_epoch_plot(run, rows)}
    for name, data in plots.items():
        storage.put_bytes(f"{run['artifacts']}/{name}", data)
    scored = [r for r in rows if r["metric"] is not None]
    report = {
        "run": {k: run[k] for k in ("id", "app_id", "model_id", "status", "metric", "mode", "space", "params",
                                    "num_trials", "max_concurrent", "num_workers", "scheduler",
                                    "dataset_version_id", "best_version")},
        "chosen_on": "validation",  # every trial's metric; test_metric is reported beside it, never compared
        "best": next((r for r in rows if r["best"]), None),
        "worst": (min if run["mode"] == "max" else max)(scored, key=lambda r: r["metric"]) if scored else None,
        "stopped_early": [r["trial_id"] for r in rows if r["stopped_early"]],
        "failed": [r["trial_id"] for r in rows if r["status"] == "failed"],
        "trials": rows,
        "plots": sorted(plots),
    }
    storage.put_bytes(f"{run['artifacts']}/{TUNE_REPORT}", json.dumps(report, indent=2, default=str).encode())
    return report
