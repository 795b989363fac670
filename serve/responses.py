"""Clarifai-shaped response bodies from deeptrain's raw outputs (concepts, regions, embeddings, workflow steps,
search hits): the whole body of each route's 200 answer, and of the gRPC methods' responses.

Concepts carry ``id``, ``name`` (the app's concept name) and ``value``. ``output_config`` is applied here:
``select_concepts`` (by id or name, whatever the rank), ``min_value`` (classification: concepts below it are
dropped; detection: the Predictor's threshold), ``max_concepts`` (after the selection). Each output's
``data.metadata.deeptrain`` is deeptrain's own output (without the embedding vector, which is in
``data.embeddings``), what the remote SDK reads back.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from deeptrain.services import workflows as workflow_service
from serve.schemas import OutputConfig

OK = {"code": 10000, "description": "Ok"}


def _concept(concept_id: str, value: float, names: Mapping[str, str]) -> dict[str, Any]:
    return {"id": concept_id, "name": names.get(concept_id, concept_id), "value": value}


def _selected(concept_id: str, config: OutputConfig, names: Mapping[str, str]) -> bool:
    chosen = config.selected
    return chosen is None or concept_id in chosen or names.get(concept_id) in chosen


def shaped(task: str, out: dict[str, Any], config: OutputConfig, names: Mapping[str, str]) -> dict[str, Any]:
    """A raw output with ``config`` applied (the Predictor applied the detection threshold and, without
    ``select_concepts``, ``max_concepts``)."""
    if task == "classification" or "concepts" in out:
        kept = [c for c in out["concepts"] if _selected(c["id"], config, names)
                and (config.min_value is None or c["value"] >= config.min_value)]
        return {**out, "concepts": kept[:config.max_concepts or None]}
    if task == "detection":
        return {**out, "regions": [r for r in out["regions"] if _selected(r["concept"], config, names)]}
    return out


def clarifai_data(task: str, out: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """A (shaped) raw output in Clarifai's ``Data`` shape."""
    if task == "classification":
        return {"concepts": [_concept(c["id"], c["value"], names) for c in out["concepts"]]}
    if task == "detection":
        return {"regions": [{"id": uuid.uuid4().hex, "region_info": {"bounding_box": r["bounding_box"]},
                             "data": {"concepts": [_concept(r["concept"], r["value"], names)]}}
                            for r in out["regions"]]}
    return {"embeddings": [{"vector": out["embedding"], "num_dimensions": len(out["embedding"])}]}


def _native(out: dict[str, Any]) -> dict[str, Any]:
    return {"deeptrain": {k: v for k, v in out.items() if k != "embedding"}}


def _step_data(out: dict[str, Any], region_ids: list[str], config: OutputConfig,
               names: Mapping[str, str]) -> dict[str, Any]:
    task = workflow_service.STEP_TASKS[out["kind"]]
    if out["kind"] == "detect":
        data = clarifai_data(task, out, names)
        for rid, region in zip(region_ids, data["regions"]):
            region["id"] = rid
        return data
    if "regions" in out:  # a step on the detector's crops
        return {"regions": [{"id": rid, "region_info": {"bounding_box": r["bounding_box"]},
                             "data": clarifai_data(task, shaped(task, r, config, names), names)}
                            for rid, r in zip(region_ids, out["regions"])]}
    return clarifai_data(task, shaped(task, out, config, names), names)


def workflow_outputs(outputs: list[dict[str, Any]], config: OutputConfig,
                     names: Mapping[str, str]) -> list[dict[str, Any]]:
    """A workflow result in Clarifai's shape: after a detect step, each output's regions share the detector's ids."""
    region_ids = [uuid.uuid4().hex for _ in outputs[0].get("regions", [])]
    return [{"id": uuid.uuid4().hex, "status": OK,
             "model": {"id": out["model_id"], "model_version": {"id": out["version_id"]}},
             "data": {**_step_data(out, region_ids, config, names), "metadata": _native(out)}} for out in outputs]


def input_ref(inp) -> dict[str, Any]:
    """How an output names its input: the id the caller gave, else the stored input's id (else none)."""
    given = inp.id or inp.data.image.input_id
    return {"id": given} if given else {}


def outputs_response(inputs, outs: list[dict[str, Any]], task: str, model_id: str, version_id: str,
                     config: OutputConfig, names: Mapping[str, str]) -> dict[str, Any]:
    """The body of a prediction: one output per input, in the request's order."""
    ref = {"id": model_id, "model_version": {"id": version_id}}
    body = []
    for inp, out in zip(inputs, outs):
        out = shaped(task, out, config, names)
        body.append({"id": uuid.uuid4().hex, "status": OK, "input": input_ref(inp), "model": ref,
                     "data": {**clarifai_data(task, out, names), "metadata": _native(out)}})
    return {"status": OK, "outputs": body}


def workflow_response(workflow_id: str, inputs, results: list[dict[str, Any]], config: OutputConfig,
                      names: Mapping[str, str]) -> dict[str, Any]:
    """The body of a workflow run: one result per input, each with every step's output."""
    return {"status": OK, "workflow": {"id": workflow_id},
            "results": [{"id": uuid.uuid4().hex, "status": OK, "input": input_ref(inp),
                         "outputs": workflow_outputs(r["outputs"], config, names)}
                        for inp, r in zip(inputs, results)]}


def search_response(manifest: dict[str, Any], hits: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of a (deeptrain-shaped) search: the index's model version and the hits, best first."""
    return {"status": OK,
            "model": {"id": manifest["model_id"], "model_version": {"id": manifest["version_id"]}},
            "hits": [{"input": {"id": h["input_id"]}, "score": h["score"],
                      "concepts": [{"id": c, "value": 1.0} for c in h["concepts"]]} for h in hits]}


def inputs_search_response(manifest: dict[str, Any], hits: list[dict[str, Any]],
                           names: Mapping[str, str]) -> dict[str, Any]:
    """The body of Clarifai's PostInputsSearches: ``hits[]{score, input{id, data{concepts, metadata}}}``."""
    return {"status": OK, "hits": [
        {"score": h["score"], "input": {"id": h["input_id"], "data": {
            "concepts": [_concept(c, 1.0, names) for c in h["concepts"]],
            "metadata": {"deeptrain": {**h, "model_id": manifest["model_id"],
                                       "version_id": manifest["version_id"]}}}}} for h in hits]}
