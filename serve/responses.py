"""Clarifai-shaped response bodies from deeptrain's raw outputs (concepts, regions, embeddings, workflow steps,
search hits): the whole body of each route's 200 answer."""

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


def _input_ref(inp) -> dict[str, Any]:
    """How an output names its input: the id the caller gave, else the stored input's id."""
    return {"id": inp.id or inp.data.image.input_id}


def outputs_response(inputs, outs: list[dict[str, Any]], task: str, model_id: str, version_id: str,
                     min_value: float | None) -> dict[str, Any]:
    """The body of a prediction: one output per input, in the request's order."""
    ref = {"id": model_id, "model_version": {"id": version_id}}
    return {"status": OK, "outputs": [
        {"id": uuid.uuid4().hex, "input": _input_ref(inp), "model": ref, "data": clarifai_data(task, out, min_value)}
        for inp, out in zip(inputs, outs)]}


def workflow_response(workflow_id: str, inputs, results: list[dict[str, Any]],
                      min_value: float | None) -> dict[str, Any]:
    """The body of a workflow run: one result per input, each with every step's output."""
    return {"status": OK, "workflow": {"id": workflow_id},
            "results": [{"status": OK, "input": _input_ref(inp), "outputs": workflow_outputs(r["outputs"], min_value)}
                        for inp, r in zip(inputs, results)]}


def search_response(manifest: dict[str, Any], hits: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of a search: the index's model version and the hits, best first."""
    return {"status": OK,
            "model": {"id": manifest["model_id"], "model_version": {"id": manifest["version_id"]}},
            "hits": [{"input": {"id": h["input_id"]}, "score": h["score"],
                      "concepts": [{"id": c, "value": 1.0} for c in h["concepts"]]} for h in hits]}
