"""Evaluate a trained version on a dataset version's test (or validation) split (Ray Data decodes; metrics as
in training)."""

from __future__ import annotations

from typing import Any

import torch

from deeptrain.artifacts import load_model
from deeptrain.errors import InvalidInput
from deeptrain.formats.records import canonical_split
from deeptrain.services import datasets as dataset_service
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.templates import get_template


def evaluate_version(ctx: Context, app_id: str, model_id: str, version_id: str,
                     dataset_version_id: str | None = None, split: str = "test") -> dict[str, Any]:
    from deeptrain.cluster import ensure_ray
    from deeptrain.jobs.input_pipeline import build_ray_dataset
    from deeptrain.jobs.plan import TrainPlan, geometry
    from deeptrain.training.loop import evaluate

    split = canonical_split(split) or "test"
    if split == "train":
        raise InvalidInput("evaluate on the test or the validation split (val), not on train")
    version = model_service.get_version(ctx, app_id, model_id, version_id)
    if version["status"] != "trained":
        raise InvalidInput(f"version {version_id!r} is {version['status']}; only trained versions can be evaluated")
    loaded = load_model(ctx.storage, version["artifacts"])
    params = loaded.params
    dataset = dataset_service.get_dataset(ctx, app_id, dataset_version_id or version["dataset_version_id"])
    names = [c["id"] for c in dataset["concepts"]]
    index = {c: i for i, c in enumerate(version["concepts"])}
    table = dataset_service.open_dataset(ctx, app_id, dataset["id"]).to_table(columns=["width", "height", "boxes"])
    canvas, max_boxes = geometry(table, params.image_size)
    plan = TrainPlan(params=params, concepts=version["concepts"], class_map=[index.get(n, -1) for n in names],
                     dataset_version_id=dataset["id"], num_train=0, num_test=0, steps_per_epoch=1,
                     canvas=canvas, max_boxes=max_boxes)
    ensure_ray()
    task = loaded.manifest["task"]
    if not dataset["counts"]["splits"].get(split):
        raise InvalidInput(f"dataset version {dataset['id']} has no {split} inputs to evaluate on")
    ds = build_ray_dataset(ctx, app_id, task, plan, split)
    template = get_template(task, loaded.manifest["template"])
    metrics, _ = evaluate(loaded.model, template, ds.iter_torch_batches(batch_size=64), params,
                          version["concepts"], torch.device("cpu"))
    return {"app_id": app_id, "model_id": model_id, "version_id": version_id, "dataset_version_id": dataset["id"],
            "split": split, "metrics": metrics}
