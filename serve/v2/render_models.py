"""deeptrain's dataset versions, models, model versions and tuning runs in Clarifai's message shapes
(``Dataset``, ``DatasetVersion``, ``Model``, ``ModelVersion``, ``EvalMetrics``, ``ModelType``), each with the
service's own record under ``metadata.deeptrain`` (what the remote SDK rebuilds its typed results from).

A version's training status is ``status.code`` (``codes.VERSION_STATUS_CODE``: queued 21103, training 21101
with ``percent_completed`` and ``time_remaining``, trained 21100, failed 21106 with the recorded error in
``details``, cancelled 64004); its stored test metrics are ``metrics.summary`` (Clarifai's names) with
``metrics.status`` 21300 (evaluated) or 21302 (not evaluated).
"""

from __future__ import annotations

from typing import Any, Callable

from deeptrain.wire import codes
from serve.v2.paging import native, timestamp

MODEL_EVALUATED, MODEL_NOT_EVALUATED = codes.MODEL_EVALUATED, codes.MODEL_NOT_EVALUATED

# Clarifai's model_type_id <-> deeptrain's task
TASK_OF_TYPE = {"visual-classifier": "classification", "visual-detector": "detection",
                "visual-embedder": "embedding"}
TYPE_OF_TASK = {task: type_id for type_id, task in TASK_OF_TYPE.items()}
TYPE_TITLES = {"visual-classifier": "Visual Classifier", "visual-detector": "Visual Detector",
               "visual-embedder": "Visual Embedder"}
OUTPUT_FIELDS = {"visual-classifier": ["concepts"], "visual-detector": ["regions[...].region_info.bounding_box",
                                                                       "regions[...].data.concepts"],
                 "visual-embedder": ["embeddings"]}

STATUS_TEXT = {"queued": "Model is queued for training", "training": "Model is currently training",
               "trained": "Model is trained and ready", "failed": "Model training failed",
               "cancelled": "Model training was cancelled"}

# deeptrain's test metric -> Clarifai's MetricsSummary field
SUMMARY_FIELDS = {"top1": "top1_accuracy", "top5": "top5_accuracy", "macro_auc": "macro_avg_roc_auc",
                  "macro_f1": "macro_avg_f1_score", "macro_precision": "macro_avg_precision",
                  "macro_recall": "macro_avg_recall", "ap50": "mean_avg_precision_iou_50",
                  "map": "mean_avg_precision_iou_range"}

Redact = Callable[[str], str]


def _same(text: str) -> str:
    return text


def _public_manifest(manifest: dict[str, Any], app_id: str) -> dict[str, Any]:
    """A dataset version's manifest without its storage URL: ``uri`` becomes the version's route."""
    return {**manifest, "uri": f"/v2/apps/{app_id}/datasets/default/versions/{manifest['id']}"}


# --- datasets ----------------------------------------------------------------------------------------------

def render_dataset(app: dict[str, Any], dataset_id: str, versions: list[dict[str, Any]],
                   description: str = "") -> dict[str, Any]:
    """The app's one dataset (any id is accepted and echoed): its newest version and the version list."""
    newest = versions[-1] if versions else None
    out: dict[str, Any] = {"id": dataset_id, "app_id": app["id"], "user_id": "me", "description": description,
                           "created_at": timestamp(app["created_at"]),
                           "metadata": native({"app_id": app["id"], "versions": versions})}
    if newest is not None:
        out["modified_at"] = timestamp(newest["created_at"])
        out["version"] = {"id": newest["id"], "created_at": timestamp(newest["created_at"])}
    return out


def _count(n: int) -> int:
    return int(n)  # a UInt64Value is its bare value in JSON


def dataset_metrics(counts: dict[str, Any]) -> dict[str, Any]:
    """Clarifai's ``DatasetVersion.metrics`` (a map of ``DatasetVersionMetrics``): ``/`` the whole version,
    ``/splits/<split>`` the inputs of each split."""
    concepts = counts.get("concepts") or {}
    boxes = sum(c.get("boxes", 0) for c in concepts.values())
    positives = sum(c.get(s, 0) for c in concepts.values() for s in ("train", "validation", "test"))
    whole = {"inputs_count": _count(counts["inputs"]),
             "unlabeled_inputs_count": _count(counts["inputs"] - counts.get("labelled", 0)),
             "regions_count": _count(boxes), "bounding_boxes_count": _count(boxes),
             "positive_input_tags_count": _count(positives)}
    out = {"/": whole}
    for split, n in (counts.get("splits") or {}).items():
        out[f"/splits/{split}"] = {"inputs_count": _count(n)}
    return out


def render_dataset_version(manifest: dict[str, Any], dataset_id: str = "default",
                           description: str = "") -> dict[str, Any]:
    app_id = manifest["app_id"]
    record = _public_manifest(manifest, app_id)
    created = manifest.get("created_at")
    return {"id": manifest["id"], "app_id": app_id, "user_id": "me", "dataset_id": dataset_id,
            "description": description, **({"created_at": timestamp(created)} if created else {}),
            "status": {"code": codes.DATASET_VERSION_READY, "description": "Dataset version is ready"},
            "metrics": dataset_metrics(manifest["counts"]), "metadata": native(record)}


def render_dataset_summary(summary: dict[str, Any], app_id: str, dataset_id: str = "default") -> dict[str, Any]:
    """A row of ``list_datasets`` (no per-concept counts: ``GET …/versions/{id}`` has them)."""
    return {"id": summary["id"], "app_id": app_id, "user_id": "me", "dataset_id": dataset_id,
            "created_at": timestamp(summary["created_at"]),
            "status": {"code": codes.DATASET_VERSION_READY, "description": "Dataset version is ready"},
            "metrics": {"/": {"inputs_count": _count(summary["num_inputs"])},
                        **{f"/splits/{s}": {"inputs_count": _count(n)} for s, n in summary["splits"].items()}},
            "metadata": native(summary)}


# --- models and versions ----------------------------------------------------------------------------------

def _concepts(ids: list[str] | None) -> list[dict[str, Any]]:
    return [{"id": c, "name": c, "value": 1.0} for c in ids or []]


def render_model_type(type_id: str) -> dict[str, Any]:
    return {"id": type_id, "title": TYPE_TITLES[type_id], "description": f"deeptrain {TASK_OF_TYPE[type_id]} model",
            "input_fields": ["image"], "output_fields": OUTPUT_FIELDS[type_id], "trainable": True, "creatable": True}


def render_model(model: dict[str, Any], version: dict[str, Any] | None = None, redact: Redact = _same,
                 version_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A model; ``version`` (its default or newest) as ``model_version``."""
    out: dict[str, Any] = {
        "id": model["id"], "name": model["id"], "app_id": model["app_id"], "user_id": "me",
        "model_type_id": TYPE_OF_TASK[model["task"]], "created_at": timestamp(model["created_at"]),
        "output_info": {"data": {"concepts": _concepts(model["concepts"])}},
        "metadata": native(model)}
    if version is not None:
        out["model_version"] = render_version(version, redact, version_meta)
    return out


def _percent(version: dict[str, Any]) -> int | None:
    """How far training is, in whole percent (uint32), from the worker's last progress record."""
    if version["status"] == "trained":
        return 100
    progress = version.get("progress") or {}
    epochs, steps = progress.get("num_epochs"), progress.get("steps_per_epoch")
    if version["status"] != "training" or not epochs or not steps:
        return None
    done = (progress.get("epoch", 1) - 1) * steps + progress.get("step", 0)
    return max(0, min(100, int(100 * done / (epochs * steps))))


def version_status(version: dict[str, Any], redact: Redact = _same) -> dict[str, Any]:
    """``ModelVersion.status``: the training status as Clarifai's code, with progress or the failure."""
    state = version["status"]
    out: dict[str, Any] = {"code": codes.VERSION_STATUS_CODE[state], "description": STATUS_TEXT[state]}
    progress = version.get("progress") or {}
    if state == "training" and progress.get("epoch"):
        loss = progress.get("loss")
        out["details"] = (f"epoch {progress['epoch']}/{progress.get('num_epochs')}, step {progress.get('step')}/"
                          f"{progress.get('steps_per_epoch')}" + (f", loss {loss:.4g}" if loss is not None else ""))
        if progress.get("eta_s") is not None:
            out["time_remaining"] = max(0, int(progress["eta_s"]))
    elif state == "training" and progress.get("phase"):
        out["details"] = str(progress["phase"])
    elif state in ("failed", "cancelled") and version.get("error"):
        out["details"] = redact(str(version["error"]))[:2000]
    percent = _percent(version)
    if percent is not None:
        out["percent_completed"] = percent
    return out


def render_metrics(version: dict[str, Any]) -> dict[str, Any]:
    """``EvalMetrics`` from the version's stored test evaluation (``summary``: the figures Clarifai names)."""
    metrics = version.get("metrics") or {}
    summary = {name: float(metrics[key]) for key, name in SUMMARY_FIELDS.items()
               if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool)}
    if metrics.get("split") != "test":
        return {"status": {"code": MODEL_NOT_EVALUATED, "description": "Model was not evaluated on a test split"},
                "id": version["id"]}
    return {"status": {"code": MODEL_EVALUATED, "description": "Model was evaluated on the test split"},
            "id": version["id"], "summary": summary}


def render_version(version: dict[str, Any], redact: Redact = _same,
                   extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A model version; ``metadata.deeptrain`` is the version record (its failure redacted), plus
    ``extra_meta`` (e.g. ``job``: the Ray job that trains it, on PostModelVersions)."""
    record = {**version, "error": redact(version["error"]) if version.get("error") else version.get("error")}
    out: dict[str, Any] = {
        "id": version["id"], "app_id": version["app_id"], "user_id": "me",
        "created_at": timestamp(version["created_at"]), "status": version_status(version, redact),
        "active_concept_count": len(version.get("concepts") or []), "metrics": render_metrics(version),
        "output_info": {"data": {"concepts": _concepts(version.get("concepts"))}},
        "train_info": {"params": {**(version.get("params") or {}),
                                  "dataset_version_id": version.get("dataset_version_id")},
                       "dataset": {"id": "default", "version": {"id": version.get("dataset_version_id") or ""}}},
        "metadata": {**native(record), **(extra_meta or {})}}
    if version.get("finished_at"):
        out["completed_at"] = timestamp(version["finished_at"])
    return out


def render_tune_run(run: dict[str, Any]) -> dict[str, Any]:
    """A tuning run (a deeptrain extension: no Clarifai message): its record, and its times in RFC 3339."""
    return {"id": run["id"], "model_id": run["model_id"], "app_id": run["app_id"], "status": run["status"],
            "created_at": timestamp(run["created_at"]), "metadata": native(run)}
