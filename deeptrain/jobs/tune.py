"""Hyperparameter search with Ray Tune over Ray Train (SPEC §7).

A ``Tuner`` runs one trial per sampled configuration. A trial is a *driver function*
(Ray 2.60 Train V2 style) that plans the configuration like ``deeptrain models train``
does, records it as a real model version tagged with the run, and runs that version's
``TorchTrainer`` through ``deeptrain.jobs.train.run_version``. Its Ray Train reports
reach Tune through ``TuneReportCallback``, forwarded only on the epochs the loop
evaluated, so the scheduler (ASHA, ``time_attr="epoch"``) compares fresh validation metrics;
the best trial is chosen on them too, and each trial's test metrics are only reported.

Resources: a trial's driver reserves no CPU (a tiny memory bundle only), its Train
workers reserve ``num_workers x Settings.cpu_per_worker`` CPUs of their own, and each running
trial counts a share of the CPUs left to the Ray Data tasks that decode its images, of
which at least one whole CPU always stays free; the number of concurrent trials is what
fits in the cluster under those rules (two single-worker trials on two cores), and asking
for more is refused before any trial starts.

Early stopping: when ASHA stops a trial, Tune ends its driver (and with it the Train
run); the tuning driver then writes that version's artifacts from the checkpoint ASHA
judged and records it ``cancelled`` with ``progress.stopped_early``. The Tune
experiment lives under the run's storage prefix, so ``resume`` continues it from any
process: finished trials stay finished, unfinished ones continue their own version from
its last Ray Train checkpoint.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ray import tune as ray_tune
from ray.tune.integration.ray_train import TuneReportCallback

from deeptrain.errors import InvalidInput
from deeptrain.jobs import train as train_job
from deeptrain.jobs.placement import LeftoverSweeper, existing_groups, sweep_logged
from deeptrain.jobs.trial_resources import TRIAL_DRIVER_RESOURCES, fit_concurrency
from deeptrain.jobs.tune_scheduler import check_scheduler_name, choose_scheduler, make_scheduler
from deeptrain.jobs import plan as plan_job
from deeptrain.params import resolve_params
from deeptrain.services import models as model_service
from deeptrain.services import tune_runs
from deeptrain.services.context import Context
from deeptrain.templates import get_template
from deeptrain.tracking import tracking_tune_run
from deeptrain.training.metrics import TASK_METRICS, unreported_metric
from deeptrain.tune_space import check_space, describe_domain

EXPERIMENT = "ray"  # the Tune experiment's folder under the run's storage prefix
ProgressFn = Callable[[list[dict[str, Any]]], None]


@dataclass
class TrialJob:
    """What every trial of a run shares; travels to the trial drivers via ``tune.with_parameters``."""

    app_id: str
    model_id: str
    run_id: str
    params: dict[str, Any]  # fixed for every trial
    dataset_version_id: str
    num_workers: int
    env: dict[str, str] = field(default_factory=dict)  # the driver's settings (Settings.as_env) and storage credentials


# --- planning (before any trial) ---------------------------------------------------------


def _extremes(values: list[Any]) -> list[Any]:
    """The values whose plan can fail on the data (e.g. batch_size over the items per epoch)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted({min(values), max(values)})
    return values


def check_run(ctx: Context, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
              metric: str | None = None, scheduler: str | None = None, params: Mapping[str, Any] | None = None,
              num_workers: int = 1, dataset_version_id: str | None = None, grace_period: int | None = None,
              reduction_factor: int = 2) -> tuple[str, dict[str, Any], plan_job.TrainPlan]:
    """Everything a run can be refused for without a Ray cluster: ``(metric, scheduler, plan)``.

    ``deeptrain submit tune`` calls this on the submitting side, so a bad space fails there
    and not in a job; the plan's dataset version (a snapshot when none is given) is the one
    every trial trains on.
    """
    model = model_service.get_model(ctx, app_id, model_id)
    template = get_template(model["task"], model["template"])
    params = dict(params or {})
    if trials < 1:
        raise InvalidInput(f"--trials must be >= 1, got {trials}")
    metric = metric or TASK_METRICS[model["task"]][0]
    if problem := unreported_metric(model["task"], metric):
        raise InvalidInput(problem)
    check_scheduler_name(scheduler)
    overlap = sorted(set(space) & set(params))
    if overlap:
        raise InvalidInput(f"{', '.join(overlap)} given both in the search space and as a fixed --param")
    checked = check_space(template, params, space, num_workers, model_params=model["params"])
    plan = plan_job.plan_training(ctx, app_id, model_id, params, dataset_version_id, num_workers)
    if problem := unreported_metric(model["task"], metric, len(plan.concepts)):  # e.g. top5 of 4 concepts
        raise InvalidInput(problem)
    if not plan.num_val:
        raise InvalidInput(f"dataset version {plan.dataset_version_id} has no labelled validation inputs, and Tune "
                           "chooses on validation, never on test: import some with --split val, or snapshot with a "
                           "larger --validation-fraction (or more training inputs)")
    with warnings.catch_warnings():  # check_space has warned about what these values share
        warnings.simplefilter("ignore", UserWarning)
        for name, values in checked.items():  # values that depend on the data, e.g. batch_size vs items per epoch
            for value in _extremes(values):
                try:
                    plan_job.plan_training(ctx, app_id, model_id, {**params, name: value}, plan.dataset_version_id,
                                           num_workers)
                except InvalidInput as exc:
                    raise InvalidInput(f"the search space {name}={describe_domain(space[name])} can sample "
                                       f"{value!r}, which cannot train: {exc}") from None
    max_t = max([plan.params.num_epochs, *checked.get("num_epochs", [])])
    return metric, choose_scheduler(scheduler, grace_period, reduction_factor, test_freq=plan.params.test_freq,
                                    max_t=max_t), plan


def plan_run(ctx: Context, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
             max_concurrent: int | None = None, params: Mapping[str, Any] | None = None, num_workers: int = 1,
             **options: Any) -> dict[str, Any]:
    """Check everything a run needs before any trial starts (``check_run``, then what the connected
    cluster can hold), then record the run (status ``running``)."""
    from deeptrain.cluster import ensure_ray

    metric, scheduler, plan = check_run(ctx, app_id, model_id, space, trials=trials, params=params,
                                        num_workers=num_workers, **options)
    ensure_ray()
    use_gpu = train_job.cluster_use_gpu(plan.params.use_gpu)
    concurrency = fit_concurrency(num_workers, use_gpu, max_concurrent, trials, ctx.settings.cpu_per_worker)
    return tune_runs.create_run(
        ctx, app_id, model_id, metric=metric, mode="max", space={n: describe_domain(d) for n, d in space.items()},
        params=dict(params or {}), num_trials=trials, max_concurrent=concurrency, num_workers=num_workers,
        scheduler=scheduler, dataset_version_id=plan.dataset_version_id)


# --- the trial driver (runs in Tune's trial actor) ------------------------------------------


class EvaluatedReports(TuneReportCallback):
    """``TuneReportCallback`` that forwards only the reports carrying a fresh evaluation."""

    def after_report(self, run_context, metrics, checkpoint):
        if metrics and metrics[0].get("eval_epoch") == metrics[0].get("epoch"):
            super().after_report(run_context, metrics, checkpoint)


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """Tune's trainable: train (or continue) this trial's model version with ``config`` on top of the run's params."""
    from deeptrain.config import Settings

    os.environ.update(job.env)  # the tuning driver's settings (Settings.as_env) and storage credentials
    ctx = Context.from_settings(Settings.from_env())
    trial_id = ray_tune.get_context().get_trial_id()
    key = (job.app_id, job.model_id)
    version_id = tune_runs.trial_version(ctx, *key, job.run_id, trial_id)
    if version_id is None:
        plan = plan_job.plan_training(ctx, *key, {**job.params, **config}, job.dataset_version_id, job.num_workers)
        version = model_service.new_version(ctx, *key, plan.params.model_dump(mode="json"), plan.dataset_version_id,
                                            plan.concepts,
                                            tune_run=job.run_id)
        plan_job.save_plan(ctx, version["artifacts"], plan)
        tune_runs.add_trial(ctx, *key, job.run_id, trial_id, version["id"])
    else:
        version = model_service.get_version(ctx, *key, version_id)
        plan = plan_job.load_plan(ctx, version)
        if version["status"] in ("trained", "cancelled"):
            # finished before the run was interrupted (Tune's saved state had not caught up): report, don't retrain
            ray_tune.report(_last_evaluation(version))
            return
    tune_runs.count_training_start(ctx, *key, job.run_id, trial_id)
    train_job.run_version(ctx, *key, version["id"], plan, callbacks=[EvaluatedReports()])


def _last_evaluation(version: dict[str, Any]) -> dict[str, Any]:
    metrics = (version.get("metrics") or {}).get("validation") or {}
    return {**{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch"},
            "epoch": metrics.get("epoch", 0), "eval_epoch": metrics.get("epoch", 0)}


# --- the tuning driver ---------------------------------------------------------------------


def _finish_stopped(ctx: Context, run: dict[str, Any], trial_id: str, last_result: dict[str, Any]) -> None:
    """Record a trial Tune ended while its version was still training (ASHA stopped it, or its driver
    died after its last report): artifacts from the checkpoint of that report."""
    import ray.train

    version_id = tune_runs.trial_version(ctx, run["app_id"], run["model_id"], run["id"], trial_id)
    if version_id is None:
        return
    key = (run["app_id"], run["model_id"], version_id)
    version = model_service.get_version(ctx, *key)
    if version["status"] not in ("queued", "training") or not last_result.get("checkpoint_path"):
        return
    checkpoint = ray.train.Checkpoint(last_result["checkpoint_path"], filesystem=ctx.storage.fs)
    state = train_job.load_checkpoint_state(checkpoint)
    plan = plan_job.load_plan(ctx, version)
    if state["epoch"] >= plan.params.num_epochs:
        train_job.finish_version(ctx, *key, plan, state, "trained")
    else:
        train_job.finish_version(ctx, *key, plan, state, "cancelled",
                                 stopped_early={"by": run["scheduler"]["name"], "epoch": state["epoch"]})


def _progress_rows(trials, metric: str, space_names: list[str], max_t: int) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        result = t.last_result or {}
        status = t.status.lower()
        if status == "terminated":
            status = "stopped early" if result.get("epoch", max_t) < max_t else "finished"
        rows.append({"trial": t.trial_id, "params": {n: t.config.get(n) for n in space_names},
                     "epoch": result.get("epoch"), "metric": result.get(metric), "status": status})
    return rows


@dataclass
class _Driver:
    """This process's side of a run being tuned: where to record, whom to tell."""

    ctx: Context
    run: dict[str, Any]
    on_progress: ProgressFn | None
    sweeper: LeftoverSweeper  # worker groups a stopped trial left behind (deeptrain.jobs.placement)
    last_draw: float = 0.0
    last_sweep: float = 0.0


# Runs this process is driving, by run id. Tune pickles its callbacks into the experiment
# (tuner.pkl) and restores those on resume, so the callback carries only the run id and
# finds the live context here.
_DRIVERS: dict[str, _Driver] = {}


class Recorder(ray_tune.Callback):
    """Finishes early-stopped versions as Tune ends their trials; feeds the live table."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def on_trial_complete(self, iteration, trials, trial, **info):
        driver = _DRIVERS[self.run_id]
        _finish_stopped(driver.ctx, driver.run, trial.trial_id, trial.last_result or {})

    def on_experiment_end(self, trials, **info):
        # trials stopped while no tuning driver was there to record them (it was killed), now restored as ended
        driver = _DRIVERS[self.run_id]
        for trial in trials:
            if trial.status == "TERMINATED":
                _finish_stopped(driver.ctx, driver.run, trial.trial_id, trial.last_result or {})
        self._draw(driver, trials)  # the final table, however soon after the last one

    def on_step_end(self, iteration, trials, **info):
        driver = _DRIVERS[self.run_id]
        now = time.monotonic()
        if now - driver.last_draw >= 0.5:
            self._draw(driver, trials)
        if now - driver.last_sweep >= 1.0:
            driver.last_sweep = now
            sweep_logged(driver.sweeper.sweep)

    @staticmethod
    def _draw(driver: _Driver, trials) -> None:
        if driver.on_progress is not None:
            driver.last_draw = time.monotonic()
            run = driver.run
            driver.on_progress(_progress_rows(trials, run["metric"], list(run["space"]), run["scheduler"]["max_t"]))


def _trainable(ctx: Context, run: dict[str, Any]):
    from deeptrain.cluster import worker_env

    settings = ctx.settings
    if settings.torch_threads is None:  # concurrent trials share the cores
        import ray

        node_cpus = max(int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n["Alive"])
        settings = settings.replace(torch_threads=max(1, node_cpus // (run["max_concurrent"] * run["num_workers"])))
    env = worker_env(settings)
    job = TrialJob(app_id=run["app_id"], model_id=run["model_id"], run_id=run["id"], params=run["params"],
                   dataset_version_id=run["dataset_version_id"], num_workers=run["num_workers"],
                   env=env)
    return ray_tune.with_resources(ray_tune.with_parameters(run_trial, job=job),
                                   ray_tune.PlacementGroupFactory([TRIAL_DRIVER_RESOURCES]))


def _experiment_path(ctx: Context, run: dict[str, Any]) -> str:
    return ctx.storage.path(f"{run['artifacts']}/{EXPERIMENT}")


def _fit(ctx: Context, run: dict[str, Any], tuner, on_progress: ProgressFn | None) -> dict[str, Any]:
    """``_run_tuner`` inside the search's MLflow parent run (when tracking is on; ``deeptrain.tracking``)."""
    with tracking_tune_run(ctx, run):
        return _run_tuner(ctx, run, tuner, on_progress)


def _run_tuner(ctx: Context, run: dict[str, Any], tuner, on_progress: ProgressFn | None) -> dict[str, Any]:
    """Run the Tuner, settle every trial's version, write the report and mark the best trial."""
    from deeptrain.training.tune_report import write_tune_report

    key = (run["app_id"], run["model_id"], run["id"])
    driver = _DRIVERS[run["id"]] = _Driver(ctx, run, on_progress, LeftoverSweeper(existing_groups()))
    try:
        tuner.fit()
    except Exception as exc:
        tune_runs.update_run(ctx, *key, status="failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    finally:
        _DRIVERS.pop(run["id"], None)
        sweep_logged(driver.sweeper.final)  # no trial of the run is left to start one
    rows = tune_runs.trial_rows(ctx, run)
    unfinished = run["num_trials"] - sum(r["status"] in model_service.FINAL for r in rows)
    best = tune_runs.best_trial(run, rows)
    run = tune_runs.update_run(ctx, *key, status="interrupted" if unfinished else "finished",
                               best_version=best["version_id"] if best else None)
    write_tune_report(ctx.storage, run, tune_runs.trial_rows(ctx, run))
    return run


def tune(ctx: Context, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
         on_run: Callable[[dict[str, Any]], None] | None = None, on_progress: ProgressFn | None = None,
         **options: Any) -> dict[str, Any]:
    """Plan and run a search (blocking); returns the run with its trials and best trial.

    ``options`` are ``plan_run``'s (max_concurrent, metric, scheduler, params, num_workers,
    dataset_version_id, grace_period, reduction_factor); ``on_run`` sees the recorded run
    first, ``on_progress`` gets the live rows (trial, params, epoch, metric, status).
    """
    from ray.tune.search import BasicVariantGenerator

    run = plan_run(ctx, app_id, model_id, space, trials=trials, **options)
    if on_run:
        on_run(run)
    seed = resolve_params(None, model_service.get_model(ctx, app_id, model_id)["params"], run["params"]).seed
    tuner = ray_tune.Tuner(
        _trainable(ctx, run), param_space=dict(space),
        tune_config=ray_tune.TuneConfig(
            metric=run["metric"], mode=run["mode"], num_samples=trials, scheduler=make_scheduler(run["scheduler"]),
            # seeded sampling; the generator limits concurrency itself (TuneConfig's limit ignores a given one)
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=run["max_concurrent"])),
        run_config=ray_tune.RunConfig(name=EXPERIMENT, storage_path=ctx.storage.path(run["artifacts"]),
                                      storage_filesystem=ctx.storage.fs, verbose=0, callbacks=[Recorder(run["id"])]),
    )
    _fit(ctx, run, tuner, on_progress)
    return tune_runs.run_summary(ctx, app_id, model_id, run["id"])


def check_resume(ctx: Context, app_id: str, model_id: str, run_id: str) -> dict[str, Any]:
    """The run to resume, refused when it is finished or left no Tune state (no Ray cluster needed)."""
    run = tune_runs.get_run(ctx, app_id, model_id, run_id)
    if run["status"] == "finished":
        raise InvalidInput(f"tuning run {run_id!r} is already finished")
    path = _experiment_path(ctx, run)
    if not ray_tune.Tuner.can_restore(path, storage_filesystem=ctx.storage.fs):
        raise InvalidInput(f"tuning run {run_id!r} left no Tune experiment state at {path} to resume from")
    return run


def resume(ctx: Context, app_id: str, model_id: str, run_id: str, on_progress: ProgressFn | None = None) -> dict[str, Any]:
    """Continue an interrupted run: finished trials are kept, unfinished ones continue their versions."""
    from deeptrain.cluster import ensure_ray

    run = check_resume(ctx, app_id, model_id, run_id)
    path = _experiment_path(ctx, run)
    ensure_ray()
    tune_runs.update_run(ctx, app_id, model_id, run_id, status="running", error=None)
    # errored trials are real failures (recorded on their versions): they are not run again
    tuner = ray_tune.Tuner.restore(path, trainable=_trainable(ctx, run), resume_unfinished=True,
                                   resume_errored=False, storage_filesystem=ctx.storage.fs)
    _fit(ctx, run, tuner, on_progress)
    return tune_runs.run_summary(ctx, app_id, model_id, run_id)
