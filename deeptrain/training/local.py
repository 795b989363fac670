"""Run the training loop in one process, without Ray: for tests, benchmarks and debugging.

``LocalData`` serves batches from an in-memory Arrow table of dataset rows, in the order
``epoch_indices`` gives (deterministic per seed and epoch); ``LocalHost`` keeps
checkpoints in memory (or hands them to a callback) and never stops early unless told.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import torch

from deeptrain.training.preprocess import Preprocessor
from deeptrain.training.schedule import epoch_indices


def _to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


@dataclass
class LocalData:
    """Batches from dataset rows (a ``pyarrow.Table`` with the dataset version's columns); without a
    ``validation`` table the periodic evaluation reads the test rows (as training does without validation
    inputs)."""

    train: pa.Table
    test: pa.Table
    preprocessor: Preprocessor
    batch_size: int
    num_items: int = 0
    seed: int = 0
    validation: pa.Table | None = None

    def _batch(self, table: pa.Table, rows: list[int]) -> dict[str, torch.Tensor]:
        cols = table.take(rows).to_pydict()
        numpy_batch = {k: np.array(v, dtype=object) if k in ("image", "concepts", "boxes") else np.asarray(v)
                       for k, v in cols.items()}
        return _to_torch(self.preprocessor(numpy_batch))

    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        order = epoch_indices(self.train.num_rows, self.num_items, epoch, self.seed)
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            yield self._batch(self.train, order[start : start + self.batch_size])

    def _all_batches(self, table: pa.Table) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, table.num_rows, 64):
            yield self._batch(table, list(range(start, min(start + 64, table.num_rows))))

    def validation_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        return self._all_batches(self.test if self.validation is None else self.validation)

    def test_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        return self._all_batches(self.test)


@dataclass
class LocalHost:
    """A single-process host: rank 0 of 1; checkpoints kept in ``checkpoints``."""

    resume_from: dict[str, Any] | None = None
    stop_after_epoch: int | None = None
    on_progress: Callable[[dict[str, Any]], None] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def replicas_in_sync(self, model: torch.nn.Module) -> bool | None:
        return None

    def all_reduce_mean(self, value: float) -> float:
        return value

    def restore(self) -> dict[str, Any] | None:
        return self.resume_from

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.reports.append(metrics)
        if state is not None:
            self.checkpoints.append(state)

    def progress(self, info: dict[str, Any]) -> None:
        if self.on_progress:
            self.on_progress(info)

    def should_stop(self) -> bool:
        return self.stop_after_epoch is not None and len(self.reports) + 1 >= self.stop_after_epoch
