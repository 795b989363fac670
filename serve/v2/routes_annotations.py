"""Annotations (Clarifai's PostAnnotations, ListAnnotations, PatchAnnotations, DeleteAnnotation,
DeleteAnnotations), scope ``inputs``: single labels of stored inputs, by annotation id.

deeptrain keeps one concept per annotation: a request annotation with several concepts (or a region with
several) answers with one annotation per concept. ``DELETE /inputs/annotations`` is registered here, before
``DELETE /inputs/{input_id}`` (this router comes first in ``control.ROUTERS``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from deeptrain.errors import InvalidInput
from deeptrain.services import annotations as annotation_service
from serve.v2.access import Access
from serve.v2.envelope import ok
from serve.v2.paging import Page, page_query
from serve.v2.render_inputs import (MAX_ITEMS, DeleteAnnotationsBody, PatchAnnotationsBody, PostAnnotationsBody,
                                    box_of, labels, region_labels, render_annotation)
from serve.v2.routing import read_body, route

router = APIRouter(tags=["annotations"])
MAX_IDS = 1000


def _thread(fn, *args: Any, **kwargs: Any):
    return asyncio.to_thread(fn, *args, **kwargs)


def _new_labels(body: PostAnnotationsBody) -> list[annotation_service.NewLabels]:
    items = []
    for a in body.annotations:
        if not a.input_id:
            raise InvalidInput("each annotation needs the input_id of the input it labels")
        data = a.data
        boxes = tuple((box_of(r), region_labels(r)) for r in data.regions) if data else ()
        items.append(annotation_service.NewLabels(a.input_id, labels(data.concepts) if data else (), boxes))
    return items


@route(router, "POST", "/annotations", scope="inputs", body=PostAnnotationsBody,
       summary="add whole-image labels or boxes to existing inputs (one annotation per concept)")
async def post_annotations(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostAnnotationsBody)
    made = await _thread(lambda: annotation_service.add_annotations(access.ctx, access.app_id, _new_labels(body)))
    return ok(annotations=[render_annotation(a) for a in made])


def _ids(values: list[str] | None, what: str) -> list[str] | None:
    if values is not None and len(values) > MAX_IDS:
        raise InvalidInput(f"{len(values)} {what}: ask for at most {MAX_IDS} at once")
    return values


@route(router, "GET", "/annotations", scope="inputs", summary="list annotations in id order (of input_ids=, ids=)")
async def list_annotations(access: Access, page: Page = Depends(page_query),
                           input_ids: list[str] | None = Query(None, description="only of these inputs"),
                           ids: list[str] | None = Query(None, description="only these annotations")) -> dict[str, Any]:
    found = await _thread(annotation_service.list_annotations, access.ctx, access.app_id,
                          _ids(input_ids, "input_ids"), _ids(ids, "ids"), page.per_page, page.offset)
    return ok(annotations=[render_annotation(a) for a in found])


def _label_patches(body: PatchAnnotationsBody) -> list[annotation_service.LabelPatch]:
    patches = []
    for a in body.annotations:
        if not a.id:
            raise InvalidInput("each annotation of a patch needs its id")
        data = a.data
        if data is not None and len(data.regions) > 1:
            raise InvalidInput(f"annotation {a.id!r}: one annotation carries one region ({len(data.regions)} given)")
        region = data.regions[0] if data is not None and data.regions else None
        concepts = (labels(data.concepts) if data is not None else ()) or (region_labels(region) if region else ())
        box = box_of(region) if region is not None and region.region_info is not None else None
        patches.append(annotation_service.LabelPatch(a.id, a.input_id or None, concepts, box))
    return patches


@route(router, "PATCH", "/annotations", scope="inputs", body=PatchAnnotationsBody,
       summary="change annotations' concept, value or box (action merge, overwrite or remove)")
async def patch_annotations(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PatchAnnotationsBody)
    kept = await _thread(lambda: annotation_service.patch_annotations(access.ctx, access.app_id,
                                                                      _label_patches(body), body.action))
    return ok(annotations=[render_annotation(a) for a in kept])


async def _delete_many(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, DeleteAnnotationsBody)
    await _thread(annotation_service.delete_annotations, access.ctx, access.app_id, body.ids, body.input_ids)
    return ok()


@route(router, "DELETE", "/inputs/annotations", scope="inputs", body=DeleteAnnotationsBody,
       summary=f"delete annotations by id (with input_ids) or all of some inputs' (≤ {MAX_ITEMS} each)")
async def delete_input_annotations(access: Access, request: Request) -> dict[str, Any]:
    return await _delete_many(access, request)


@route(router, "DELETE", "/annotations", scope="inputs", body=DeleteAnnotationsBody,
       summary=f"delete annotations by id (with input_ids) or all of some inputs' (≤ {MAX_ITEMS} each)")
async def delete_annotations(access: Access, request: Request) -> dict[str, Any]:
    return await _delete_many(access, request)


@route(router, "DELETE", "/inputs/{input_id}/annotations/{annotation_id}", scope="inputs",
       summary="delete one annotation of an input")
async def delete_annotation(access: Access, input_id: str, annotation_id: str) -> dict[str, Any]:
    await _thread(annotation_service.delete_annotation, access.ctx, access.app_id, input_id, annotation_id)
    return ok()
