"""Predictions, workflow runs and searches on the Predictor: what the HTTP routes (``serve/v2/routes_predict.py``,
``serve/v2/routes_workflows.py``) and the gRPC methods (``serve/v2/grpc.py``) share.

Each takes the gateway's ``Services`` (Predictor handle, index cache, ``request_timeout_s``), an app id whose
key was already checked, and a validated body (``serve/schemas.py``), and returns the answer's body. The
metadata store and the images are read in a worker thread (``serve/intake.py`` checks every image's header);
each image goes to the Predictor on its own (``serve/predictor_calls.py``), batched there. Past the request's
deadline ``Timeout`` is raised (the routes answer 504, gRPC ``RPC_REQUEST_TIMEOUT``); anything else wrong is
a deeptrain exception.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select

from deeptrain import search as search_service
from deeptrain.errors import InvalidInput
from deeptrain.services import models as model_service
from deeptrain.services import workflows as workflow_service
from deeptrain.services.context import Context
from deeptrain.store.schema import Concept
from serve import predictor_calls
from serve.intake import read_image, read_images
from serve.responses import inputs_search_response, outputs_response, search_response, workflow_response
from serve.schemas import (PostInputsSearchesRequest, PostOutputsRequest, PostSearchesRequest,
                           PostWorkflowResultsRequest)
from serve.v2.state import Services

# base64 images up to this much in all are decoded and header-checked on the event loop (a thread hop costs
# more than that); larger requests, URLs and stored inputs go through a worker thread
INLINE_BASE64_BYTES = 256 * 1024


def concept_names(ctx: Context, app_id: str) -> dict[str, str]:
    """The app's concept names by id (what outputs show as ``name``)."""
    with ctx.store.session() as s:
        return {cid: name or cid for cid, name in s.execute(
            select(Concept.id, Concept.name).where(Concept.app_id == app_id))}


def _resolve_model(ctx: Context, app_id: str, model_id: str, version_id: str | None):
    """(model, the version it serves, the app's concept names) from the store."""
    model = model_service.get_model(ctx, app_id, model_id)
    version = model_service.get_trained_version(ctx, app_id, model_id, version_id)
    return model, version, concept_names(ctx, app_id)


async def resolved_model(svc: Services, app_id: str, model_id: str, version_id: str | None):
    """``_resolve_model``'s answer, reused for ``Settings.serve_cache_ttl_s`` (``serve/caches.py``)."""
    key = (app_id, model_id, version_id)
    found = svc.caches.models.get(key)
    if found is None:
        found = svc.caches.models.put(key, await asyncio.to_thread(_resolve_model, svc.ctx, app_id, model_id,
                                                                   version_id))
    return found


async def request_images(svc: Services, app_id: str, inputs) -> tuple[list[bytes], list[str]]:
    """The checked bytes of a request's images: on the event loop when they are all small base64 (a header
    check each, no store or storage read), else in a worker thread."""
    images = [inp.data.image for inp in inputs]
    if all(i.base64 is not None for i in images) and sum(len(i.base64) for i in images) <= INLINE_BASE64_BYTES:
        return read_images(svc.ctx, app_id, inputs)
    return await asyncio.to_thread(read_images, svc.ctx, app_id, inputs)


async def outputs(svc: Services, app_id: str, model_id: str, version_id: str | None,
                  body: PostOutputsRequest) -> dict[str, Any]:
    """PostModelOutputs: one output per input (the model's default version, else its newest trained one)."""
    deadline = time.monotonic() + svc.timeout_s
    model, version, concepts = await resolved_model(svc, app_id, model_id, version_id)
    images, names = await request_images(svc, app_id, body.inputs)
    config = body.model.output_info.output_config
    threshold = config.min_value if model["task"] == "detection" else None
    top_k = config.max_concepts if config.selected is None else None  # a selection ranks first, cuts after
    outs = await predictor_calls.predict(svc.predictor, version["artifacts"], images, names, deadline,
                                         threshold, top_k)
    return outputs_response(body.inputs, outs, model["task"], model_id, version["id"], config, concepts)


def _run_workflow(svc: Services, app_id: str, workflow_id: str, body: PostWorkflowResultsRequest,
                  deadline: float) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """In a worker thread: the workflow service's orchestration, each step on the Predictor (batched).
    Past the deadline no further step is sent (the thread outlives the timeout, its work does not)."""
    workflow_service.get_workflow(svc.ctx, app_id, workflow_id)
    images, names = read_images(svc.ctx, app_id, body.inputs)
    config = body.output_config
    top_k = config.max_concepts if config.selected is None else None

    def predict_step(version: dict[str, Any], step_images: list[bytes], threshold: float | None,
                     step_top_k: int | None) -> list[dict[str, Any]]:
        step_names = names if step_images == images else [f"region {k}" for k in range(len(step_images))]
        return predictor_calls.predict_blocking(svc.predictor, version["artifacts"], step_images, step_names,
                                                deadline, threshold, step_top_k)

    results = workflow_service.run_workflow(svc.ctx, app_id, workflow_id, images, predict_step,
                                            threshold=config.min_value, top_k=top_k)
    return results, concept_names(svc.ctx, app_id)


async def workflow_results(svc: Services, app_id: str, workflow_id: str,
                           body: PostWorkflowResultsRequest) -> dict[str, Any]:
    """PostWorkflowResults: every step's output for each input."""
    deadline = time.monotonic() + svc.timeout_s
    try:
        results, names = await asyncio.wait_for(
            asyncio.to_thread(_run_workflow, svc, app_id, workflow_id, body, deadline),
            max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise predictor_calls.Timeout() from None
    return workflow_response(workflow_id, body.inputs, results, body.output_config, names)


def _query(svc: Services, app_id: str, image, input_id: str | None, concept: str | None):
    index = svc.indexes.get(svc.ctx, app_id)
    search_service.check_concept(svc.ctx, app_id, concept)
    data = None if image is None else read_image(svc.ctx, app_id, image, "query.image")
    vector, data = search_service.query_source(svc.ctx, app_id, index, data, input_id)
    return index, vector, data


async def _nearest(svc: Services, app_id: str, image, input_id: str | None, concept: str | None,
                   top_k: int) -> tuple[Any, list[dict[str, Any]]]:
    deadline = time.monotonic() + svc.timeout_s
    index, vector, data = await asyncio.to_thread(_query, svc, app_id, image, input_id, concept)
    if vector is None:  # embed the query image on the Predictor, batched with other requests of the version
        out, = await predictor_calls.predict(svc.predictor, index.artifacts, [data], ["query.image"], deadline)
        vector = out["embedding"]
    return index, await asyncio.to_thread(index.query, vector, top_k, concept, input_id)


async def search(svc: Services, app_id: str, body: PostSearchesRequest) -> dict[str, Any]:
    """deeptrain's own search body (``/v2/apps/{app_id}/searches``)."""
    index, hits = await _nearest(svc, app_id, body.query.image, body.query.input_id, body.concept, body.top_k)
    return search_response(index.manifest, hits)


def clarifai_query(body: PostInputsSearchesRequest) -> tuple[Any, str | None, str | None]:
    """Clarifai's query as (image, input_id, concept): one rank, at most one concept filter."""
    query = body.searches[0].query
    if len(query.ranks) != 1:
        raise InvalidInput("a search takes exactly one rank: annotation.data.image (base64, or the storage url "
                           f"of one of the app's inputs) or annotation.input_id; got {len(query.ranks)}")
    rank = query.ranks[0].annotation
    if (rank.data.image is None) == (rank.input_id is None):
        raise InvalidInput("the rank takes exactly one of annotation.data.image, annotation.input_id")
    concepts = [c.key for f in query.filters for c in f.annotation.data.concepts if c.key]
    if len(concepts) > 1 or any(f.annotation.data.image or f.annotation.input_id for f in query.filters):
        raise InvalidInput("filters: at most one concept (annotation.data.concepts[0].id) is supported")
    return rank.data.image, rank.input_id, (concepts[0] if concepts else None)


async def inputs_search(svc: Services, app_id: str, body: PostInputsSearchesRequest) -> dict[str, Any]:
    """PostInputsSearches: the app's inputs nearest to an image or a stored input, a page of them."""
    image, input_id, concept = clarifai_query(body)
    page = body.pagination
    if page.page * page.per_page > search_service.MAX_TOP_K:
        raise InvalidInput(f"pagination reaches past hit {search_service.MAX_TOP_K} (page * per_page)")
    if concept is not None:
        names = await asyncio.to_thread(concept_names, svc.ctx, app_id)
        concept = next((cid for cid, name in names.items() if concept in (cid, name)), concept)
    index, hits = await _nearest(svc, app_id, image, input_id, concept, page.page * page.per_page)
    names = await asyncio.to_thread(concept_names, svc.ctx, app_id)
    return inputs_search_response(index.manifest, hits[(page.page - 1) * page.per_page:], names)
