"""The remote client's model side: models, versions (training on the server's Ray cluster, followed by
polling), evaluation and tuning runs.

``train`` asks the server for a new version (``POST …/models/{model}/versions``: the server queues it and
trains it as a Ray job on its cluster) and follows it with ``GET …/versions/{version}`` until it is
trained, failed or cancelled; ``start_training`` and ``wait_version`` are its two halves (the CLI draws
the progress between them and can cancel).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from deeptrain.errors import DeeptrainError, InvalidInput
from deeptrain.remote.base import RemoteBase, native, q
from deeptrain.results import Evaluation, Model, TuneRun, Version
from deeptrain.results_lifecycle import ModelDeleted, VersionDeleted

MODEL_TYPES = {"classification": "visual-classifier", "detection": "visual-detector", "embedding": "visual-embedder"}
FINAL = ("trained", "failed", "cancelled")
POLL_S = 1.0

VersionFn = Callable[[Version], None]


class ModelMethods(RemoteBase):
    # --- models ---------------------------------------------------------------------------------------------
    def _models(self, app_id: str, tail: str = "") -> str:
        return self._app(app_id, f"/models{tail}")

    def _versions(self, app_id: str, model_id: str, tail: str = "") -> str:
        return self._models(app_id, f"/{q(model_id)}/versions{tail}")

    def create_model(self, app_id: str, model_id: str, task: str, template: str,
                     params: dict[str, Any] | None = None, concepts: Iterable[str] | None = None) -> Model:
        model: dict[str, Any] = {"id": model_id, "name": model_id, "model_type_id": MODEL_TYPES.get(task, task),
                                 "metadata": {"template": template, "params": dict(params or {})}}
        if concepts is not None:
            model["output_info"] = {"data": {"concepts": [{"id": c} for c in concepts]}}
        return Model(native(self._post(self._models(app_id), {"model": model})["model"]))

    def list_models(self, app_id: str) -> list[Model]:
        return Model.many(self._natives(self._models(app_id), "models"))

    def get_model(self, app_id: str, model_id: str) -> Model:
        return Model(native(self._get(self._models(app_id, f"/{q(model_id)}"))["model"]))

    def delete_model(self, app_id: str, model_id: str, force: bool = False) -> ModelDeleted:
        """Delete a model with its versions and stored objects (the server's answer carries no counts: 0)."""
        n = len(self._all(self._versions(app_id, model_id), "model_versions"))
        self._delete(self._models(app_id, f"/{q(model_id)}"), force="true" if force else None)
        return ModelDeleted({"id": model_id, "deleted": True, "versions_deleted": n, "objects_deleted": 0,
                             "bytes_deleted": 0})

    def delete_version(self, app_id: str, model_id: str, version_id: str, force: bool = False) -> VersionDeleted:
        """Delete a version and its stored objects (the server's answer carries no counts: 0)."""
        default = self.get_model(app_id, model_id).default_version == version_id
        self._delete(self._versions(app_id, model_id, f"/{q(version_id)}"), force="true" if force else None)
        return VersionDeleted({"id": version_id, "deleted": True, "model_id": model_id, "default_unset": default,
                               "objects_deleted": 0, "bytes_deleted": 0})

    # --- versions ---------------------------------------------------------------------------------------------
    @staticmethod
    def worker_resources(cpus: float | None = None, gpus: float | None = None,
                         placement: str = "PACK") -> dict[str, Any]:
        """What each of the server's Ray Train workers reserves, for ``train``'s ``resources`` (the server checks
        the values against its cluster)."""
        return {k: v for k, v in (("cpus_per_worker", cpus), ("gpus_per_worker", gpus),
                                  ("placement", placement.upper())) if v is not None}

    @staticmethod
    def connect_ray() -> None:
        """Nothing to do remotely: training runs on the server's cluster."""

    def start_training(self, app_id: str, model_id: str, params: dict[str, Any] | None = None, *, workers: int = 1,
                       dataset_version: str | None = None, resources: Any = None) -> Version:
        """Queue a new version on the server, which trains it as a Ray job; returns the queued version."""
        train_params: dict[str, Any] = {**(params or {}), "workers": workers, **_resources(resources)}
        if dataset_version:
            train_params["dataset_version_id"] = dataset_version
        entry: dict[str, Any] = {"train_info": {"params": train_params}}
        if dataset_version:
            entry["dataset"] = {"version": {"id": dataset_version}}
        answer = self._post(self._versions(app_id, model_id), {"model_versions": [entry]})
        version = (answer.get("model") or {}).get("model_version") or (answer.get("model_versions") or [{}])[0]
        if not version.get("id"):
            raise DeeptrainError(f"the server queued no version: {str(answer)[:300]}")
        return self.get_version(app_id, model_id, version["id"])

    def wait_version(self, app_id: str, model_id: str, version_id: str, on_version: VersionFn | None = None,
                     poll_s: float | None = None, timeout: float | None = None) -> Version:
        """Poll the version until it is trained, failed or cancelled (``on_version`` sees each poll); a failed
        one raises its error, as a local ``train`` does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            version = self.get_version(app_id, model_id, version_id)
            if on_version:
                on_version(version)
            if version.status in FINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise DeeptrainError(f"version {model_id}/{version_id} is still {version.status} after {timeout}s")
            time.sleep(POLL_S if poll_s is None else poll_s)
        if version.status == "failed":
            raise DeeptrainError(f"training of {model_id}/{version_id} failed: {version.error}")
        return version

    def train(self, app_id: str, model_id: str, params: dict[str, Any] | None = None, *, workers: int = 1,
              dataset_version: str | None = None, on_version: VersionFn | None = None,
              resources: Any = None) -> Version:
        """Train a new version on the server's cluster and wait for it (``on_version`` sees it at each poll)."""
        version = self.start_training(app_id, model_id, params, workers=workers, dataset_version=dataset_version,
                                      resources=resources)
        return self.wait_version(app_id, model_id, version.id, on_version)

    def list_versions(self, app_id: str, model_id: str) -> list[Version]:
        return Version.many(self._natives(self._versions(app_id, model_id), "model_versions"))

    def get_version(self, app_id: str, model_id: str, version_id: str | None = None) -> Version:
        if version_id is None:  # the model's default (else newest) version comes with the model
            model = self._get(self._models(app_id, f"/{q(model_id)}"))["model"]
            if not model.get("model_version"):
                raise InvalidInput(f"model {model_id!r} has no version yet")
            return Version(native(model["model_version"]))
        return Version(native(self._get(self._versions(app_id, model_id, f"/{q(version_id)}"))["model_version"]))

    def cancel(self, app_id: str, model_id: str, version_id: str) -> Version:
        answer = self._post(self._versions(app_id, model_id, f"/{q(version_id)}/cancel"))
        return Version(native(answer["model_version"]))

    def evaluate(self, app_id: str, model_id: str, version_id: str,
                 dataset_version: str | None = None, split: str = "test") -> Evaluation:
        """A trained version's metrics on its dataset version's test split: the evaluation the server made when
        it trained the version (another dataset version or split: on the server host)."""
        version = self._post(self._versions(app_id, model_id, f"/{q(version_id)}/metrics"))["model_version"]
        record = native(version)
        if (dataset_version and dataset_version != record["dataset_version_id"]) or split != "test":
            raise InvalidInput("evaluate with --dataset-version or --split is not available with DEEPTRAIN_API_URL: "
                               "run it on the server host (remotely: the version's own test evaluation)")
        metrics = {k: v for k, v in (record.get("metrics") or {}).items() if k != "validation"}
        return Evaluation({"app_id": app_id, "model_id": model_id, "version_id": record["id"],
                           "dataset_version_id": record["dataset_version_id"], "metrics": metrics, "split": "test"})

    # --- tuning runs -------------------------------------------------------------------------------------------
    def _tune_runs(self, app_id: str, model_id: str, tail: str = "") -> str:
        return self._models(app_id, f"/{q(model_id)}/tune_runs{tail}")

    def list_tune_runs(self, app_id: str, model_id: str) -> list[TuneRun]:
        return TuneRun.many(self._natives(self._tune_runs(app_id, model_id), "tune_runs"))

    def get_tune_run(self, app_id: str, model_id: str, run_id: str) -> TuneRun:
        return TuneRun(native(self._get(self._tune_runs(app_id, model_id, f"/{q(run_id)}"))["tune_run"]))

    def promote_tune_best(self, app_id: str, model_id: str, run_id: str) -> Model:
        return Model(native(self._post(self._tune_runs(app_id, model_id, f"/{q(run_id)}/promote"))["model"]))


def _resources(resources: Any) -> dict[str, Any]:
    """``train``'s ``resources`` as the server's ``train_info.params`` (``worker_resources``' dict, or a local
    ``WorkerResources``)."""
    if resources is None or isinstance(resources, dict):
        return dict(resources or {})
    return {k: v for k, v in (("cpus_per_worker", getattr(resources, "cpus", None)),
                              ("gpus_per_worker", getattr(resources, "gpus", None)),
                              ("placement", getattr(resources, "placement", None))) if v is not None}
