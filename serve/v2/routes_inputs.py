"""Inputs (Clarifai's PostInputs, ListInputs, GetInput, GetInputCount, DeleteInput, DeleteInputs,
PatchInputs) and an input's image bytes (a deeptrain extension), scope ``inputs``.

PostInputs runs the import pipeline (``services.inputs.import_records``) over up to 128 inputs and answers
what became of each, in request order: imported (30000), a duplicate of a stored input (30100, the stored
input's id) or rejected (30104/30101, 30106 for an ``image.url``: deeptrain downloads nothing). The answer's
status is 10000 when none was rejected, 10010 (MIXED_STATUS, HTTP 200) when some were, 10020 (FAILURE,
HTTP 400) when all were.

Extensions for the web console: ListInputs filters (``concept_id``, ``split``, ``labelled``) and PNG
thumbnails as data URLs (``thumbnail=N``), ``/inputs/counts`` (how many match, and the app's labelled and per
split counts), and ``/inputs/{id}/image?size=N`` (a PNG thumbnail instead of the original bytes).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from deeptrain.errors import InvalidInput
from deeptrain.images_thumbnail import thumbnail_png
from deeptrain.services import annotations as annotation_service
from deeptrain.services import input_reads
from deeptrain.services import inputs as input_service
from deeptrain.wire import codes
from serve.v2.access import Access
from serve.v2.envelope import ok, status
from serve.v2.input_filters import (IMAGE_SIZE, MAX_THUMBNAIL_PAGE, bounded_int, input_filter, thumbnail_query,
                                    thumbnails, with_thumbnails)
from serve.v2.paging import Page, page_query
from serve.v2.render_inputs import (MAX_INPUTS, MIME, IdsBody, PatchInputsBody, PostInputsBody, import_item, labels,
                                    named_concepts, render_input, render_outcome)
from serve.v2.routing import read_body, route

router = APIRouter(tags=["inputs"])
MAX_IDS = 1000  # ids of a ListInputs
IMAGE_CACHE = {"Cache-Control": "private, max-age=3600"}  # an input's bytes never change under its id


def _thread(fn, *args: Any, **kwargs: Any):
    return asyncio.to_thread(fn, *args, **kwargs)


def _post_inputs(access: Access, body: PostInputsBody) -> tuple[int, dict[str, Any]]:
    ctx, app_id = access.ctx, access.app_id
    built = [import_item(i, item) for i, item in enumerate(body.inputs)]
    annotation_service.ensure_concepts(ctx, app_id, named_concepts(body.inputs))
    report = input_service.import_records(ctx, app_id, [record for record, _ in built],
                                          update_labels=body.update_labels, outcomes=True)
    outcomes = report.items or []
    ids = sorted({o["input_id"] for o in outcomes if o["input_id"]})
    views = {v["id"]: v for v in input_service.input_views(ctx, app_id, ids=ids)} if ids else {}
    rendered = [render_outcome(o, body.inputs[o["index"]], views.get(o["input_id"]), app_id, built[o["index"]][1])
                for o in outcomes]
    rejected = [o for o in outcomes if o["outcome"] == "rejected"]
    if not rejected:
        return 200, ok(inputs=rendered)
    if len(rejected) < len(outcomes):
        return 200, {"status": status(codes.MIXED_STATUS, "Mixed Success",
                                      f"{len(rejected)} of {len(outcomes)} inputs were rejected"), "inputs": rendered}
    return 400, {"status": status(codes.FAILURE, "Failure",
                                  f"all {len(outcomes)} inputs were rejected; the first: {rejected[0]['reason']}"),
                 "inputs": rendered}


@route(router, "POST", "/inputs", scope="inputs", body=PostInputsBody,
       summary=f"add up to {MAX_INPUTS} inputs (base64 images with labels and boxes); each input's outcome")
async def post_inputs(access: Access, request: Request) -> Any:
    body = await read_body(request, PostInputsBody)
    http_status, answer = await _thread(_post_inputs, access, body)
    return answer if http_status == 200 else JSONResponse(answer, status_code=http_status)


@route(router, "GET", "/inputs/status", scope="inputs", summary="how many inputs the app has")
async def input_count(access: Access) -> dict[str, Any]:
    n = await _thread(input_service.count_inputs, access.ctx, access.app_id)
    return ok(counts={"processed": n, "to_process": 0, "errors": 0, "processing": 0})


@route(router, "GET", "/inputs/counts", scope="inputs",
       summary="how many inputs match the filters, and the app's total, labelled, unlabelled and per split")
async def input_counts(access: Access, filters: input_reads.InputFilter = Depends(input_filter)) -> dict[str, Any]:
    return ok(counts=await _thread(input_reads.input_counts, access.ctx, access.app_id, filters))


def _list(access: Access, page: Page, ids: list[str] | None, filters: input_reads.InputFilter,
          thumbnail: int | None) -> list[dict[str, Any]]:
    ctx, app_id = access.ctx, access.app_id
    views = input_service.input_views(ctx, app_id, ids=ids, limit=page.per_page, offset=page.offset,
                                      filters=filters)
    rendered = [render_input(v, app_id) for v in views]
    if thumbnail is None or not views:
        return rendered
    where = input_reads.storage_keys(ctx, app_id, [v["id"] for v in views])
    keys = [where.get(v["id"]) for v in views]
    return with_thumbnails(rendered, thumbnails(ctx.storage.get_bytes, keys, thumbnail,
                                                ctx.settings.max_image_pixels))


@route(router, "GET", "/inputs", scope="inputs",
       summary="list inputs in id order (only ids=, when given; filters concept_id, split, labelled; thumbnail=N)")
async def list_inputs(access: Access, page: Page = Depends(page_query),
                      ids: list[str] | None = Query(None, description="only these input ids"),
                      filters: input_reads.InputFilter = Depends(input_filter),
                      thumbnail: int | None = Depends(thumbnail_query)) -> dict[str, Any]:
    if ids is not None and len(ids) > MAX_IDS:
        raise InvalidInput(f"{len(ids)} ids: ask for at most {MAX_IDS} at once")
    if thumbnail is not None and page.per_page > MAX_THUMBNAIL_PAGE:
        raise InvalidInput(f"per_page={page.per_page} with thumbnails: ask for at most {MAX_THUMBNAIL_PAGE} a page")
    return ok(inputs=await _thread(_list, access, page, ids, filters, thumbnail))


@route(router, "GET", "/inputs/{input_id}/image", scope="inputs",
       summary="an input's image bytes (deeptrain extension); size=N: a PNG of longest side N (16..1024)")
async def input_image(access: Access, input_id: str,
                      size: str | None = Query(None, max_length=16,
                                               description="a PNG thumbnail of longest side N (16..1024)")) -> Response:
    wanted = bounded_int("size", size, IMAGE_SIZE)

    def load() -> tuple[bytes, str]:
        inp = input_service.get_input(access.ctx, access.app_id, input_id)
        data = access.ctx.storage.get_bytes(inp.storage_key)
        if wanted is None:
            return data, MIME.get(inp.format, "application/octet-stream")
        return thumbnail_png(data, wanted, access.ctx.settings.max_image_pixels), "image/png"

    data, media_type = await _thread(load)
    return Response(content=data, media_type=media_type, headers=IMAGE_CACHE)


def _one(access: Access, input_id: str) -> dict[str, Any]:
    input_service.get_input(access.ctx, access.app_id, input_id)  # NotFound (30102) when it does not exist
    return input_service.input_views(access.ctx, access.app_id, ids=[input_id])[0]


@route(router, "GET", "/inputs/{input_id}", scope="inputs", summary="one input with its labels and boxes")
async def get_input(access: Access, input_id: str) -> dict[str, Any]:
    return ok(input=render_input(await _thread(_one, access, input_id), access.app_id))


@route(router, "DELETE", "/inputs/{input_id}", scope="inputs", summary="delete an input with its labels and bytes")
async def delete_input(access: Access, input_id: str) -> dict[str, Any]:
    await _thread(input_service.delete_input, access.ctx, access.app_id, input_id)
    return ok()


@route(router, "DELETE", "/inputs", scope="inputs", body=IdsBody,
       summary="delete inputs by id (a JSON body: all of them, or none when one does not exist)")
async def delete_inputs(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, IdsBody)
    await _thread(input_service.delete_inputs, access.ctx, access.app_id, body.ids)
    return ok()


def _patch(access: Access, body: PatchInputsBody) -> list[dict[str, Any]]:
    patches = []
    for item in body.inputs:
        if not item.id:
            raise InvalidInput("each input of a patch needs its id")
        data = item.data
        patches.append(annotation_service.InputPatch(item.id, labels(data.concepts) if data else (),
                                                     data.metadata if data else None))
    ids = annotation_service.patch_inputs(access.ctx, access.app_id, patches, body.action)
    views = {v["id"]: v for v in input_service.input_views(access.ctx, access.app_id, ids=ids)}
    return [views[i] for i in dict.fromkeys(ids) if i in views]


@route(router, "PATCH", "/inputs", scope="inputs", body=PatchInputsBody,
       summary="change inputs' whole-image labels and metadata (action merge, overwrite or remove)")
async def patch_inputs(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PatchInputsBody)
    views = await _thread(_patch, access, body)
    return ok(inputs=[render_input(v, access.app_id) for v in views])
