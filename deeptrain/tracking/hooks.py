"""What training and tuning call: track a finished (trained, cancelled, failed) version, or a search.

Tracking never fails a training: every problem (an unreachable MLflow server, a refused name, a
storage error writing the event files) becomes a warning, logged and returned, which the caller
records on the version (``progress.tracking_warnings``).
"""

from __future__ import annotations

import logging
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from deeptrain.services.context import Context
from deeptrain.storage import Storage
from deeptrain.tracking.mlflow_log import VersionRun, end_tune_run, log_version, start_tune_run
from deeptrain.tracking.tensorboard import FOLDER, write_events

log = logging.getLogger(__name__)
REPORT_FILES = ("report.json", "manifest.json", "tune_report.json")


def _redact(text: str) -> str:
    """``text`` without the credentials of a URI (``scheme://user:secret@host``)."""
    return re.sub(r"//[^/@\s]+@", "//***@", text)


def _attempt(what: str, warnings: list[str], fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a training
        message = _redact(f"{what} failed: {type(exc).__name__}: {exc}")[:1000]
        log.warning("%s", message)
        warnings.append(message)
        return None


def copy_artifacts(storage: Storage, prefix: str, into: Path) -> Path:
    """The files a run logs, copied from ``prefix`` in storage into ``into``: the reports, the manifest, the
    PNG plots beside them and the TensorBoard folder (never the weights or checkpoints)."""
    for key in storage.list(prefix):
        name = key[len(prefix) + 1:]
        top = "/" not in name and (name in REPORT_FILES or name.endswith(".png"))
        if top or name.startswith(f"{FOLDER}/"):
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(storage.get_bytes(key))
    return into


def track_version(ctx: Context, version: dict[str, Any], model: dict[str, Any],
                  history: list[dict[str, Any]] | None = None) -> list[str]:
    """Write the version's TensorBoard files (``Settings.tensorboard``) and log its MLflow run
    (``Settings.mlflow_tracking_uri``); returns the warnings (empty when all went well)."""
    settings, prefix = ctx.settings, version["artifacts"]
    history = list(history if history is not None else (version.get("progress") or {}).get("history") or [])
    warnings: list[str] = []
    if settings.tensorboard and history:
        _attempt("writing TensorBoard event files", warnings,
                 lambda: write_events(ctx.storage, prefix, history, version.get("params")))
    uri = settings.mlflow_tracking_uri
    if not uri:
        return warnings
    tags = {"dataset_version": version.get("dataset_version_id"), "tune_run": version.get("tune_run"),
            "error": version.get("error"), "artifacts": ctx.storage.uri_for(prefix)}

    def log_run() -> str:
        with tempfile.TemporaryDirectory(prefix="deeptrain-mlflow-") as tmp:
            record = VersionRun(
                app_id=version["app_id"], model_id=version["model_id"], version_id=version["id"], task=model["task"],
                template=model["template"], status=version["status"], params=version.get("params") or {},
                history=history, tags={k: v for k, v in tags.items() if v}, artifacts=copy_artifacts(
                    ctx.storage, prefix, Path(tmp)))
            return log_version(uri, record, parent_tune_run=version.get("tune_run"))

    _attempt(f"logging to MLflow at {uri}", warnings, log_run)
    return warnings


@contextmanager
def tracking_tune_run(ctx: Context, run: dict[str, Any]) -> Iterator[None]:
    """Around a search: its MLflow parent run (when ``Settings.mlflow_tracking_uri`` is set), finished with the
    run's final status, best version and ``tune_report.json`` with its plots. Never raises on its own."""
    from deeptrain.services import tune_runs

    uri = ctx.settings.mlflow_tracking_uri
    ignored: list[str] = []
    parent = _attempt(f"logging to MLflow at {uri}", ignored, lambda: start_tune_run(uri, run)) if uri else None
    if parent is None:
        yield
        return
    try:
        yield
    except BaseException:
        _attempt("ending the MLflow run", ignored, lambda: end_tune_run(uri, parent, "failed", {}, None))
        raise

    def end() -> None:
        final = tune_runs.get_run(ctx, run["app_id"], run["model_id"], run["id"])
        with tempfile.TemporaryDirectory(prefix="deeptrain-mlflow-") as tmp:
            artifacts = copy_artifacts(ctx.storage, final["artifacts"], Path(tmp))
            end_tune_run(uri, parent, final["status"], {"best_version": final.get("best_version")},
                                    artifacts)

    _attempt("ending the MLflow run", ignored, end)
