"""The worker side of a Ray Train run: where each worker's batches come from (``RayData``) and how the
plain loop talks to Ray Train (``RayHost``: DDP, checkpoints, progress and cancellation via the store).
``ray_train_loop`` is the ``train_loop_per_worker``."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from deeptrain.config import Settings
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.training.loop import TrainSpec, run_training


class RayData:
    """This worker's shard of the training split (reshuffled every pass), the validation and the test split."""

    def __init__(self, seed: int, local_batch: int, on_first_batch: Callable[[], None] | None = None):
        self.seed, self.local_batch = seed, local_batch
        self.on_first_batch = on_first_batch  # called once, when this worker's first batch has arrived

    def train_batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        batches = self._shard_batches(epoch)
        if self.on_first_batch is not None:
            first = next(batches)
            self.on_first_batch, called = None, self.on_first_batch
            called()
            yield first
        yield from batches

    def _shard_batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        import ray.train

        shard = ray.train.get_dataset_shard("train")
        passes = 0
        while True:
            batches = 0
            for batch in shard.iter_torch_batches(
                    batch_size=self.local_batch, drop_last=True, local_shuffle_buffer_size=max(self.local_batch * 4, 256),
                    local_shuffle_seed=self.seed * 100_003 + epoch * 101 + passes):
                batches += 1
                yield batch
            if batches == 0:  # a shard smaller than one batch would be read again and again, forever
                raise RuntimeError(f"this worker's share of the training split holds fewer than {self.local_batch} "
                                   "inputs (its batch); lower batch_size or the number of workers, or add inputs")
            passes += 1

    def validation_batches(self):
        import ray.train

        return ray.train.get_dataset_shard("validation").iter_torch_batches(batch_size=64)

    def test_batches(self):
        import ray.train

        return ray.train.get_dataset_shard("test").iter_torch_batches(batch_size=64)


def worker_torch_threads(workers_on_node: int, override: int | None = None) -> int:
    """Torch threads per training worker: ``override`` (``Settings.torch_threads``) or the node's cores
    shared by its workers.

    Ray sets OMP_NUM_THREADS=1 for fractional-CPU actors; a worker given 0.5 CPU for
    scheduling would then use one core even when it is alone on the machine.
    """
    return override or max(1, (os.cpu_count() or 1) // max(1, workers_on_node))


class RayHost:
    """Ray Train's side of the loop: DDP, checkpoints, progress and cancellation via the store."""

    PROGRESS_EVERY_S = 1.0

    def __init__(self, version: tuple[str, str, str], input_pipeline: dict[str, Any]):
        import ray.train
        import torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        # the driver's Settings reach the workers as their environment (Settings.as_env in the runtime env)
        self.settings = Settings.from_env()
        torch.set_num_threads(worker_torch_threads(context.get_local_world_size(), self.settings.torch_threads))
        self.version = version
        self._ctx: Context | None = None
        self._last_progress = 0.0
        self.phases: list[str] = []  # this run's phases (see ``phase``)
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
            self._ctx = Context.from_settings(self.settings)
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

    def replicas_in_sync(self, model) -> bool | None:
        """Whether every worker holds the same weights: DDP keeps them so (each applies the same averaged
        gradients), a broken all-reduce does not. A per-tensor fingerprint (sum, sum of squares), gathered."""
        if self.world_size == 1:
            return None
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            mine = torch.stack([f for p in model.parameters() for f in (p.double().sum(), p.double().square().sum())])
        everyone = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        return all(torch.allclose(everyone[0], other, rtol=1e-9, atol=0) for other in everyone[1:])

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
            model_service.update_progress(self.ctx, *self.version, {**info, "phases": self.phases,
                                                                    "workers": self.workers,
                                                                    "input": self.input_pipeline})

    def phase(self, name: str) -> None:
        """Record what the run is doing before its first step reports progress: ``phase``, and ``phases``, every
        phase of this run so far (the driver's first), which later progress records keep, so that a follower
        polling the record misses none (the CLI's bar)."""
        if self.rank == 0:
            if not self.phases:
                self.phases = list((model_service.get_version(self.ctx, *self.version).get("progress") or {})
                                   .get("phases") or [])
            self.phases.append(name)
            model_service.update_progress(self.ctx, *self.version, {"phase": name, "phases": self.phases,
                                                                    "workers": self.workers,
                                                                    "input": self.input_pipeline})

    def should_stop(self) -> bool:
        flag = 1.0 if self.rank == 0 and model_service.cancel_requested(self.ctx, *self.version) else 0.0
        return self._all_reduce(flag, "max") > 0


def ray_train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: the plain loop, hosted by Ray Train."""
    spec: TrainSpec = config["spec"]
    host = RayHost(tuple(config["version"]), config["input"])
    # the first step builds kernels and buffers (and compiles, where compiled): "warming up" until it reports
    data = RayData(spec.params.seed, spec.params.local_batch(host.world_size), lambda: host.phase("warming up"))
    run_training(spec, data, host)
