"""A trained version's evaluation for people (deeptrain extensions, scope ``train``): what the console's
evaluation page draws.

``GET …/models/{model_id}/versions/{version_id}/evaluation``: ``evaluation`` = task, concepts, split, the stored
scalar metrics, per-concept precision/recall/F1/AP/support, the confusion matrix and PR curves
(classification), ``checked`` (test inputs looked at, at most 2,000) and ``num_mistakes``.
``GET …/versions/{version_id}/mistakes?page=&per_page=``: one page of the test inputs the version gets wrong
(input id order), with ``checked`` and ``num_mistakes``.

Both compute on the first ask from the trained weights, in a worker thread, and cache the result next to the
weights (``deeptrain.services.evaluation_details``); a version not trained yet answers the NotTrained error as
``/metrics`` does, another app's version 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from deeptrain.services import evaluation_details
from serve.v2.access import Access
from serve.v2.envelope import ok
from serve.v2.paging import Page, page_query
from serve.v2.routing import route

router = APIRouter(tags=["model evaluation"])


def _thread(fn, *args: Any, **kwargs: Any):
    return asyncio.to_thread(fn, *args, **kwargs)


@route(router, "GET", "/models/{model_id}/versions/{version_id}/evaluation", scope="train",
       summary="a trained version's evaluation: per-concept figures, confusion matrix, PR curves, mistakes count")
async def get_model_version_evaluation(access: Access, model_id: str, version_id: str) -> dict[str, Any]:
    found = await _thread(evaluation_details.evaluation, access.ctx, access.app_id, model_id, version_id)
    return ok(evaluation=found)


@route(router, "GET", "/models/{model_id}/versions/{version_id}/mistakes", scope="train",
       summary="the test inputs a trained version gets wrong, a page at a time (input id order)")
async def list_model_version_mistakes(access: Access, model_id: str, version_id: str,
                                      page: Page = Depends(page_query)) -> dict[str, Any]:
    found = await _thread(evaluation_details.mistakes, access.ctx, access.app_id, model_id, version_id,
                          page.offset, page.per_page)
    return ok(**found)
