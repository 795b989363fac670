"""The Ray Serve application: a FastAPI gateway in front of multiplexed, batching predictors.

(No ``from __future__ import annotations`` here: FastAPI reads the route signatures that
Serve rewrites for the ingress class, and string annotations are not resolved there.)

Gateway (ingress, no CPU reserved): checks the app's API key (``Authorization: Key
<key>`` with the ``predict`` scope) *before* it reads the body, resolves the app, model and
version in the metadata store, reads the images and checks their headers
(``serve/intake.py``: bytes, the storage URL of one of the app's inputs, or a stored input
id), and sends each image to the Predictor (``serve/predictor.py``, which decodes it once;
the calls and their deadline: ``serve/predictor_calls.py``) with the version's artifact
prefix as the multiplexed model id and the seconds left of the request's ``request_timeout_s``.
Searches (``POST /v2/apps/{app}/searches``, ``search`` scope) embed a query image through
the same Predictor and look it up in the app's faiss index (``deeptrain.search``), which
the Gateway keeps loaded per app and reloads when the app's index pointer names a new
build. Workflows (``POST /v2/apps/{app}/workflows/{name}/results``, ``predict`` scope) run
``deeptrain.services.workflows.run_workflow`` in a worker thread, each step's images sent
to the Predictor at once (so a detector's crops are classified in batches). Request bodies:
``serve/bodies.py``; errors: ``serve/middleware.py``; response shapes: ``serve/responses.py``.
"""

import asyncio
import time
from typing import Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from ray import serve

from deeptrain import __version__
from deeptrain import search as search_service
from deeptrain.config import Settings
from deeptrain.services import keys as key_service
from deeptrain.services import models as model_service
from deeptrain.services import workflows as workflow_service
from deeptrain.services.context import Context
from deeptrain.wire import codes
from serve import predictor_calls
from serve.bodies import install_openapi, openapi_body, parse_body
from serve.intake import read_image, read_images
from serve.middleware import BodyLimit, install_error_handlers, timeout_response
from serve.predictor import Predictor
from serve.predictor_calls import Timeout
from serve.responses import outputs_response, search_response, workflow_response
from serve.v2.control import include_control_plane
from serve.v2.envelope import error
from serve.v2.state import Services
from serve.schemas import (ErrorResponse, PostOutputsRequest, PostOutputsResponse, PostSearchesRequest,
                           PostSearchesResponse, PostWorkflowResultsRequest, PostWorkflowResultsResponse)

APP_NAME = "deeptrain"

# the Swagger UI at /docs and ReDoc at /redoc load their scripts from this server (fastapi-offline), never a CDN
api = FastAPIOffline(
    title="deeptrain",
    version=__version__,
    description="Predictions from trained deeptrain model versions and visual search over an app's inputs "
                "(Clarifai-style resource paths).",
    responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 502, 504)},
)
install_openapi(api)
install_error_handlers(api)
include_control_plane(api)
api.add_middleware(BodyLimit, limit=Settings.from_env().max_request_bytes)  # the actor's env: build_app sets it


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class Gateway:
    def __init__(self, predictor, settings_env: dict[str, str]):
        self.predictor = predictor
        self.ctx = Context.from_settings(Settings.from_env(env=settings_env))
        self.timeout_s = self.ctx.settings.request_timeout_s
        self.indexes = search_service.IndexCache()
        api.state.services = Services(self.ctx, predictor, self.timeout_s, self.indexes)
        home, storage = str(self.ctx.settings.home), self.ctx.storage
        api.state.redact = lambda text: storage.scrub(text).replace(home, "<home>")

    @api.get("/healthz", summary="liveness")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="readiness: the metadata store answers",
             responses={503: {"model": ErrorResponse, "description": "the metadata store does not answer"}})
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.to_thread(self.ctx.store.ping)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return error(503, codes.RPC_SERVER_UNAVAILABLE, f"metadata store unreachable: {type(exc).__name__}")
        return JSONResponse({"status": "ready", "version": __version__})

    async def _authorize(self, authorization: str | None, app_id: str, scope: str) -> None:
        """Before anything of the request is read: a caller without a valid key costs one key lookup."""
        await asyncio.to_thread(key_service.authorize, self.ctx, authorization, app_id, scope)

    @api.post("/v2/apps/{app_id}/models/{model_id}/versions/{version_id}/outputs",
              response_model=PostOutputsResponse, summary="predict with a model version",
              openapi_extra=openapi_body(PostOutputsRequest))
    async def version_outputs(self, app_id: str, model_id: str, version_id: str, request: Request,
                              authorization: str | None = Header(None)) -> dict[str, Any]:
        return await self._outputs(app_id, model_id, version_id, request, authorization)

    @api.post("/v2/apps/{app_id}/models/{model_id}/outputs", response_model=PostOutputsResponse,
              summary="predict with the model's default version (else its newest trained one)",
              openapi_extra=openapi_body(PostOutputsRequest))
    async def model_outputs(self, app_id: str, model_id: str, request: Request,
                            authorization: str | None = Header(None)) -> dict[str, Any]:
        return await self._outputs(app_id, model_id, None, request, authorization)

    def _resolve(self, app_id: str, model_id: str, version_id: str | None, body: PostOutputsRequest):
        model = model_service.get_model(self.ctx, app_id, model_id)
        version = model_service.get_trained_version(self.ctx, app_id, model_id, version_id)
        return (model, version, *read_images(self.ctx, app_id, body.inputs))

    async def _outputs(self, app_id: str, model_id: str, version_id: str | None, request: Request,
                       authorization: str | None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        await self._authorize(authorization, app_id, "predict")
        body = await parse_body(request, PostOutputsRequest)
        model, version, images, names = await asyncio.to_thread(self._resolve, app_id, model_id, version_id, body)
        config = body.model.output_info.output_config
        threshold = config.min_value if model["task"] == "detection" else None
        try:
            outs = await predictor_calls.predict(self.predictor, version["artifacts"], images, names, deadline,
                                                 threshold, config.max_concepts)
        except Timeout:
            return timeout_response("prediction", self.timeout_s)
        return outputs_response(body.inputs, outs, model["task"], model_id, version["id"], config.min_value)

    @api.post("/v2/apps/{app_id}/workflows/{workflow_id}/results", response_model=PostWorkflowResultsResponse,
              summary="run a workflow (e.g. detect -> crop each region -> classify/embed) on each input",
              openapi_extra=openapi_body(PostWorkflowResultsRequest))
    async def workflow_results(self, app_id: str, workflow_id: str, request: Request,
                               authorization: str | None = Header(None)) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        await self._authorize(authorization, app_id, "predict")
        body = await parse_body(request, PostWorkflowResultsRequest)
        try:
            results = await asyncio.wait_for(asyncio.to_thread(self._run_workflow, app_id, workflow_id, body,
                                                               deadline), max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, Timeout):
            return timeout_response("workflow", self.timeout_s)
        return workflow_response(workflow_id, body.inputs, results, body.output_config.min_value)

    def _run_workflow(self, app_id: str, workflow_id: str, body: PostWorkflowResultsRequest,
                      deadline: float) -> list[dict[str, Any]]:
        """In a worker thread: the workflow service's orchestration, each step on the Predictor (batched).
        Past the deadline no further step is sent (the thread outlives the 504, its work does not)."""
        workflow_service.get_workflow(self.ctx, app_id, workflow_id)
        images, names = read_images(self.ctx, app_id, body.inputs)
        config = body.output_config

        def predict_step(version: dict[str, Any], step_images: list[bytes], threshold: float | None,
                         top_k: int | None) -> list[dict[str, Any]]:
            step_names = names if step_images == images else [f"region {k}" for k in range(len(step_images))]
            return predictor_calls.predict_blocking(self.predictor, version["artifacts"], step_images, step_names,
                                                    deadline, threshold, top_k)

        return workflow_service.run_workflow(self.ctx, app_id, workflow_id, images, predict_step,
                                             threshold=config.min_value, top_k=config.max_concepts)

    @api.post("/v2/apps/{app_id}/searches", response_model=PostSearchesResponse,
              summary="visual search: the app's inputs nearest to an image or a stored input (search scope)",
              openapi_extra=openapi_body(PostSearchesRequest))
    async def searches(self, app_id: str, request: Request,
                       authorization: str | None = Header(None)) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        await self._authorize(authorization, app_id, "search")
        body = await parse_body(request, PostSearchesRequest)
        index, vector, data = await asyncio.to_thread(self._search_query, app_id, body)
        if vector is None:  # embed the query image on the Predictor, batched with other requests of the version
            try:
                out, = await predictor_calls.predict(self.predictor, index.artifacts, [data], ["query.image"],
                                                     deadline)
            except Timeout:
                return timeout_response("embedding", self.timeout_s)
            vector = out["embedding"]
        hits = await asyncio.to_thread(index.query, vector, body.top_k, body.concept, body.query.input_id)
        return search_response(index.manifest, hits)

    def _search_query(self, app_id: str, body: PostSearchesRequest):
        index = self.indexes.get(self.ctx, app_id)
        search_service.check_concept(self.ctx, app_id, body.concept)
        query = body.query
        image = None if query.image is None else read_image(self.ctx, app_id, query.image, "query.image")
        vector, data = search_service.query_source(self.ctx, app_id, index, image, query.input_id)
        return index, vector, data


def build_app(settings: Settings, *, predictor_replicas: int = 1, predictor_cpus: float = 0.5):
    """The bound application; replicas load weights from the settings' storage (local or S3)."""
    from deeptrain.cluster import worker_env

    env = {"env_vars": worker_env(settings)}  # settings.as_env() and the storage credentials
    predictor = Predictor.options(num_replicas=predictor_replicas,
                                  ray_actor_options={"num_cpus": predictor_cpus, "runtime_env": env})
    return Gateway.options(ray_actor_options={"num_cpus": 0, "runtime_env": env}).bind(
        predictor.bind(settings.as_env()), settings.as_env())


def app_builder(args: dict[str, str]):
    """``serve run``/``serve deploy`` entry (``serve/config.yaml``): settings from the environment."""
    return build_app(Settings.from_env(), predictor_cpus=float(args.get("predictor_cpus", 1)))


def start(settings: Settings, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> str:
    """Deploy the application on the current (or an embedded) Ray cluster; returns its base URL."""
    from deeptrain.cluster import ensure_ray

    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings, **options), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def stop() -> None:
    """Remove the application and shut Serve down: its HTTP proxy would otherwise keep the
    port, and a later ``start`` on another port would still be answered on the old one."""
    serve.delete(APP_NAME)
    serve.shutdown()
