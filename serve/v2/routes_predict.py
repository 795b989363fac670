"""Predictions and searches (Clarifai's PostModelOutputs, PostInputsSearches; deeptrain's own search body on
``/v2/apps/{app_id}/searches``; the search index, an extension).

The bodies (``serve/schemas.py``) are lenient and bounded; outputs also take multipart/form-data uploads
(``serve/bodies.py``). The work is ``serve/inference_calls.py``'s, shared with the gRPC methods.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from deeptrain import search as search_service
from serve import inference_calls
from serve.bodies import openapi_body, parse_body
from serve.middleware import timeout_response
from serve.predictor_calls import Timeout
from serve.schemas import (PostInputsSearchesRequest, PostOutputsRequest, PostOutputsResponse, PostSearchesRequest,
                           PostSearchesResponse)
from serve.v2.access import Access
from serve.v2.envelope import ok
from serve.v2.paging import native
from serve.v2.routing import Lenient, read_body, route

router = APIRouter(tags=["predictions and searches"])


def _documented(response_model: type) -> dict[str, Any]:
    return {"responses": {200: {"model": response_model}}}


async def _answer(call, what: str, timeout_s: float) -> dict[str, Any] | JSONResponse:
    try:
        return await call
    except Timeout:
        return timeout_response(what, timeout_s)


@route(router, "POST", "/models/{model_id}/versions/{version_id}/outputs", scope="predict",
       summary="predict with a model version (JSON or multipart image files)", **_documented(PostOutputsResponse))
async def version_outputs(access: Access, model_id: str, version_id: str, request: Request) -> Any:
    body = await parse_body(request, PostOutputsRequest)
    svc = access.services
    return await _answer(inference_calls.outputs(svc, access.app_id, model_id, version_id, body), "prediction",
                         svc.timeout_s)


@route(router, "POST", "/models/{model_id}/outputs", scope="predict",
       summary="predict with the model's default version (else its newest trained one)",
       **_documented(PostOutputsResponse))
async def model_outputs(access: Access, model_id: str, request: Request) -> Any:
    body = await parse_body(request, PostOutputsRequest)
    svc = access.services
    return await _answer(inference_calls.outputs(svc, access.app_id, model_id, None, body), "prediction",
                         svc.timeout_s)


@route(router, "POST", "/inputs/searches", scope="search", body=PostInputsSearchesRequest,
       summary="Clarifai search: the app's inputs nearest to an image or a stored input (one concept filter)")
async def post_inputs_searches(access: Access, request: Request) -> Any:
    body = await read_body(request, PostInputsSearchesRequest)
    svc = access.services
    return await _answer(inference_calls.inputs_search(svc, access.app_id, body), "embedding", svc.timeout_s)


@route(router, "POST", "/searches", scope="search", forms=("apps",),
       summary="visual search, deeptrain's body: the app's inputs nearest to an image or a stored input",
       **_documented(PostSearchesResponse))
async def searches(access: Access, request: Request) -> Any:
    body = await parse_body(request, PostSearchesRequest)
    svc = access.services
    return await _answer(inference_calls.search(svc, access.app_id, body), "embedding", svc.timeout_s)


class SearchIndexBody(Lenient):
    model_id: str = Field(..., min_length=1, max_length=64)
    version_id: str | None = Field(None, max_length=64)


@route(router, "GET", "/searches/index", scope="search", summary="the app's search index (extension)")
async def get_search_index(access: Access) -> dict[str, Any]:
    info = await asyncio.to_thread(search_service.index_info, access.ctx, access.app_id)
    return ok(search_index={"model": {"id": info["model_id"], "model_version": {"id": info["version_id"]}},
                            "total": info["total"], "metadata": native(info)})


@route(router, "POST", "/searches/index", scope="train", body=SearchIndexBody,
       summary="build (or update) the app's search index as a Ray job (extension)")
async def post_search_index(access: Access, request: Request) -> dict[str, Any]:
    from deeptrain.jobs import submit

    body = await read_body(request, SearchIndexBody)
    argv = ["search", "index", access.app_id, "--model", body.model_id, "--json"]
    if body.version_id:
        argv += ["--version", body.version_id]
    metadata = {submit.META["command"]: "search index", submit.META["app"]: access.app_id,
                submit.META["model"]: body.model_id}
    job = await asyncio.to_thread(lambda: submit.submit_cli(access.ctx, argv, metadata=metadata,
                                                            address=access.services.job_address(),
                                                            env=submit.serving_env()))
    return ok(job={"id": job["job_id"], "metadata": native(job)})


for _route in router.routes:  # outputs and deeptrain's search also take multipart/form-data
    _model = {"version_outputs": PostOutputsRequest, "model_outputs": PostOutputsRequest,
              "searches": PostSearchesRequest}.get(getattr(_route, "name", ""))
    if _model is not None:
        _route.openapi_extra = {**(_route.openapi_extra or {}), **openapi_body(_model)}
