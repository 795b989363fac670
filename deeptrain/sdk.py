"""The Python SDK: the same service layer the CLI and the HTTP API use.

    from deeptrain import sdk
    client = sdk.Client()                       # settings from DEEPTRAIN_* variables
    client.create_app("fashion")
    report = client.import_inputs("fashion", "images/", format="imagefolder")
    version = client.snapshot("fashion")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow.dataset as pads

from deeptrain.config import Settings
from deeptrain.formats import ImportRecord, Region
from deeptrain.services import apps, concepts, datasets, inputs, keys, tune_runs, workflows
from deeptrain.services import models as models_service
from deeptrain.services.context import Context
from deeptrain.services.inputs import ProgressFn


class Client:
    def __init__(self, settings: Settings | None = None, **overrides: Any):
        self.settings = settings or Settings.from_env(**overrides)
        self.ctx = Context.from_settings(self.settings)

    # --- apps ----------------------------------------------------------------------
    def create_app(self, app_id: str, name: str | None = None) -> dict[str, Any]:
        return apps.create_app(self.ctx, app_id, name)

    def list_apps(self) -> list[dict[str, Any]]:
        return apps.list_apps(self.ctx)

    def get_app(self, app_id: str) -> dict[str, Any]:
        return apps.get_app(self.ctx, app_id)

    def delete_app(self, app_id: str) -> dict[str, Any]:
        return apps.delete_app(self.ctx, app_id)

    # --- concepts ------------------------------------------------------------------
    def create_concept(self, app_id: str, concept_id: str, name: str | None = None) -> dict[str, Any]:
        return concepts.create_concept(self.ctx, app_id, concept_id, name)

    def list_concepts(self, app_id: str) -> list[dict[str, Any]]:
        return concepts.list_concepts(self.ctx, app_id)

    def delete_concept(self, app_id: str, concept_id: str, force: bool = False) -> dict[str, Any]:
        return concepts.delete_concept(self.ctx, app_id, concept_id, force)

    # --- inputs --------------------------------------------------------------------
    def import_inputs(
        self, app_id: str, path: str | Path, format: str, split: str | None = None,
        on_progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        return inputs.import_path(self.ctx, app_id, path, format, split=split, on_progress=on_progress).as_dict()

    def add_input(
        self, app_id: str, image: bytes | str | Path, *, concepts: Iterable[str] = (),
        negatives: Iterable[str] = (), regions: Iterable[Mapping[str, Any]] = (), split: str | None = None,
        input_id: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add one image (bytes or a file path) with labels; regions use normalized boxes."""
        from deeptrain.formats.records import file_reader

        record = ImportRecord(
            source=input_id or (str(image) if not isinstance(image, bytes) else "<bytes>"),
            read_bytes=(lambda _max: image) if isinstance(image, bytes) else file_reader(Path(image)), concepts=tuple(concepts), negatives=tuple(negatives),
            regions=tuple(Region(r["concept"], r["top_row"], r["left_col"], r["bottom_row"], r["right_col"])
                          for r in regions),
            split=split, input_id=input_id, metadata=metadata,
        )
        return inputs.import_records(self.ctx, app_id, [record]).as_dict()

    def list_inputs(self, app_id: str, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        return inputs.list_inputs(self.ctx, app_id, limit, offset)

    def get_input_bytes(self, app_id: str, input_id: str) -> bytes:
        return inputs.get_input_bytes(self.ctx, app_id, input_id)

    def delete_input(self, app_id: str, input_id: str) -> dict[str, Any]:
        return inputs.delete_input(self.ctx, app_id, input_id)

    def export_inputs(self, app_id: str, out_dir: str | Path, format: str) -> dict[str, Any]:
        return inputs.export_inputs(self.ctx, app_id, out_dir, format)

    # --- dataset versions ----------------------------------------------------------
    def snapshot(self, app_id: str, test_fraction: float = 0.1,
                 on_progress: ProgressFn | None = None) -> dict[str, Any]:
        return datasets.snapshot(self.ctx, app_id, test_fraction=test_fraction, on_progress=on_progress)

    def list_datasets(self, app_id: str) -> list[dict[str, Any]]:
        return datasets.list_datasets(self.ctx, app_id)

    def get_dataset(self, app_id: str, version_id: str) -> dict[str, Any]:
        return datasets.get_dataset(self.ctx, app_id, version_id)

    def open_dataset(self, app_id: str, version_id: str) -> pads.Dataset:
        return datasets.open_dataset(self.ctx, app_id, version_id)

    # --- models and versions -------------------------------------------------------
    def create_model(self, app_id: str, model_id: str, task: str, template: str,
                     params: dict[str, Any] | None = None, concepts: Iterable[str] | None = None) -> dict[str, Any]:
        return models_service.create_model(self.ctx, app_id, model_id, task, template, params, concepts)

    def list_models(self, app_id: str) -> list[dict[str, Any]]:
        return models_service.list_models(self.ctx, app_id)

    def get_model(self, app_id: str, model_id: str) -> dict[str, Any]:
        return models_service.get_model(self.ctx, app_id, model_id)

    def delete_model(self, app_id: str, model_id: str) -> dict[str, Any]:
        return models_service.delete_model(self.ctx, app_id, model_id)

    def train(self, app_id: str, model_id: str, params: dict[str, Any] | None = None, *, workers: int = 1,
              dataset_version: str | None = None, on_version=None, resources=None) -> dict[str, Any]:
        """Train a new version on Ray Train and wait for it (snapshots a dataset version when none is given).

        ``resources``: a ``deeptrain.jobs.train.WorkerResources`` (CPUs/GPUs per worker, placement)."""
        from deeptrain.jobs import train as train_job

        return train_job.train(self.ctx, app_id, model_id, params, dataset_version, workers, on_version, resources)

    def resume(self, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
        from deeptrain.jobs import train as train_job

        return train_job.resume(self.ctx, app_id, model_id, version_id)

    # --- Ray Jobs on a cluster ----------------------------------------------------------
    def submit_train(self, app_id: str, model_id: str, params: dict[str, Any] | None = None, *, workers: int = 1,
                     dataset_version: str | None = None, resources=None, resume: str | None = None,
                     address: str | None = None, package: str = "image",
                     env: dict[str, str] | None = None) -> dict[str, Any]:
        """Queue a version (or take ``resume`` again) and train it as a Ray Job on the cluster at
        ``address`` (default $RAY_ADDRESS); returns at once with ``{"job", "version"}``."""
        from deeptrain.jobs import submit

        return submit.submit_training(self.ctx, app_id, model_id, params, workers=workers,
                                      dataset_version_id=dataset_version, resources=resources, resume=resume,
                                      address=address, package=package, env=env)

    def list_jobs(self, address: str | None = None) -> list[dict[str, Any]]:
        from deeptrain.jobs import submit

        return submit.list_jobs(self.ctx, address)

    def get_job(self, job_id: str, address: str | None = None) -> dict[str, Any]:
        from deeptrain.jobs import submit

        return submit.get_job(self.ctx, job_id, address)

    def wait_job(self, job_id: str, address: str | None = None, timeout: float | None = None,
                 on_poll=None) -> dict[str, Any]:
        """Wait until the job ends; its version is then final (marked failed when the job died first)."""
        from deeptrain.jobs import submit

        return submit.wait_job(self.ctx, job_id, address, timeout, on_poll)

    def stop_job(self, job_id: str, address: str | None = None) -> dict[str, Any]:
        from deeptrain.jobs import submit

        return submit.stop_job(self.ctx, job_id, address)

    def job_logs(self, job_id: str, address: str | None = None, follow: bool = False):
        """The job's log (one string), or with ``follow`` its chunks as they come until the job ends."""
        from deeptrain.jobs import submit

        return submit.job_logs(job_id, address, follow)

    def list_versions(self, app_id: str, model_id: str) -> list[dict[str, Any]]:
        return models_service.list_versions(self.ctx, app_id, model_id)

    def get_version(self, app_id: str, model_id: str, version_id: str | None = None) -> dict[str, Any]:
        return models_service.get_version(self.ctx, app_id, model_id, version_id)

    def cancel(self, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
        return models_service.request_cancel(self.ctx, app_id, model_id, version_id)

    def evaluate(self, app_id: str, model_id: str, version_id: str,
                 dataset_version: str | None = None) -> dict[str, Any]:
        from deeptrain.jobs.evaluate import evaluate_version

        return evaluate_version(self.ctx, app_id, model_id, version_id, dataset_version)

    def report(self, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
        """The version's report; ``path`` is a local folder with report.json and the plots."""
        from deeptrain.training.report import REPORT

        prefix = self.get_version(app_id, model_id, version_id)["artifacts"]
        return self._local_report(prefix, REPORT, Path(app_id, model_id, version_id))

    def _local_report(self, prefix: str, name: str, local: Path) -> dict[str, Any]:
        """A report document and its plots, with ``path`` a local folder holding them."""
        import json as _json

        report = _json.loads(self.ctx.storage.get_bytes(f"{prefix}/{name}"))
        if self.ctx.storage.is_local:
            path = Path(self.ctx.storage.path(prefix))
        else:  # copy out of object storage so it can be opened
            path = self.settings.home / "reports" / local
            path.mkdir(parents=True, exist_ok=True)
            for file in [name, *report["plots"]]:
                (path / file).write_bytes(self.ctx.storage.get_bytes(f"{prefix}/{file}"))
        return {**report, "path": str(path)}

    def load_version(self, app_id: str, model_id: str, version_id: str | None = None):
        """The version's model, ready for inference (cached per client)."""
        return self._loaded(models_service.get_trained_version(self.ctx, app_id, model_id, version_id))

    def _loaded(self, version: dict[str, Any]):
        from deeptrain.artifacts import load_model

        cache = self.__dict__.setdefault("_models", {})
        if version["artifacts"] not in cache:
            cache[version["artifacts"]] = load_model(self.ctx.storage, version["artifacts"])
        return cache[version["artifacts"]]

    def _predict_version(self, version: dict[str, Any], images: list[bytes], threshold: float | None = None,
                         top_k: int | None = None) -> list[dict[str, Any]]:
        from deeptrain.inference import predict_bytes

        return predict_bytes(self._loaded(version), images, threshold=threshold, top_k=top_k)

    def predict(self, app_id: str, model_id: str, images: Iterable[bytes | str | Path], *,
                version_id: str | None = None, threshold: float | None = None,
                top_k: int | None = None) -> list[dict[str, Any]]:
        """Predict on image bytes or files: concepts, regions or embeddings, one result per image."""
        from deeptrain.inference import predict_bytes

        version = models_service.get_trained_version(self.ctx, app_id, model_id, version_id)
        images = list(images)
        names = [f"image {k}" if isinstance(image, bytes) else str(image) for k, image in enumerate(images)]
        return predict_bytes(self._loaded(version), self._checked_images(images), threshold=threshold, top_k=top_k,
                             names=names)

    def _checked_images(self, images: Iterable[bytes | str | Path]) -> list[bytes]:
        """The bytes of each image, checked from its header (size, pixel limit, format); an error names the image.
        Decoding happens once, when predicting."""
        from deeptrain.errors import InvalidInput
        from deeptrain.images import check_header

        datas = []
        for k, image in enumerate(images):
            name = f"image {k}" if isinstance(image, bytes) else str(image)
            try:
                data = image if isinstance(image, bytes) else _read_file(image, self.settings.max_image_bytes)
                check_header(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)
            except InvalidInput as exc:
                raise InvalidInput(f"{name}: {exc}") from None
            datas.append(data)
        return datas

    # --- hyperparameter tuning (Ray Tune) ---------------------------------------------
    def tune(self, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
             max_concurrent: int | None = None, metric: str | None = None, scheduler: str = "asha",
             params: dict[str, Any] | None = None, workers: int = 1, dataset_version: str | None = None,
             grace_period: int | None = None, reduction_factor: int = 2, on_run=None,
             on_progress=None) -> dict[str, Any]:
        """Search hyperparameters with Ray Tune and wait; every trial trains a model version.

        ``space`` maps hyperparameter names to ``ray.tune`` domains, e.g.
        ``{"lrate": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([32, 64])}``;
        ``params`` are fixed for every trial. ``metric`` defaults to the task's headline
        metric (top1, map, recall@1), maximized; ``scheduler`` is ``asha`` (early stopping
        on that metric at each evaluation, ``grace_period`` epochs at least) or ``fifo``.
        Returns the run with ``trials`` (params, metrics, version id each) and ``best``.
        ``on_run(run)`` sees the recorded run first; ``on_progress(rows)`` gets live rows.
        """
        from deeptrain.jobs import tune as tune_job

        return tune_job.tune(self.ctx, app_id, model_id, space, trials=trials, max_concurrent=max_concurrent,
                             metric=metric, scheduler=scheduler, params=params, num_workers=workers,
                             dataset_version_id=dataset_version, grace_period=grace_period,
                             reduction_factor=reduction_factor, on_run=on_run, on_progress=on_progress)

    def check_tune(self, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
                   metric: str | None = None, scheduler: str = "asha", params: dict[str, Any] | None = None,
                   workers: int = 1, dataset_version: str | None = None, grace_period: int | None = None,
                   reduction_factor: int = 2) -> str:
        """Refuse a search that ``tune`` would refuse, without a Ray cluster; returns the dataset
        version its trials would train on (a new snapshot when ``dataset_version`` is None)."""
        from deeptrain.jobs import tune as tune_job

        _, _, plan = tune_job.check_run(self.ctx, app_id, model_id, space, trials=trials, metric=metric,
                                        scheduler=scheduler, params=params, num_workers=workers,
                                        dataset_version_id=dataset_version, grace_period=grace_period,
                                        reduction_factor=reduction_factor)
        return plan.dataset_version_id

    def resume_tune(self, app_id: str, model_id: str, run_id: str, on_progress=None) -> dict[str, Any]:
        """Continue an interrupted tuning run; finished trials are not run again."""
        from deeptrain.jobs import tune as tune_job

        return tune_job.resume(self.ctx, app_id, model_id, run_id, on_progress=on_progress)

    def list_tune_runs(self, app_id: str, model_id: str) -> list[dict[str, Any]]:
        return tune_runs.list_runs(self.ctx, app_id, model_id)

    def get_tune_run(self, app_id: str, model_id: str, run_id: str) -> dict[str, Any]:
        """A tuning run with every trial and the best one."""
        return tune_runs.run_summary(self.ctx, app_id, model_id, run_id)

    def promote_tune_best(self, app_id: str, model_id: str, run_id: str) -> dict[str, Any]:
        """Make the run's best trial the model's default version."""
        return tune_runs.promote_best(self.ctx, app_id, model_id, run_id)

    def tune_report(self, app_id: str, model_id: str, run_id: str) -> dict[str, Any]:
        """The run's tune_report.json; ``path`` is a local folder with it and its plots."""
        from deeptrain.training.tune_report import TUNE_REPORT

        prefix = tune_runs.get_run(self.ctx, app_id, model_id, run_id)["artifacts"]
        return self._local_report(prefix, TUNE_REPORT, Path(app_id, model_id, "tune", run_id))

    # --- visual search ---------------------------------------------------------------
    def build_search_index(self, app_id: str, model_id: str, version_id: str | None = None, *,
                           batch_size: int = 64, on_progress=None) -> dict[str, Any]:
        """Embed the app's inputs not indexed yet with a trained embedding version (Ray Data batch inference)
        and make it the app's search index; ``on_progress(n_done, n_to_embed)`` follows the embedding."""
        from deeptrain import search

        return search.build_index(self.ctx, app_id, model_id, version_id, batch_size, on_progress=on_progress)

    def search(self, app_id: str, image: bytes | str | Path | None = None, *, input_id: str | None = None,
               top_k: int = 10, concept: str | None = None) -> list[dict[str, Any]]:
        """Nearest inputs to an image (bytes or file) or a stored input (itself excluded), best first:
        ``[{"input_id", "score", "concepts"}]``; ``concept`` keeps only inputs labelled with it."""
        from deeptrain import search

        data = image if isinstance(image, bytes) or image is None else _read_file(image, self.settings.max_image_bytes)
        return search.search(self.ctx, app_id, data, input_id, top_k, concept)

    def search_index_info(self, app_id: str) -> dict[str, Any]:
        """Which embedding version is the app's search index, its size and when it was built."""
        from deeptrain import search

        return search.index_info(self.ctx, app_id)

    # --- workflows ----------------------------------------------------------------------
    def create_workflow(self, app_id: str, workflow_id: str,
                        steps: Iterable[str | Mapping[str, Any]]) -> dict[str, Any]:
        """A chain of models run on one input; steps are ``KIND:MODEL[:VERSION]`` (kind detect, classify or
        embed) or ``{"kind", "model_id", "version_id"}``; detect only first, later steps run on its regions."""
        return workflows.create_workflow(self.ctx, app_id, workflow_id, list(steps))

    def list_workflows(self, app_id: str) -> list[dict[str, Any]]:
        return workflows.list_workflows(self.ctx, app_id)

    def get_workflow(self, app_id: str, workflow_id: str) -> dict[str, Any]:
        return workflows.get_workflow(self.ctx, app_id, workflow_id)

    def delete_workflow(self, app_id: str, workflow_id: str) -> dict[str, Any]:
        return workflows.delete_workflow(self.ctx, app_id, workflow_id)

    def run_workflow(self, app_id: str, workflow_id: str, images: Iterable[bytes | str | Path], *,
                     threshold: float | None = None, top_k: int | None = None) -> list[dict[str, Any]]:
        """Run a workflow on image bytes or files, one result per image (see ``services.workflows.run_workflow``)."""
        return workflows.run_workflow(self.ctx, app_id, workflow_id, self._checked_images(images),
                                      self._predict_version, threshold=threshold, top_k=top_k)

    # --- API keys ---------------------------------------------------------------------
    def create_key(self, app_id: str, scopes: Iterable[str] = ("predict",), name: str = "") -> dict[str, Any]:
        """A new API key for the HTTP API; ``key`` in the result is shown only this once."""
        return keys.create_key(self.ctx, app_id, scopes, name)

    def list_keys(self, app_id: str) -> list[dict[str, Any]]:
        return keys.list_keys(self.ctx, app_id)

    def revoke_key(self, app_id: str, key_id: str) -> dict[str, Any]:
        return keys.revoke_key(self.ctx, app_id, key_id)

    def export(self, app_id: str, model_id: str, version_id: str, fmt: str, out: str | Path) -> dict[str, Any]:
        """Export a trained version to ONNX or TorchScript; reports the parity (max abs diff)."""
        from deeptrain.export import export_version

        return export_version(self.load_version(app_id, model_id, version_id), fmt, out)


def _read_file(path: str | Path, max_bytes: int) -> bytes:
    from deeptrain.images import read_file_limited

    try:
        return read_file_limited(path, max_bytes)
    except OSError as exc:
        from deeptrain.errors import InvalidInput

        raise InvalidInput(f"cannot read image file {str(path)!r}: {exc.strerror or exc}") from None
