"""The Ray Data input of a training run: a dataset version's Parquet files -> the split's rows ->
decoded, resized and labelled arrays (``map_batches``), streamed or cached in the object store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from deeptrain.jobs.plan import TrainPlan
from deeptrain.services import datasets as dataset_service
from deeptrain.services.context import Context
from deeptrain.training.preprocess import Preprocessor


class _KeepLabelled:
    """Drops rows without any of the model's concepts (classification / embedding)."""

    def __init__(self, class_map: list[int]):
        self.class_map = np.asarray(class_map)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = np.array([bool((self.class_map[np.asarray(c, dtype=np.int64)] >= 0).any()) if len(c) else False
                         for c in batch["concepts"]], dtype=bool)
        return {k: v[keep] for k, v in batch.items()}


def preprocessed_bytes(task: str, plan: TrainPlan) -> int:
    """Object-store size of the splits after ``Preprocessor``: per row the uint8 canvas and the label arrays."""
    labels = plan.max_boxes * (4 * 4 + 8) if task == "detection" else 4 * len(plan.concepts)
    num_val = plan.num_val or plan.num_test  # no validation inputs: the test split stands in
    return (plan.num_train + num_val + plan.num_test) * (plan.canvas * plan.canvas * 3 + 2 * 4 + labels)


def cache_input(task: str, plan: TrainPlan, cache_fraction: float) -> dict[str, Any]:
    """Whether a run keeps its preprocessed splits in Ray's object store, decided on the cluster it runs on:
    when together they take at most ``cache_fraction`` (``Settings.data_cache_fraction``, 0.2) of it;
    0 streams always.

    Cached, the splits are read and decoded once per run; streamed, every epoch and every
    evaluation reads the Parquet files and decodes the images again, and each of those Ray Data
    executions first spends seconds starting up (listing files, scheduling its tasks).
    """
    import ray

    size = preprocessed_bytes(task, plan)
    budget = cache_fraction * ray.cluster_resources().get("object_store_memory", 0)
    return {"mode": "cached" if size <= budget else "streamed", "bytes": size, "budget_bytes": int(budget)}


def build_ray_dataset(ctx: Context, app_id: str, task: str, plan: TrainPlan, split: str):
    """The split's rows, decoded and resized in ``map_batches``, as a (lazy) Ray Dataset."""
    import ray.data

    paths = dataset_service.dataset_paths(ctx, app_id, plan.dataset_version_id)
    ds = ray.data.read_parquet(paths, filesystem=ctx.storage.fs,
                               columns=["image", "width", "height", "concepts", "boxes", "split"])
    ds = ds.filter(expr=f"split == '{split}'")
    if task != "detection":
        ds = ds.map_batches(_KeepLabelled(plan.class_map), batch_format="numpy")
    pre = Preprocessor(task=task, image_size=plan.params.image_size, canvas=plan.canvas, class_map=plan.class_map,
                       num_classes=len(plan.concepts), max_boxes=plan.max_boxes if task == "detection" else 0)
    return ds.map_batches(pre, batch_format="numpy", batch_size=64)


def input_datasets(ctx: Context, app_id: str, task: str, plan: TrainPlan, cached: bool) -> dict[str, Any]:
    """The training, validation and test splits (``validation`` is the test split when the plan has no
    validation inputs); ``cached``: computed now, all at once (each Ray Data execution spends most of its time
    starting up), and kept in the object store in row order, as a streamed run sees them."""
    sources = {"train": "train", "validation": plan.validation_split, "test": "test"}
    splits = {name: build_ray_dataset(ctx, app_id, task, plan, split) for name, split in sources.items()}
    if not cached:
        return splits
    for ds in splits.values():
        ds.context.execution_options.preserve_order = True
    with ThreadPoolExecutor(len(splits)) as pool:
        return dict(zip(splits, pool.map(lambda ds: ds.materialize(), splits.values())))
