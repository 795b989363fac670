"""Datasets and dataset versions (Clarifai's PostDatasets, ListDatasets, GetDataset, PostDatasetVersions,
ListDatasetVersions, GetDatasetVersion), scope ``inputs``.

deeptrain has one dataset per app: its inputs and labels. Any dataset id is accepted and echoed (Clarifai's
clients name one, e.g. ``default``); a dataset version is an immutable snapshot of the app's inputs and
labels (``deeptrain.services.datasets.snapshot``: the same data gives the same version). PostDatasetVersions
snapshots now, in a worker thread, and answers with the version (``metadata.deeptrain.existing`` says it was
already there); ``metadata.test_fraction`` / ``validation_fraction`` of the request choose the splits of
inputs imported without one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from deeptrain.services import apps as app_service
from deeptrain.services import datasets as dataset_service
from deeptrain.services import keys as key_service
from serve.v2.access import ANY, Access
from serve.v2.envelope import ok
from serve.v2.paging import Page, page_query
from serve.v2.render_models import render_dataset, render_dataset_summary, render_dataset_version
from serve.v2.routing import Lenient, read_body, route

router = APIRouter(tags=["datasets"])
MAX_ITEMS = 128


class DatasetIn(Lenient):
    id: str = Field("default", max_length=64)
    description: str = Field("", max_length=1000)


class PostDatasetsBody(Lenient):
    datasets: list[DatasetIn] = Field(..., min_length=1, max_length=MAX_ITEMS)


class SnapshotOptions(Lenient):
    test_fraction: float = 0.1
    validation_fraction: float = 0.1


class DatasetVersionIn(Lenient):
    description: str = Field("", max_length=1000)
    metadata: SnapshotOptions = SnapshotOptions()


class PostDatasetVersionsBody(Lenient):
    dataset_versions: list[DatasetVersionIn] = Field(default_factory=lambda: [DatasetVersionIn()], max_length=1)


def _thread(fn, *args: Any, **kwargs: Any):
    return asyncio.to_thread(fn, *args, **kwargs)


def _dataset(access: Access, app_id: str, dataset_id: str, description: str = "") -> dict[str, Any]:
    app = app_service.get_app(access.ctx, app_id)
    return render_dataset(app, dataset_id, dataset_service.list_datasets(access.ctx, app_id), description)


@route(router, "POST", "/datasets", scope="inputs", body=PostDatasetsBody,
       summary="name the app's dataset (one per app: its inputs and labels; the ids are echoed)")
async def post_datasets(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostDatasetsBody)
    return ok(datasets=[await _thread(_dataset, access, access.app_id, d.id, d.description) for d in body.datasets])


@route(router, "GET", "/datasets", scope="inputs", summary="the app's dataset (one per app)")
async def list_datasets(access: Access, page: Page = Depends(page_query)) -> dict[str, Any]:
    return ok(datasets=page.of([await _thread(_dataset, access, access.app_id, "default")]))


@route(router, "GET", "/datasets", scope=None, need=ANY, forms=("users",),
       summary="the datasets of the key's app (an app key) or of every app (a user key)")
async def list_user_datasets(access: Access, page: Page = Depends(page_query)) -> dict[str, Any]:
    if access.user_key:
        app_ids = [a["id"] for a in await _thread(app_service.list_apps, access.ctx)]
    else:
        app_ids = [access.key["app_id"]]
        key_service.check_access(access.key, app_ids[0], "inputs", read_only=True)
    return ok(datasets=[await _thread(_dataset, access, app_id, "default") for app_id in page.of(app_ids)])


@route(router, "GET", "/datasets/{dataset_id}", scope="inputs", summary="the app's dataset, under any id")
async def get_dataset(access: Access, dataset_id: str) -> dict[str, Any]:
    return ok(dataset=await _thread(_dataset, access, access.app_id, dataset_id))


@route(router, "POST", "/datasets/{dataset_id}/versions", scope="inputs", body=PostDatasetVersionsBody,
       summary="snapshot the app's inputs and labels as a dataset version (the same data: the same version)")
async def post_dataset_versions(access: Access, dataset_id: str, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostDatasetVersionsBody)
    wanted = body.dataset_versions[0] if body.dataset_versions else DatasetVersionIn()
    options = wanted.metadata
    made = await _thread(dataset_service.snapshot, access.ctx, access.app_id, test_fraction=options.test_fraction,
                         validation_fraction=options.validation_fraction)
    made = {**made, "created_at": (await _thread(dataset_service.get_dataset, access.ctx, access.app_id,
                                                 made["id"]))["created_at"]}
    return ok(dataset_versions=[render_dataset_version(made, dataset_id, wanted.description)])


@route(router, "GET", "/datasets/{dataset_id}/versions", scope="inputs", summary="the app's dataset versions, oldest first")
async def list_dataset_versions(access: Access, dataset_id: str, page: Page = Depends(page_query)) -> dict[str, Any]:
    versions = await _thread(dataset_service.list_datasets, access.ctx, access.app_id)
    return ok(dataset_versions=[render_dataset_summary(v, access.app_id, dataset_id) for v in page.of(versions)])


@route(router, "GET", "/datasets/{dataset_id}/versions/{dataset_version_id}", scope="inputs",
       summary="a dataset version with its counts (inputs, splits, labels and boxes per concept)")
async def get_dataset_version(access: Access, dataset_id: str, dataset_version_id: str) -> dict[str, Any]:
    manifest = await _thread(dataset_service.get_dataset, access.ctx, access.app_id, dataset_version_id)
    return ok(dataset_version=render_dataset_version(manifest, dataset_id))
