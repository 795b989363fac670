"""Clarifai-shaped response bodies from deeptrain's raw outputs (concepts, regions, embeddings, workflow steps)."""

from __future__ import annotations

import uuid
from typing import Any

from deeptrain.services import workflows as workflow_service

OK = {"code": 10000, "description": "Ok"}


def clarifai_data(task: str, out: dict[str, Any], min_value: float | None) -> dict[str, Any]:
    if task == "classification":
        return {"concepts": [c for c in out["concepts"] if min_value is None or c["value"] >= min_value]}
    if task == "detection":
        return {"regions": [{"id": uuid.uuid4().hex, "region_info": {"bounding_box": r["bounding_box"]},
                             "data": {"concepts": [{"id": r["concept"], "value": r["value"]}]}}
                            for r in out["regions"]]}
    return {"embeddings": [{"vector": out["embedding"], "num_dimensions": len(out["embedding"])}]}


def workflow_outputs(outputs: list[dict[str, Any]], min_value: float | None) -> list[dict[str, Any]]:
    """A workflow result in Clarifai's shape: after a detect step, each output's regions share the detector's ids."""
    first = outputs[0]
    region_ids = [uuid.uuid4().hex for _ in first.get("regions", [])]
    converted = []
    for out in outputs:
        task = workflow_service.STEP_TASKS[out["kind"]]
        if out["kind"] == "detect":
            data = clarifai_data(task, out, min_value)
            for rid, region in zip(region_ids, data["regions"]):
                region["id"] = rid
        elif "regions" in out:  # a step on the detector's crops
            data = {"regions": [{"id": rid, "region_info": {"bounding_box": r["bounding_box"]},
                                 "data": clarifai_data(task, r, min_value)} for rid, r in zip(region_ids, out["regions"])]}
        else:
            data = clarifai_data(task, out, min_value)
        converted.append({"id": uuid.uuid4().hex, "model": {"id": out["model_id"],
                                                            "model_version": {"id": out["version_id"]}}, "data": data})
    return converted
