"""The SDK's hyperparameter search (Ray Tune): run, check, resume, list, promote and report tuning runs.

``TuningMethods`` is a part of ``deeptrain.sdk.Client``; use it through ``Client``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from deeptrain.config import Settings
from deeptrain.results import Model, TuneReport, TuneRun
from deeptrain.sdk_training import local_report
from deeptrain.services import tune_runs
from deeptrain.services.context import Context

ProgressFn = Callable[[list[dict[str, Any]]], None]


class TuningMethods:
    ctx: Context
    settings: Settings

    def tune(self, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
             max_concurrent: int | None = None, metric: str | None = None, scheduler: str | None = None,
             params: dict[str, Any] | None = None, workers: int = 1, dataset_version: str | None = None,
             grace_period: int | None = None, reduction_factor: int = 2,
             on_run: Callable[[TuneRun], None] | None = None, on_progress: ProgressFn | None = None) -> TuneRun:
        """Search hyperparameters with Ray Tune and wait; every trial trains a model version.

        ``space`` maps hyperparameter names to ``ray.tune`` domains, e.g.
        ``{"lrate": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([32, 64])}``;
        ``params`` are fixed for every trial. ``metric`` defaults to the task's headline
        metric (top1, map, recall@1), maximized; ``scheduler`` is ``asha`` (early stopping
        on that metric at each evaluation, ``grace_period`` epochs at least) or ``fifo``.
        By default (neither ``scheduler`` nor ``grace_period`` given) it is ASHA, or FIFO
        when the trials have too few epochs for ASHA: the run's ``scheduler.note`` says so.
        Returns the run with ``trials`` (params, metrics, version id each) and ``best``.
        ``on_run(run)`` sees the recorded run first; ``on_progress(rows)`` gets live rows.
        """
        from deeptrain.jobs import tune as tune_job

        return TuneRun(tune_job.tune(
            self.ctx, app_id, model_id, space, trials=trials, max_concurrent=max_concurrent, metric=metric,
            scheduler=scheduler, params=params, num_workers=workers, dataset_version_id=dataset_version,
            grace_period=grace_period, reduction_factor=reduction_factor,
            on_run=None if on_run is None else (lambda run: on_run(TuneRun(run))), on_progress=on_progress))

    def check_tune(self, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
                   metric: str | None = None, scheduler: str | None = None, params: dict[str, Any] | None = None,
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

    def check_tune_resume(self, app_id: str, model_id: str, run_id: str) -> TuneRun:
        """The run ``resume_tune`` would continue, refused when finished or without Tune state (no Ray needed)."""
        from deeptrain.jobs import tune as tune_job

        return TuneRun(tune_job.check_resume(self.ctx, app_id, model_id, run_id))

    def resume_tune(self, app_id: str, model_id: str, run_id: str, on_progress: ProgressFn | None = None) -> TuneRun:
        """Continue an interrupted tuning run; finished trials are not run again."""
        from deeptrain.jobs import tune as tune_job

        return TuneRun(tune_job.resume(self.ctx, app_id, model_id, run_id, on_progress=on_progress))

    def list_tune_runs(self, app_id: str, model_id: str) -> list[TuneRun]:
        return TuneRun.many(tune_runs.list_runs(self.ctx, app_id, model_id))

    def get_tune_run(self, app_id: str, model_id: str, run_id: str) -> TuneRun:
        """A tuning run with every trial and the best one."""
        return TuneRun(tune_runs.run_summary(self.ctx, app_id, model_id, run_id))

    def promote_tune_best(self, app_id: str, model_id: str, run_id: str) -> Model:
        """Make the run's best trial the model's default version; returns the model."""
        return Model(tune_runs.promote_best(self.ctx, app_id, model_id, run_id))

    def tune_report(self, app_id: str, model_id: str, run_id: str) -> TuneReport:
        """The run's tune_report.json; ``path`` is a local folder with it and its plots."""
        from deeptrain.training.tune_report import TUNE_REPORT

        prefix = tune_runs.get_run(self.ctx, app_id, model_id, run_id)["artifacts"]
        return TuneReport(local_report(self.ctx, self.settings, prefix, TUNE_REPORT,
                                       Path(app_id, model_id, "tune", run_id)))
