"""The driver side of training: run (or resume) a planned model version on Ray Train, then persist it.

``jobs/plan.py`` checks and plans a run, ``jobs/input_pipeline.py`` builds its Ray Data input,
``jobs/worker.py`` is what each Ray Train worker runs; this module starts the ``TorchTrainer``,
records failures, and writes the artifacts and report from the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from deeptrain.config import DEFAULT_CPU_PER_WORKER
from deeptrain.errors import DeeptrainError, InvalidInput
from deeptrain.jobs.plan import TrainPlan, WorkerResources, load_plan, plan_training, save_plan
from deeptrain.params import HyperParams
from deeptrain.services import datasets as dataset_service
from deeptrain.services import models as model_service
from deeptrain.services.context import Context

# Ray Train's controller polls its workers this often (Ray's default, 2 s, is also how long a
# finished run can wait before it returns)
HEALTH_CHECK_INTERVAL_S = "0.5"


def cluster_use_gpu(requested: bool | None) -> bool:
    """``use_gpu`` for the workers, decided from the Ray cluster (not the driver, which
    often has no GPU of its own: a KubeRay head, a laptop submitting to a cluster).

    None (auto) = use GPUs when the cluster has any; true on a cluster without GPUs is
    an error rather than a silent CPU run.
    """
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if requested is None:
        return gpus > 0
    if requested and gpus == 0:
        raise InvalidInput("use_gpu is true but the Ray cluster has no GPUs; "
                           "set use_gpu=false, or leave it unset to use GPUs only when there are some")
    return requested


@contextmanager
def recording_failure(ctx: Context, key: tuple[str, str, str]) -> Iterator[None]:
    """Mark the version failed with the reason of any error raised inside, then re-raise it."""
    model_id, version_id = key[1], key[2]
    try:
        yield
    except DeeptrainError as exc:
        _record_failure(ctx, key, str(exc))
        raise
    except Exception as exc:  # a worker or Ray failure: record why, keep the traceback in the log
        message = f"{type(exc).__name__}: {exc}"
        _record_failure(ctx, key, message[:4000])
        traceback.print_exc()
        raise RuntimeError(f"training of {model_id}/{version_id} failed: {message}") from exc


def _record_failure(ctx: Context, key: tuple[str, str, str], error: str) -> None:
    if model_service.record_failure(ctx, *key, error):
        try:  # what the version had (its live history) goes to TensorBoard and MLflow too
            track(ctx, key)
        except Exception:  # noqa: BLE001 - the training's own error is the one to raise
            traceback.print_exc()


def track(ctx: Context, key: tuple[str, str, str], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """TensorBoard files and the MLflow run of a finished or failed version (``deeptrain.tracking``, which
    never raises); what went wrong there is kept in the version's ``progress.tracking_warnings``."""
    from deeptrain.tracking import track_version

    version = model_service.get_version(ctx, *key)
    warnings = track_version(ctx, version, model_service.get_model(ctx, key[0], key[1]), history)
    if not warnings:
        return version
    return model_service.update_version(ctx, *key, progress={**(version.get("progress") or {}),
                                                             "tracking_warnings": warnings})


@contextmanager
def sigint_handler_restored() -> Iterator[None]:
    """Put the process's SIGINT handler back after ``trainer.fit()``. On the main thread Ray Train installs
    its own (Ctrl-C aborts the run), a closure over the run's controller actor that stays installed after
    ``fit`` returns: the controller, its dataset manager and split coordinator then live (and poll) for as
    long as the process, e.g. beside the models a process trains and then serves."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def scaling_config(params: HyperParams, resources: WorkerResources):
    """Ray Train's ScalingConfig; GPU use is decided from the cluster (see ``cluster_use_gpu``)."""
    import ray.train

    use_gpu = cluster_use_gpu(resources.use_gpu(params.use_gpu))
    cpus = DEFAULT_CPU_PER_WORKER if resources.cpus is None else resources.cpus  # a plan fills in the setting
    per_worker = {"CPU": cpus, **({"GPU": resources.gpus or 1.0} if use_gpu else {})}
    return ray.train.ScalingConfig(num_workers=params.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker,
                                   placement_strategy=resources.placement)


def _trainer(ctx: Context, key: tuple[str, str, str], task: str, template: str, plan: TrainPlan, prefix: str,
             callbacks: list[Any]):
    """The ``TorchTrainer`` of a planned run: the loop's spec, Ray Data input, resources, storage and env."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from deeptrain.cluster import worker_env
    from deeptrain.jobs.input_pipeline import cache_input, input_datasets
    from deeptrain.jobs.worker import ray_train_loop
    from deeptrain.training.loop import TrainSpec

    scaling = scaling_config(plan.params, plan.resources)
    # the workers use exactly what was reserved for them
    spec = TrainSpec(task=task, template=template, params=plan.params.model_copy(update={"use_gpu": scaling.use_gpu}),
                     concept_ids=plan.concepts, steps_per_epoch=plan.steps_per_epoch, world_size=plan.params.num_workers)
    pipeline = cache_input(task, plan, ctx.settings.data_cache_fraction)
    return TorchTrainer(
        ray_train_loop,
        train_loop_config={"spec": spec, "version": list(key), "input": pipeline},
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name="ray", storage_path=ctx.storage.path(prefix), storage_filesystem=ctx.storage.fs,
            failure_config=ray.train.FailureConfig(max_failures=ctx.settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=max(1, ctx.settings.keep_checkpoints)),
            worker_runtime_env={"env_vars": worker_env(ctx.settings)}, callbacks=callbacks),
        datasets=input_datasets(ctx, key[0], task, plan, pipeline["mode"] == "cached"),
        # preserve_order: with a seeded local shuffle, one worker sees the same batches on every run,
        # so a resumed run repeats an uninterrupted one
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"],
                                            execution_options=ExecutionOptions(preserve_order=True)),
    )


def run_version(ctx: Context, app_id: str, model_id: str, version_id: str, plan: TrainPlan,
                callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run (or resume) a version's training on Ray Train; returns the finished version.

    Resuming needs nothing special: the run's name and storage path are fixed per
    version, and Ray Train (V2) reloads the checkpoint list it left there, so
    ``ray.train.get_checkpoint()`` hands the workers the newest checkpoint.
    ``callbacks`` are extra Ray Train callbacks (Tune passes its report callback).
    """
    key = (app_id, model_id, version_id)
    version = model_service.get_version(ctx, *key)
    model = model_service.get_model(ctx, app_id, model_id)
    with recording_failure(ctx, key):  # imports too: a dependency the cluster lacks fails the version
        from deeptrain.cluster import ensure_ray

        ensure_ray()
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)  # read by fit()
        # what the CLI shows until the workers report ("warming up", then epochs: RayHost.phase in jobs/worker.py)
        model_service.update_version(ctx, *key, progress={**(version.get("progress") or {}), "phase": "reading data",
                                                          "phases": ["reading data"]})
        trainer = _trainer(ctx, key, model["task"], model["template"], plan, version["artifacts"],
                           list(callbacks or []))
        model_service.update_version(ctx, *key, status="training", error=None, cancel_requested=False)
        with sigint_handler_restored():
            result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("training finished without a checkpoint")
        state = load_checkpoint_state(result.checkpoint)

    stopped = model_service.cancel_requested(ctx, *key) and state["epoch"] < plan.params.num_epochs
    return finish_version(ctx, app_id, model_id, version_id, plan, state, "cancelled" if stopped else "trained")


def load_checkpoint_state(checkpoint) -> dict[str, Any]:
    """The loop's state (weights, history, last evaluation …) from a Ray Train checkpoint."""
    import torch

    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / "state.pt", weights_only=False)


def finish_version(ctx: Context, app_id: str, model_id: str, version_id: str, plan: TrainPlan,
                   state: dict[str, Any], status: str, **progress: Any) -> dict[str, Any]:
    """Write a version's weights, manifest and report from a checkpoint's state and record it as ``status``
    with the metrics of its last evaluation; ``progress`` adds fields to the version's progress record."""
    from deeptrain.artifacts import write_manifest, write_weights
    from deeptrain.training.loop import version_metrics
    from deeptrain.training.report import write_report

    key = (app_id, model_id, version_id)
    version = model_service.get_version(ctx, *key)
    model = model_service.get_model(ctx, app_id, model_id)
    prefix = version["artifacts"]
    history = state["history"]
    metrics = version_metrics(history, plan.validation_split)  # test metrics, with the validation ones inside
    write_weights(ctx.storage, prefix, state["model"])
    dataset = dataset_service.get_dataset(ctx, app_id, plan.dataset_version_id)
    write_manifest(ctx.storage, prefix, version, model["task"], model["template"], dataset, metrics, plan.canvas,
                   init_weights=plan.init_weights)
    write_report(ctx.storage, prefix, model["task"], plan.concepts, history, state.get("eval"))
    live = version.get("progress") or {}  # keeps the last placement of the workers
    model_service.update_version(ctx, *key, status=status, metrics=metrics, progress={
        **live, "history": history, "restores": state.get("restores", []), "init_weights": plan.init_weights,
        **progress})
    if status == "trained":  # recorded first: a crash before this leaves a resumable version
        model_service.prune_checkpoints(ctx, prefix)
    return track(ctx, key, history)


def queue_version(ctx: Context, app_id: str, model_id: str, overrides: dict[str, Any] | None = None,
                  dataset_version_id: str | None = None, num_workers: int = 1,
                  resources: WorkerResources | None = None) -> tuple[dict[str, Any], TrainPlan]:
    """Plan a run and record it as a queued version with its saved plan (what ``resume`` runs)."""
    plan = plan_training(ctx, app_id, model_id, dict(overrides or {}), dataset_version_id, num_workers, resources)
    version = model_service.new_version(ctx, app_id, model_id, plan.params.model_dump(mode="json"),
                                        plan.dataset_version_id, plan.concepts)
    with recording_failure(ctx, (app_id, model_id, version["id"])):
        save_plan(ctx, version["artifacts"], plan)
    return version, plan


def train(ctx: Context, app_id: str, model_id: str, overrides: dict[str, Any] | None = None,
          dataset_version_id: str | None = None, num_workers: int = 1,
          on_version: Callable[[dict[str, Any]], None] | None = None,
          resources: WorkerResources | None = None) -> dict[str, Any]:
    """Plan, record and run a new version (blocking). ``on_version`` sees the queued version first."""
    version, plan = queue_version(ctx, app_id, model_id, overrides, dataset_version_id, num_workers, resources)
    if on_version:
        on_version(version)
    return run_version(ctx, app_id, model_id, version["id"], plan)


def resume(ctx: Context, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
    """Run a queued version, or continue an interrupted one from its last checkpoint."""
    version = model_service.resumable_version(ctx, app_id, model_id, version_id)
    with recording_failure(ctx, (app_id, model_id, version_id)):
        plan = load_plan(ctx, version)
    return run_version(ctx, app_id, model_id, version_id, plan)
