"""MLflow runs of versions and tuning searches, through ``MlflowClient`` with explicit run ids.

No ``mlflow.start_run``: its active run is global state of the process, and a tuning driver finishes
several trials' versions from Tune's callbacks; every call here names its run. The experiment of a
model is ``deeptrain/<app>/<model>``; a version is one run named after its id (tags ``kind=version``,
``app``, ``model``, ``version`` …), a search one run named after the tuning run's id (``kind=tune``)
whose trials' version runs are nested under it (``mlflow.parentRunId``). A version finished again
(``--resume`` after a cancel or a failure) continues its run: the epochs already logged are not
logged twice.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from deeptrain.tracking.scalars import epoch_scalars, flat_params

STATUS = {"trained": "FINISHED", "cancelled": "KILLED", "failed": "FAILED", "finished": "FINISHED",
          "interrupted": "KILLED", "running": "RUNNING"}
CONNECT_TIMEOUT_S = 5.0
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100
_MAX_PARAM, _MAX_TAG = 6000, 8000


@dataclass
class VersionRun:
    """What a version's MLflow run records."""

    app_id: str
    model_id: str
    version_id: str
    task: str
    template: str
    status: str  # the version's: trained, cancelled or failed
    params: dict[str, Any]
    history: list[dict[str, Any]]
    tags: dict[str, str] = field(default_factory=dict)  # more tags (tune_run, dataset_version, error …)
    artifacts: Path | None = None  # a folder logged as the run's artifacts


def experiment_name(app_id: str, model_id: str) -> str:
    return f"deeptrain/{app_id}/{model_id}"


def check_reachable(uri: str) -> None:
    """Fail fast (``ConnectionError``) on an HTTP tracking server that does not accept connections, instead of
    MLflow's retries with backoff (minutes)."""
    url = urlparse(uri)
    if url.scheme not in ("http", "https"):
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"MLflow tracking server {url.hostname}:{port} is unreachable ({exc})") from None


def client(uri: str):
    try:
        from mlflow import MlflowClient
    except ModuleNotFoundError:
        raise ModuleNotFoundError("DEEPTRAIN_MLFLOW_TRACKING_URI is set but MLflow's client is not installed: "
                                  "pip install 'deeptrain[mlflow]'") from None

    check_reachable(uri)
    return MlflowClient(tracking_uri=uri)


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a new experiment on a local SQLite store: ``mlartifacts/`` beside the database (MLflow's
    default is ``./mlruns`` in whatever folder the process runs in); elsewhere the store's default."""
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def experiment_id(mlflow_client, name: str, uri: str) -> str:
    """The experiment ``name``, created when missing (another process may create it at the same time)."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location=_artifact_location(uri))
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def find_run(mlflow_client, experiment: str, **tags: str):
    """The newest active run of ``experiment`` with these tags, or None."""
    query = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
    runs = mlflow_client.search_runs([experiment], filter_string=query, max_results=1,
                                     order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _log_batches(mlflow_client, run_id: str, metrics=(), params=(), tags=()) -> None:
    metrics, params, tags = list(metrics), list(params), list(tags)
    for start in range(0, len(metrics), _BATCH_METRICS):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + _BATCH_METRICS])
    keyed = [("params", p) for p in params] + [("tags", t) for t in tags]
    for start in range(0, len(keyed), _BATCH_PARAMS):
        chunk = keyed[start:start + _BATCH_PARAMS]
        mlflow_client.log_batch(run_id, params=[p for kind, p in chunk if kind == "params"],
                                tags=[t for kind, t in chunk if kind == "tags"])


def _params(values: dict[str, str], logged: dict[str, str]):
    from mlflow.entities import Param

    return [Param(k, v[:_MAX_PARAM]) for k, v in sorted(values.items()) if k not in logged]


def _tags(values: dict[str, str]):
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)[:_MAX_TAG]) for k, v in sorted(values.items()) if v is not None]


def _epoch_metrics(history: list[dict[str, Any]], after: int):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(name, value, now, epoch) for epoch, values in epoch_scalars(history) if epoch > after
            for name, value in values.items()]


def _logged_epochs(mlflow_client, run_id: str) -> int:
    """The last epoch a continued run has logged already (its training loss is logged every epoch)."""
    return max((m.step for m in mlflow_client.get_metric_history(run_id, "train/loss")), default=0)


def log_version(uri: str, record: VersionRun, parent_tune_run: str | None = None) -> str:
    """Log a version's run (created, or continued when the version already has one); returns its run id."""
    from deeptrain import __version__

    mlflow_client = client(uri)
    experiment = experiment_id(mlflow_client, experiment_name(record.app_id, record.model_id), uri)
    tags = {"kind": "version", "app": record.app_id, "model": record.model_id, "version": record.version_id,
            "task": record.task, "template": record.template, "deeptrain_version": __version__, **record.tags}
    if parent_tune_run:
        parent = find_run(mlflow_client, experiment, kind="tune", tune_run=parent_tune_run)
        if parent is not None:
            tags["mlflow.parentRunId"] = parent.info.run_id
    existing = find_run(mlflow_client, experiment, kind="version", version=record.version_id)
    if existing is None:
        run_id = mlflow_client.create_run(experiment, run_name=record.version_id).info.run_id
        logged_params, after = {}, 0
    else:
        run_id = existing.info.run_id
        mlflow_client.update_run(run_id, status="RUNNING")
        logged_params, after = existing.data.params, _logged_epochs(mlflow_client, run_id)
    _log_batches(mlflow_client, run_id, metrics=_epoch_metrics(record.history, after),
                 params=_params(flat_params(record.params), logged_params), tags=_tags(tags))
    if record.artifacts is not None and any(record.artifacts.iterdir()):
        mlflow_client.log_artifacts(run_id, str(record.artifacts))
    mlflow_client.set_terminated(run_id, status=STATUS.get(record.status, "FAILED"))
    return run_id


def start_tune_run(uri: str, run: dict[str, Any]) -> str:
    """The parent run of a search (created, or set running again on resume); returns its run id."""
    from deeptrain import __version__

    mlflow_client = client(uri)
    experiment = experiment_id(mlflow_client, experiment_name(run["app_id"], run["model_id"]), uri)
    existing = find_run(mlflow_client, experiment, kind="tune", tune_run=run["id"])
    if existing is not None:
        mlflow_client.update_run(existing.info.run_id, status="RUNNING")
        return existing.info.run_id
    run_id = mlflow_client.create_run(experiment, run_name=run["id"]).info.run_id
    params = {**{f"space.{name}": str(domain) for name, domain in run["space"].items()},
              **flat_params(run.get("params") or {}, "params."),
              "metric": run["metric"], "mode": run["mode"], "num_trials": str(run["num_trials"]),
              "max_concurrent": str(run["max_concurrent"]), "scheduler": str((run.get("scheduler") or {}).get("name"))}
    tags = {"kind": "tune", "tune_run": run["id"], "app": run["app_id"], "model": run["model_id"],
            "dataset_version": run.get("dataset_version_id"), "deeptrain_version": __version__}
    _log_batches(mlflow_client, run_id, params=_params(params, {}), tags=_tags(tags))
    return run_id


def end_tune_run(uri: str, run_id: str, status: str, tags: dict[str, str], artifacts: Path | None) -> None:
    """Finish a search's parent run with the run's final status (``finished`` …), tags and artifacts."""
    mlflow_client = client(uri)
    _log_batches(mlflow_client, run_id, tags=_tags(tags))
    if artifacts is not None and any(artifacts.iterdir()):
        mlflow_client.log_artifacts(run_id, str(artifacts))
    mlflow_client.set_terminated(run_id, status=STATUS.get(status, "FAILED"))
