"""The worker side of a Ray Train run: where each worker's batches come from (``RayData``) and how the
plain loop talks to Ray Train (``RayHost``: DDP, checkpoints, progress and cancellation via the store).
``ray_train_loop`` is the ``train_loop_per_worker``."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from deeptrain.config import Settings
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.training.loop import TrainSpec, run_training


class RayData:
    """This worker's shard of the training split (reshuffled every pass) and the test split."""

    def __init__(self, seed: int, local_batch: int):
        self.seed, self.local_batch = seed, local_batch

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
    spec: TrainSpec = config["spec"]
    host = RayHost(tuple(config["version"]), config["input"])
    data = RayData(spec.params.seed, spec.params.local_batch(host.world_size))
    run_training(spec, data, host)
