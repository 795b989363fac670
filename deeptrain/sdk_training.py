"""The SDK's training side: model versions (train, queue, resume, follow, evaluate, report) and Ray Jobs.

``TrainingMethods`` is a part of ``deeptrain.sdk.Client``; use it through ``Client``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from deeptrain.config import Settings
from deeptrain.results import Evaluation, Job, Report, Submission, Version
from deeptrain.services import models as models_service
from deeptrain.services.context import Context

VersionFn = Callable[[Version], None]
JobFn = Callable[[Job], None]


def local_report(ctx: Context, settings: Settings, prefix: str, name: str, local: Path) -> dict[str, Any]:
    """A report document and its plots, with ``path`` a local folder holding them."""
    import json

    report = json.loads(ctx.storage.get_bytes(f"{prefix}/{name}"))
    if ctx.storage.is_local:
        path = Path(ctx.storage.path(prefix))
    else:  # copy out of object storage so it can be opened
        path = settings.home / "reports" / local
        path.mkdir(parents=True, exist_ok=True)
        for file in [name, *report["plots"]]:
            (path / file).write_bytes(ctx.storage.get_bytes(f"{prefix}/{file}"))
    return {**report, "path": str(path)}


def _typed(fn: Callable[[Any], None] | None, kind: type) -> Callable[[dict[str, Any]], None] | None:
    """A service callback that hands ``fn`` the typed record."""
    return None if fn is None else (lambda record: fn(kind(record)))


class TrainingMethods:
    ctx: Context
    settings: Settings

    # --- where training runs ----------------------------------------------------------------
    @staticmethod
    def worker_resources(cpus: float | None = None, gpus: float | None = None, placement: str = "PACK"):
        """What each Ray Train worker reserves (for ``train``'s ``resources``): CPUs (None: the settings'
        ``cpu_per_worker``), GPUs (None: follow ``use_gpu``) and the placement of the workers
        (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD); refuses bad values."""
        from deeptrain.jobs.plan import WorkerResources

        return WorkerResources(cpus=cpus, gpus=gpus, placement=placement.upper())

    @staticmethod
    def connect_ray() -> None:
        """Connect to the Ray cluster at $RAY_ADDRESS, or start this process's local one (once).

        Call it from the thread that lives as long as the cluster should: Ray's local processes
        die with the thread that started them."""
        from deeptrain.cluster import ensure_ray

        ensure_ray()

    # --- versions ------------------------------------------------------------------------------
    def train(self, app_id: str, model_id: str, params: dict[str, Any] | None = None, *, workers: int = 1,
              dataset_version: str | None = None, on_version: VersionFn | None = None, resources=None) -> Version:
        """Train a new version on Ray Train and wait for it (snapshots a dataset version when none is given).

        ``resources``: from ``worker_resources`` (CPUs/GPUs per worker, placement)."""
        from deeptrain.jobs import train as train_job

        return Version(train_job.train(self.ctx, app_id, model_id, params, dataset_version, workers,
                                       _typed(on_version, Version), resources))

    def queue_train(self, app_id: str, model_id: str, params: dict[str, Any] | None = None, *, workers: int = 1,
                    dataset_version: str | None = None, resources=None) -> Version:
        """Plan and record a new version without training it (no Ray): every refusal ``train`` would make
        comes now. ``resume`` trains the queued version."""
        from deeptrain.jobs import train as train_job

        version, _ = train_job.queue_version(self.ctx, app_id, model_id, params, dataset_version, workers, resources)
        return Version(version)

    def resume(self, app_id: str, model_id: str, version_id: str) -> Version:
        """Train a queued version, or continue an interrupted one from its last checkpoint, and wait."""
        from deeptrain.jobs import train as train_job

        return Version(train_job.resume(self.ctx, app_id, model_id, version_id))

    def check_resume(self, app_id: str, model_id: str, version_id: str) -> Version:
        """The version ``resume`` would run, refused (``InvalidInput``) when already trained; no Ray needed."""
        return Version(models_service.resumable_version(self.ctx, app_id, model_id, version_id))

    def list_versions(self, app_id: str, model_id: str) -> list[Version]:
        return Version.many(models_service.list_versions(self.ctx, app_id, model_id))

    def get_version(self, app_id: str, model_id: str, version_id: str | None = None) -> Version:
        return Version(models_service.get_version(self.ctx, app_id, model_id, version_id))

    def cancel(self, app_id: str, model_id: str, version_id: str) -> Version:
        return Version(models_service.request_cancel(self.ctx, app_id, model_id, version_id))

    def evaluate(self, app_id: str, model_id: str, version_id: str,
                 dataset_version: str | None = None, split: str = "test") -> Evaluation:
        """Metrics of a trained version on a dataset version's ``split`` (test, or validation / val)."""
        from deeptrain.jobs.evaluate import evaluate_version

        return Evaluation(evaluate_version(self.ctx, app_id, model_id, version_id, dataset_version, split=split))

    def report(self, app_id: str, model_id: str, version_id: str) -> Report:
        """The version's report; ``path`` is a local folder with report.json and the plots."""
        from deeptrain.training.report import REPORT

        prefix = self.get_version(app_id, model_id, version_id)["artifacts"]
        return Report(local_report(self.ctx, self.settings, prefix, REPORT, Path(app_id, model_id, version_id)))

    # --- Ray Jobs on a cluster ------------------------------------------------------------------
    def submit_train(self, app_id: str, model_id: str, params: dict[str, Any] | None = None, *, workers: int = 1,
                     dataset_version: str | None = None, resources=None, resume: str | None = None,
                     address: str | None = None, package: str = "local",
                     env: dict[str, str] | None = None) -> Submission:
        """Queue a version (or take ``resume`` again) and train it as a Ray Job on the cluster at
        ``address`` (default $RAY_ADDRESS); returns at once with ``{"job", "version"}``."""
        from deeptrain.jobs import submit

        return Submission(submit.submit_training(
            self.ctx, app_id, model_id, params, workers=workers, dataset_version_id=dataset_version,
            resources=resources, resume=resume, address=address, package=package, env=env))

    def check_submission(self, package: str = "local", env: Mapping[str, str] | None = None,
                         address: str | None = None) -> None:
        """Refuse what a job could not run with (a bad ``package`` mode, settings the cluster's nodes cannot
        reach: local paths when one of its nodes is on another machine), before anything is recorded."""
        from deeptrain.jobs import submit

        submit.check_submission(self.ctx, package, dict(env or {}), address)

    def submit_command(self, argv: list[str], *, command: str, app_id: str, model_id: str,
                       address: str | None = None, package: str = "local",
                       env: Mapping[str, str] | None = None) -> Job:
        """Run the deeptrain command line ``argv`` (e.g. ``["tune", APP, MODEL, ...]``, checked by the caller)
        as a Ray Job, labelled with ``command``, the app and the model; returns the job at once."""
        from deeptrain.jobs import submit

        metadata = {submit.META["command"]: command, submit.META["app"]: app_id, submit.META["model"]: model_id}
        return Job(submit.submit_cli(self.ctx, list(argv), metadata=metadata, address=address, package=package,
                                     env=dict(env or {})))

    def list_jobs(self, address: str | None = None) -> list[Job]:
        from deeptrain.jobs import submit

        return Job.many(submit.list_jobs(self.ctx, address))

    def get_job(self, job_id: str, address: str | None = None) -> Job:
        from deeptrain.jobs import submit

        return Job(submit.get_job(self.ctx, job_id, address))

    def wait_job(self, job_id: str, address: str | None = None, timeout: float | None = None,
                 on_poll: JobFn | None = None) -> Job:
        """Wait until the job ends; its version is then final (marked failed when the job died first)."""
        from deeptrain.jobs import submit

        return Job(submit.wait_job(self.ctx, job_id, address, timeout, _typed(on_poll, Job)))

    def stop_job(self, job_id: str, address: str | None = None) -> Job:
        from deeptrain.jobs import submit

        return Job(submit.stop_job(self.ctx, job_id, address))

    def job_logs(self, job_id: str, address: str | None = None, follow: bool = False) -> Iterator[str]:
        """The job's log (one string), or with ``follow`` its chunks as they come until the job ends."""
        from deeptrain.jobs import submit

        return submit.job_logs(self.ctx, job_id, address, follow)
