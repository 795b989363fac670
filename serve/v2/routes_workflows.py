"""Workflows: results (Clarifai's PostWorkflowResults, ``predict`` scope) and definitions (PostWorkflows,
ListWorkflows, GetWorkflow, DeleteWorkflow; ``train`` scope).

A deeptrain workflow is an ordered list of steps (``detect`` first or not at all; later steps run on the
detector's crops). Clarifai's ``nodes[]{id, model{id, model_version{id}}}`` become steps in their order, each
step's kind taken from its model's task; deeptrain's own steps are accepted as
``metadata.steps: ["detect:det", "classify:clf:VERSION"]``. Rendered back as nodes, each later node's
``node_inputs`` naming the detect node when there is one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from deeptrain.errors import InvalidInput
from deeptrain.services import models as model_service
from deeptrain.services import workflows as workflow_service
from serve import inference_calls
from serve.bodies import openapi_body, parse_body
from serve.middleware import timeout_response
from serve.predictor_calls import Timeout
from serve.schemas import MAX_ID_CHARS, PostWorkflowResultsRequest, PostWorkflowResultsResponse
from serve.v2.access import Access
from serve.v2.envelope import ok
from serve.v2.paging import Page, native, page_query, timestamp
from serve.v2.routing import Lenient, read_body, route

router = APIRouter(tags=["workflows"])
KIND_OF_TASK = {task: kind for kind, task in workflow_service.STEP_TASKS.items()}


class VersionRef(Lenient):
    id: str = Field("", max_length=64)


class ModelRef(Lenient):
    id: str = Field(..., min_length=1, max_length=64)
    model_version: VersionRef = VersionRef()


class NodeIn(Lenient):
    id: str = Field("", max_length=MAX_ID_CHARS)
    model: ModelRef


class WorkflowMetadata(Lenient):
    steps: list[str] = Field([], max_length=workflow_service.MAX_STEPS, description="deeptrain's KIND:MODEL[:VERSION]")


class WorkflowIn(Lenient):
    id: str = Field(..., min_length=1, max_length=64)
    nodes: list[NodeIn] = Field([], max_length=workflow_service.MAX_STEPS)
    metadata: WorkflowMetadata = WorkflowMetadata()


class PostWorkflowsBody(Lenient):
    workflows: list[WorkflowIn] = Field(..., min_length=1, max_length=16)


def render_workflow(workflow: dict[str, Any]) -> dict[str, Any]:
    steps = workflow["steps"]
    node_ids = [f"{step['kind']}-{step['model_id']}" for step in steps]
    detect = node_ids[0] if steps and steps[0]["kind"] == "detect" else None
    nodes = [{"id": node_id, "model": {"id": step["model_id"],
                                       **({"model_version": {"id": step["version_id"]}} if step["version_id"] else {})},
              **({"node_inputs": [{"node_id": detect}]} if detect and k > 0 else {})}
             for k, (node_id, step) in enumerate(zip(node_ids, steps))]
    return {"id": workflow["id"], "app_id": workflow["app_id"], "created_at": timestamp(workflow["created_at"]),
            "nodes": nodes, "metadata": native(workflow)}


def _steps(ctx, app_id: str, workflow: WorkflowIn) -> list[dict[str, Any] | str]:
    if workflow.metadata.steps and workflow.nodes:
        raise InvalidInput(f"workflow {workflow.id!r}: give nodes or metadata.steps, not both")
    if workflow.metadata.steps:
        return list(workflow.metadata.steps)
    if not workflow.nodes:
        raise InvalidInput(f"workflow {workflow.id!r} has no nodes")
    return [{"kind": KIND_OF_TASK[model_service.get_model(ctx, app_id, node.model.id)["task"]],
             "model_id": node.model.id, "version_id": node.model.model_version.id or None} for node in workflow.nodes]


@route(router, "POST", "/workflows", scope="train", body=PostWorkflowsBody,
       summary="define workflows (Clarifai nodes, or deeptrain steps in metadata.steps)")
async def post_workflows(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostWorkflowsBody)

    def create() -> list[dict[str, Any]]:
        return [workflow_service.create_workflow(access.ctx, access.app_id, w.id, _steps(access.ctx, access.app_id, w))
                for w in body.workflows]

    return ok(workflows=[render_workflow(w) for w in await asyncio.to_thread(create)])


@route(router, "GET", "/workflows", scope="train", summary="list the app's workflows")
async def list_workflows(access: Access, page: Page = Depends(page_query)) -> dict[str, Any]:
    workflows = await asyncio.to_thread(workflow_service.list_workflows, access.ctx, access.app_id)
    return ok(workflows=[render_workflow(w) for w in page.of(workflows)])


@route(router, "GET", "/workflows/{workflow_id}", scope="train", summary="one workflow")
async def get_workflow(access: Access, workflow_id: str) -> dict[str, Any]:
    workflow = await asyncio.to_thread(workflow_service.get_workflow, access.ctx, access.app_id, workflow_id)
    return ok(workflow=render_workflow(workflow))


@route(router, "DELETE", "/workflows/{workflow_id}", scope="train", summary="delete a workflow")
async def delete_workflow(access: Access, workflow_id: str) -> dict[str, Any]:
    await asyncio.to_thread(workflow_service.delete_workflow, access.ctx, access.app_id, workflow_id)
    return ok()


async def _results(access: Access, workflow_id: str, request: Request) -> Any:
    body = await parse_body(request, PostWorkflowResultsRequest)
    svc = access.services
    try:
        return await inference_calls.workflow_results(svc, access.app_id, workflow_id, body)
    except Timeout:
        return timeout_response("workflow", svc.timeout_s)


DOCUMENTED = {"responses": {200: {"model": PostWorkflowResultsResponse}}}


@route(router, "POST", "/workflows/{workflow_id}/results", scope="predict", **DOCUMENTED,
       summary="run a workflow (e.g. detect -> crop each region -> classify/embed) on each input")
async def workflow_results(access: Access, workflow_id: str, request: Request) -> Any:
    return await _results(access, workflow_id, request)


@route(router, "POST", "/workflows/{workflow_id}/versions/{version_id}/results", scope="predict", **DOCUMENTED,
       summary="run a workflow (deeptrain workflows have one version: any version id runs the current one)")
async def workflow_version_results(access: Access, workflow_id: str, version_id: str, request: Request) -> Any:
    return await _results(access, workflow_id, request)


for _route in router.routes:  # results also take multipart/form-data
    if getattr(_route, "name", "") in ("workflow_results", "workflow_version_results"):
        _route.openapi_extra = {**(_route.openapi_extra or {}), **openapi_body(PostWorkflowResultsRequest)}
