"""Train a model version with Ray Train over its dataset version's Parquet files.

``plan_training`` checks everything that can be checked before a worker starts (labels,
concepts, softmax single-label rule, params) and fixes the concept list, the number of
steps per epoch and the preprocessing geometry. ``run_version`` builds the Ray Data
pipelines (read Parquet from storage -> filter split -> decode/resize in ``map_batches``),
runs a ``TorchTrainer`` whose workers call the plain-PyTorch ``run_training``, and
writes the artifacts and report from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.compute as pc

from deeptrain.config import Settings
from deeptrain.errors import DeeptrainError, InvalidInput, NotFound
from deeptrain.params import HyperParams, resolve_params
from deeptrain.services import datasets as dataset_service
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.templates import get_template
from deeptrain.training.preprocess import Preprocessor, canvas_size

MAX_BOXES = 512
CPU_PER_WORKER = float(os.environ.get("DEEPTRAIN_CPU_PER_WORKER", 0.5))
MAX_FAILURES = int(os.environ.get("DEEPTRAIN_MAX_FAILURES", 2))
# Ray Train's controller polls its workers this often (Ray's default, 2 s, is also how long a
# finished run can wait before it returns)
HEALTH_CHECK_INTERVAL_S = "0.5"
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class WorkerResources:
    """What each Ray Train worker reserves, and how the workers are placed on the nodes.

    cpus: CPUs per worker (``DEEPTRAIN_CPU_PER_WORKER``, default 0.5).
    gpus: GPUs per worker. None: follow ``use_gpu`` (auto = when the cluster has GPUs), one
    per worker; 0: no GPUs; more: GPUs (an error on a cluster without any). Fractions share.
    placement: Ray placement-group strategy of the workers: PACK (default, fill a node
    first), SPREAD, STRICT_PACK (one node), STRICT_SPREAD (one worker per node).
    """

    cpus: float = CPU_PER_WORKER
    gpus: float | None = None
    placement: str = "PACK"

    def __post_init__(self) -> None:
        if not self.cpus >= 0:
            raise InvalidInput(f"CPUs per worker must be >= 0, got {self.cpus}")
        if self.gpus is not None and not self.gpus >= 0:
            raise InvalidInput(f"GPUs per worker must be >= 0, got {self.gpus}")
        if self.placement not in PLACEMENTS:
            raise InvalidInput(f"placement {self.placement!r} is not one of {', '.join(PLACEMENTS)}")

    def use_gpu(self, requested: bool | None) -> bool | None:
        """``use_gpu`` given the hyperparameter: an explicit GPU count decides it, and may not contradict it."""
        if self.gpus is None:
            return requested
        wanted = self.gpus > 0
        if requested is not None and requested != wanted:
            raise InvalidInput(f"{self.gpus:g} GPUs per worker contradicts use_gpu={str(requested).lower()}; "
                               "drop one of the two")
        return wanted


@dataclass
class TrainPlan:
    params: dict[str, Any]
    concepts: list[str]
    class_map: list[int]
    dataset_version_id: str
    num_train: int
    num_test: int
    steps_per_epoch: int
    canvas: int
    max_boxes: int
    resources: dict[str, Any] = field(default_factory=lambda: asdict(WorkerResources()))


def _labels_table(ctx: Context, app_id: str, version_id: str):
    return dataset_service.open_dataset(ctx, app_id, version_id).to_table(
        columns=["input_id", "concepts", "boxes", "split", "width", "height"])


def plan_training(ctx: Context, app_id: str, model_id: str, overrides: dict[str, Any],
                  dataset_version_id: str | None, num_workers: int,
                  resources: WorkerResources | None = None) -> TrainPlan:
    """Validate and plan a run; every refusal names what to fix."""
    model = model_service.get_model(ctx, app_id, model_id)
    template = get_template(model["task"], model["template"])
    params = resolve_params(template, {**model["params"], **overrides, "num_workers": num_workers}, num_workers)
    resources = resources or WorkerResources()
    resources.use_gpu(params.use_gpu)
    if dataset_version_id is None:
        dataset = dataset_service.snapshot(ctx, app_id, test_fraction=params.test_fraction)
    else:
        dataset = dataset_service.get_dataset(ctx, app_id, dataset_version_id)
    names = [c["id"] for c in dataset["concepts"]]
    table = _labels_table(ctx, app_id, dataset["id"])
    task = model["task"]
    split = table.column("split").to_pylist()
    if task == "detection":
        per_row = [[b["concept"] for b in boxes] for boxes in table.column("boxes").to_pylist()]
    else:
        per_row = table.column("concepts").to_pylist()
    train_counts: dict[str, int] = {}
    for row, s in zip(per_row, split):
        if s == "train":
            for c in set(row):
                train_counts[names[c]] = train_counts.get(names[c], 0) + 1
    concepts = model["concepts"] or sorted(train_counts)
    if not concepts:
        what = "boxes" if task == "detection" else "labelled"
        raise InvalidInput(f"dataset version {dataset['id']} of app {app_id!r} has no {what} training inputs; "
                           "label some inputs (and give them split train) before training")
    missing = [c for c in concepts if train_counts.get(c, 0) == 0]
    if missing:
        raise InvalidInput(f"concept(s) {', '.join(missing)} have no training inputs in dataset version "
                           f"{dataset['id']}; label some or remove them from the model's concepts")
    if len(concepts) < 2 and task != "detection":
        raise InvalidInput(f"{task} needs at least 2 concepts with training inputs, found {concepts}")
    index = {c: i for i, c in enumerate(concepts)}
    class_map = [index.get(n, -1) for n in names]
    used = [[c for c in set(row) if class_map[c] >= 0] for row in per_row]
    if (task == "classification" and not params.logreg) or task == "embedding":
        ids = table.column("input_id").to_pylist()
        bad = [i for i, u, r in zip(ids, used, table.column("concepts").to_pylist()) if len(u) > 1]
        if bad:
            reason = "softmax (logreg false)" if task == "classification" else "embedding training"
            raise InvalidInput(f"{reason} needs exactly one concept per input, but {len(bad)} input(s) have "
                               f"several: {', '.join(bad[:10])}{' …' if len(bad) > 10 else ''}; relabel them or "
                               "use logreg true")
    keep = [bool(u) or task == "detection" for u in used]
    num_train = sum(1 for k, s in zip(keep, split) if k and s == "train")
    num_test = sum(1 for k, s in zip(keep, split) if k and s == "test")
    if num_test == 0:
        raise InvalidInput(f"dataset version {dataset['id']} has no labelled test inputs to evaluate on; "
                           "import some with --split test or snapshot with a test_fraction")
    items = params.num_items_per_epoch or num_train
    if items < params.batch_size:
        raise InvalidInput(f"batch_size {params.batch_size} is larger than the {items} training items per epoch; "
                           "lower batch_size or add inputs")
    aspect = pc.max(pc.divide(pc.max_element_wise(table["width"], table["height"]).cast("float64"),
                              pc.min_element_wise(table["width"], table["height"]).cast("float64"))).as_py()
    max_boxes = max((len(b) for b in table.column("boxes").to_pylist()), default=0)
    return TrainPlan(
        params=params.model_dump(mode="json"), concepts=concepts, class_map=class_map, dataset_version_id=dataset["id"],
        num_train=num_train, num_test=num_test, steps_per_epoch=items // params.batch_size,
        canvas=canvas_size(params.image_size, aspect or 1.0), max_boxes=min(max(max_boxes, 1), MAX_BOXES),
        resources=asdict(resources),
    )


class _KeepLabelled:
    """Drops rows without any of the model's concepts (classification / embedding)."""

    def __init__(self, class_map: list[int]):
        self.class_map = np.asarray(class_map)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = np.array([bool((self.class_map[np.asarray(c, dtype=np.int64)] >= 0).any()) if len(c) else False
                         for c in batch["concepts"]], dtype=bool)
        return {k: v[keep] for k, v in batch.items()}


def preprocessed_bytes(task: str, plan: TrainPlan) -> int:
    """Object-store size of both splits after ``Preprocessor``: per row the uint8 canvas and the label arrays."""
    labels = plan.max_boxes * (4 * 4 + 8) if task == "detection" else 4 * len(plan.concepts)
    return (plan.num_train + plan.num_test) * (plan.canvas * plan.canvas * 3 + 2 * 4 + labels)


def cache_input(task: str, plan: TrainPlan) -> dict[str, Any]:
    """Whether a run keeps its preprocessed splits in Ray's object store, decided on the cluster it runs on:
    when together they take at most ``DEEPTRAIN_DATA_CACHE_FRACTION`` (0.2) of it; 0 streams always.

    Cached, the splits are read and decoded once per run; streamed, every epoch and every
    evaluation reads the Parquet files and decodes the images again, and each of those Ray Data
    executions first spends seconds starting up (listing files, scheduling its tasks).
    """
    import ray

    size = preprocessed_bytes(task, plan)
    # read here, not at import: a Tune trial's process sets the tuning driver's variables when its trial starts
    fraction = float(os.environ.get("DEEPTRAIN_DATA_CACHE_FRACTION", 0.2))
    budget = fraction * ray.cluster_resources().get("object_store_memory", 0)
    return {"mode": "cached" if size <= budget else "streamed", "bytes": size, "budget_bytes": int(budget)}


def build_ray_dataset(ctx: Context, app_id: str, task: str, plan: TrainPlan, split: str):
    """The split's rows, decoded and resized in ``map_batches``, as a (lazy) Ray Dataset."""
    import ray.data

    params = HyperParams.model_validate(plan.params)
    paths = dataset_service.dataset_paths(ctx, app_id, plan.dataset_version_id)
    ds = ray.data.read_parquet(paths, filesystem=ctx.storage.fs,
                               columns=["image", "width", "height", "concepts", "boxes", "split"])
    ds = ds.filter(expr=f"split == '{split}'")
    if task != "detection":
        ds = ds.map_batches(_KeepLabelled(plan.class_map), batch_format="numpy")
    pre = Preprocessor(task=task, image_size=params.image_size, canvas=plan.canvas, class_map=plan.class_map,
                       num_classes=len(plan.concepts), max_boxes=plan.max_boxes if task == "detection" else 0)
    return ds.map_batches(pre, batch_format="numpy", batch_size=64)


def input_datasets(ctx: Context, app_id: str, task: str, plan: TrainPlan, cached: bool) -> dict[str, Any]:
    """The training and test splits; ``cached``: computed now, both at once (each Ray Data execution spends
    most of its time starting up), and kept in the object store in row order, as a streamed run sees them."""
    from concurrent.futures import ThreadPoolExecutor

    splits = {split: build_ray_dataset(ctx, app_id, task, plan, split) for split in ("train", "test")}
    if not cached:
        return splits
    for ds in splits.values():
        ds.context.execution_options.preserve_order = True
    with ThreadPoolExecutor(len(splits)) as pool:
        return dict(zip(splits, pool.map(lambda ds: ds.materialize(), splits.values())))


# --- worker side -----------------------------------------------------------------------


class RayData:
    def __init__(self, spec, seed: int, local_batch: int):
        self.spec, self.seed, self.local_batch = spec, seed, local_batch

    def train_batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        import ray.train

        shard = ray.train.get_dataset_shard("train")
        passes = 0
        while True:
            yield from shard.iter_torch_batches(
                batch_size=self.local_batch, drop_last=True, local_shuffle_buffer_size=max(self.local_batch * 4, 256),
                local_shuffle_seed=self.seed * 100_003 + epoch * 101 + passes)
            passes += 1

    def test_batches(self):
        import ray.train

        return ray.train.get_dataset_shard("test").iter_torch_batches(batch_size=64)


def worker_torch_threads(workers_on_node: int) -> int:
    """Torch threads per training worker: the node's cores shared by its workers.

    Ray sets OMP_NUM_THREADS=1 for fractional-CPU actors; a worker given 0.5 CPU for
    scheduling would then use one core even when it is alone on the machine.
    """
    override = os.environ.get("DEEPTRAIN_TORCH_THREADS")
    return int(override) if override else max(1, (os.cpu_count() or 1) // max(1, workers_on_node))


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


class RayHost:
    """Ray Train's side of the loop: DDP, checkpoints, progress and cancellation via the store."""

    PROGRESS_EVERY_S = 1.0

    def __init__(self, settings_env: dict[str, str], version: tuple[str, str, str], input_pipeline: dict[str, Any]):
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        import torch

        torch.set_num_threads(worker_torch_threads(context.get_local_world_size()))
        self.version = version
        self._settings_env = settings_env
        self._ctx: Context | None = None
        self._last_progress = 0.0
        self.input_pipeline = input_pipeline
        self.workers = self._placement()

    def _placement(self) -> list[dict[str, Any]]:
        """Where every worker of this worker group runs (rank, Ray node id, host), gathered on all ranks."""
        import ray

        mine = {"rank": self.rank, "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
        if self.world_size == 1:
            return [mine]
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        return everyone

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            self._ctx = Context.from_settings(Settings.from_env(env=self._settings_env))
        return self._ctx

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=False)

    def _all_reduce(self, value: float, op: str) -> float:
        if self.world_size == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return float(t[0])

    def all_reduce_mean(self, value: float) -> float:
        return self._all_reduce(value, "sum") / self.world_size

    def restore(self) -> dict[str, Any] | None:
        import ray.train
        import torch

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as d:
            return torch.load(Path(d) / "state.pt", weights_only=False)

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        import ray.train
        import torch

        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / "state.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    def progress(self, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last_progress >= self.PROGRESS_EVERY_S:
            self._last_progress = now
            model_service.update_progress(self.ctx, *self.version,
                                          {**info, "workers": self.workers, "input": self.input_pipeline})

    def should_stop(self) -> bool:
        flag = 1.0 if self.rank == 0 and model_service.cancel_requested(self.ctx, *self.version) else 0.0
        return self._all_reduce(flag, "max") > 0


def ray_train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: the plain loop, hosted by Ray Train."""
    from deeptrain.training.loop import TrainSpec, run_training

    spec = TrainSpec(**config["spec"])
    host = RayHost(config["settings_env"], tuple(config["version"]), config["input"])
    params = spec.hyper
    data = RayData(spec, params.seed, params.batch_size // host.world_size)
    run_training(spec, data, host)


# --- driver side ------------------------------------------------------------------------


@contextmanager
def recording_failure(ctx: Context, key: tuple[str, str, str]) -> Iterator[None]:
    """Mark the version failed with the reason of any error raised inside, then re-raise it."""
    model_id, version_id = key[1], key[2]
    try:
        yield
    except DeeptrainError as exc:
        model_service.record_failure(ctx, *key, str(exc))
        raise
    except Exception as exc:  # a worker or Ray failure: record why, keep the traceback in the log
        message = f"{type(exc).__name__}: {exc}"
        model_service.record_failure(ctx, *key, message[:4000])
        traceback.print_exc()
        raise RuntimeError(f"training of {model_id}/{version_id} failed: {message}") from exc


def scaling_config(params: HyperParams, resources: WorkerResources):
    """Ray Train's ScalingConfig; GPU use is decided from the cluster (see ``cluster_use_gpu``)."""
    import ray.train

    use_gpu = cluster_use_gpu(resources.use_gpu(params.use_gpu))
    per_worker = {"CPU": resources.cpus, **({"GPU": resources.gpus or 1.0} if use_gpu else {})}
    return ray.train.ScalingConfig(num_workers=params.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker,
                                   placement_strategy=resources.placement)


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
    params = HyperParams.model_validate(plan.params)
    prefix = version["artifacts"]
    with recording_failure(ctx, key):  # imports too: a dependency the cluster lacks fails the version
        import ray.train
        from ray.data import ExecutionOptions
        from ray.train.torch import TorchTrainer

        from deeptrain.jobs.cluster import ensure_ray, worker_env
        from deeptrain.training.loop import TrainSpec

        ensure_ray()
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)  # read by fit()
        scaling = scaling_config(params, WorkerResources(**plan.resources))
        # the workers use exactly what was reserved for them
        spec = TrainSpec(task=model["task"], template=model["template"], params={**plan.params, "use_gpu": scaling.use_gpu},
                         concept_ids=plan.concepts, steps_per_epoch=plan.steps_per_epoch, world_size=params.num_workers)
        env = worker_env(ctx.settings.as_env())
        pipeline = cache_input(model["task"], plan)
        datasets = input_datasets(ctx, app_id, model["task"], plan, pipeline["mode"] == "cached")
        trainer = TorchTrainer(
            ray_train_loop,
            train_loop_config={"spec": spec.as_dict(), "settings_env": ctx.settings.as_env(), "version": list(key),
                               "input": pipeline},
            scaling_config=scaling,
            run_config=ray.train.RunConfig(
                name="ray", storage_path=ctx.storage.path(prefix), storage_filesystem=ctx.storage.fs,
                failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                worker_runtime_env={"env_vars": env}, callbacks=list(callbacks or [])),
            datasets=datasets,
            # preserve_order: with a seeded local shuffle, one worker sees the same batches on every run,
            # so a resumed run repeats an uninterrupted one
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"],
                                                execution_options=ExecutionOptions(preserve_order=True)),
        )
        model_service.update_version(ctx, *key, status="training", error=None, cancel_requested=False)
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("training finished without a checkpoint")
        state = load_checkpoint_state(result.checkpoint)

    stopped = model_service.cancel_requested(ctx, *key) and state["epoch"] < params.num_epochs
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
    from deeptrain.training.report import write_report

    key = (app_id, model_id, version_id)
    version = model_service.get_version(ctx, *key)
    model = model_service.get_model(ctx, app_id, model_id)
    prefix = version["artifacts"]
    history = state["history"]
    metrics = next((h["metrics"] for h in reversed(history) if h["metrics"]), {})
    write_weights(ctx.storage, prefix, state["model"])
    dataset = dataset_service.get_dataset(ctx, app_id, plan.dataset_version_id)
    write_manifest(ctx.storage, prefix, version, model["task"], model["template"], dataset, metrics, plan.canvas)
    write_report(ctx.storage, prefix, model["task"], plan.concepts, history, state.get("eval"))
    live = version.get("progress") or {}  # keeps the last placement of the workers
    return model_service.update_version(ctx, *key, status=status, metrics=metrics,
                                        progress={**live, "history": history, "restores": state.get("restores", []),
                                                  **progress})


def queue_version(ctx: Context, app_id: str, model_id: str, overrides: dict[str, Any] | None = None,
                  dataset_version_id: str | None = None, num_workers: int = 1,
                  resources: WorkerResources | None = None) -> tuple[dict[str, Any], TrainPlan]:
    """Plan a run and record it as a queued version with its saved plan (what ``resume`` runs)."""
    plan = plan_training(ctx, app_id, model_id, dict(overrides or {}), dataset_version_id, num_workers, resources)
    version = model_service.new_version(ctx, app_id, model_id, plan.params, plan.dataset_version_id, plan.concepts)
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
    version = model_service.get_version(ctx, app_id, model_id, version_id)
    if version["status"] == "trained":
        raise InvalidInput(f"version {version_id!r} is already trained")
    with recording_failure(ctx, (app_id, model_id, version_id)):
        plan = load_plan(ctx, version)
    return run_version(ctx, app_id, model_id, version_id, plan)


def save_plan(ctx: Context, prefix: str, plan: TrainPlan) -> None:
    ctx.storage.put_bytes(f"{prefix}/plan.json", json.dumps(asdict(plan)).encode())


def load_plan(ctx: Context, version: dict[str, Any]) -> TrainPlan:
    """The plan a version was started with (saved beside its artifacts)."""
    try:
        return TrainPlan(**json.loads(ctx.storage.get_bytes(f"{version['artifacts']}/plan.json")))
    except NotFound:
        raise InvalidInput(f"version {version['id']!r} has no saved plan to resume from") from None
