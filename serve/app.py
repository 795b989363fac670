"""The Ray Serve application: a FastAPI gateway in front of multiplexed, batching predictors.

(No ``from __future__ import annotations`` here: FastAPI reads the route signatures that
Serve rewrites for the ingress class, and string annotations are not resolved there.)

Gateway (ingress, no CPU reserved): checks the app's API key (``Authorization: Key
<key>`` with the ``predict`` scope), resolves the app, model and version in the
metadata store, reads and checks the images (bytes, stored object URL or stored
input id), and sends each image to the Predictor with the version's
artifact prefix as the multiplexed model id. Searches (``POST /v2/apps/{app}/searches``,
``search`` scope) embed a query image through the same Predictor (batched, multiplexed)
and look it up in the app's faiss index (``deeptrain.search``), which the Gateway keeps
loaded per app and reloads when the app's index pointer names a new build. Workflows
(``POST /v2/apps/{app}/workflows/{name}/results``, ``predict`` scope) run
``deeptrain.services.workflows.run_workflow`` in a worker thread, each step's images sent
to the Predictor at once (so a detector's crops are classified in batches). Errors are
JSON ``{"status": {"code", "description"}}`` with a 4xx status; a 500 never carries a
stack trace.

Predictor: ``serve.multiplexed`` keeps the most recently used versions loaded per
replica (LRU, ``DEEPTRAIN_SERVE_MAX_MODELS`` bounds the memory), ``serve.batch`` groups concurrent
images of one version into one forward pass. Predictions go through
``deeptrain.inference.predict_bytes``, the path the CLI, SDK and offline evaluation
use, so a served output equals the offline one for the same version and image.
"""

import asyncio
import base64
import binascii
import logging
import os
import uuid
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from deeptrain import __version__
from deeptrain.config import Settings
from deeptrain.errors import Conflict, DeeptrainError, Forbidden, InvalidInput, NotFound, StorageError, Unauthorized
from deeptrain import search as search_service
from deeptrain.images import inspect_image
from deeptrain.services import inputs as input_service
from deeptrain.services import keys as key_service
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.services import workflows as workflow_service
from serve.bodies import add_body_schemas, openapi_body, parse_body
from serve.schemas import (ErrorResponse, Input, PostOutputsRequest, PostOutputsResponse, PostSearchesRequest,
                           PostSearchesResponse, PostWorkflowResultsRequest, PostWorkflowResultsResponse)

log = logging.getLogger("deeptrain.serve")

APP_NAME = "deeptrain"
MAX_REQUEST_BYTES = int(os.environ.get("DEEPTRAIN_MAX_REQUEST_BYTES", 64 * 2**20))
REQUEST_TIMEOUT_S = float(os.environ.get("DEEPTRAIN_REQUEST_TIMEOUT_S", 60))
MAX_MODELS_PER_REPLICA = int(os.environ.get("DEEPTRAIN_SERVE_MAX_MODELS", 4))
SERVE_ENV = ("DEEPTRAIN_MAX_REQUEST_BYTES", "DEEPTRAIN_REQUEST_TIMEOUT_S", "DEEPTRAIN_SERVE_MAX_MODELS")
HTTP_STATUS = {InvalidInput: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409, StorageError: 502}

api = FastAPI(
    title="deeptrain",
    version=__version__,
    description="Predictions from trained deeptrain model versions and visual search over an app's inputs "
                "(Clarifai-style resource paths).",
    responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 502, 504)},
)


def _openapi() -> dict[str, Any]:
    """FastAPI's document plus the request body models, which the routes read themselves (JSON or multipart)."""
    if api.openapi_schema is None:
        doc = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        for operations in doc["paths"].values():  # FastAPI's 422 never happens: a bad request is a 400
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            doc.get("components", {}).get("schemas", {}).pop(unused, None)
        api.openapi_schema = add_body_schemas(doc)
    return api.openapi_schema


api.openapi = _openapi  # type: ignore[method-assign]


def _error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"status": {"code": code, "description": description}}, status_code=status)


@api.exception_handler(DeeptrainError)
async def _deeptrain_error(_: Request, exc: DeeptrainError) -> JSONResponse:
    status = next((s for t, s in HTTP_STATUS.items() if isinstance(exc, t)), 400)
    return _error(status, exc.code, str(exc))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return _error(400, "invalid_input", f"invalid request body: {problems}")


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing errors (unknown path, wrong method) and malformed multipart bodies, in the API's error shape."""
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    return _error(exc.status_code, codes.get(exc.status_code, "invalid_input"), str(exc.detail))


@api.exception_handler(Exception)
async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return _error(500, "internal", f"internal error ({type(exc).__name__}); see the server log")


class _BodyLimit:
    """ASGI middleware: refuses a body over ``limit`` bytes with 413, by its Content-Length or, for a chunked
    body, as soon as what arrived passes the limit (the route reading it gets an HTTPException)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body over {self.limit} bytes (DEEPTRAIN_MAX_REQUEST_BYTES)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _error(413, "too_large", message)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    raise StarletteHTTPException(413, message)
            return event

        return await self.app(scope, limited_receive, send)


api.add_middleware(_BodyLimit, limit=MAX_REQUEST_BYTES)


def _context(settings_env: dict[str, str]) -> Context:
    return Context.from_settings(Settings.from_env(env=settings_env))


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class Predictor:
    """Loads versions on demand (LRU per replica) and predicts on batches of images."""

    def __init__(self, settings_env: dict[str, str], torch_threads: int | None = None):
        import ray
        import torch

        # as many threads as CPUs reserved for the replica (at least one): one per core of the node
        # oversubscribes it whenever anything else runs there (other replicas, the gateway, the proxy);
        # measured with bench/serve_bench.py on 2 cores: 2 threads 13.9 images/s at concurrency 32, 1 thread 20.6
        reserved = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
        torch.set_num_threads(torch_threads or max(1, int(reserved)))
        self.ctx = _context(settings_env)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_model(self, artifacts: str):
        from deeptrain.artifacts import load_model

        return await asyncio.to_thread(load_model, self.ctx.storage, artifacts)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batched(self, items: list[tuple[bytes, float | None, int | None]]) -> list[dict[str, Any]]:
        from deeptrain.inference import predict_bytes

        loaded = await self.get_model(serve.get_multiplexed_model_id())
        results: list[dict[str, Any] | None] = [None] * len(items)
        groups: dict[tuple[float | None, int | None], list[int]] = {}
        for i, (_, threshold, top_k) in enumerate(items):
            groups.setdefault((threshold, top_k), []).append(i)
        for (threshold, top_k), idx in groups.items():
            outs = await asyncio.to_thread(predict_bytes, loaded, [items[i][0] for i in idx],
                                           threshold=threshold, top_k=top_k)
            for i, out in zip(idx, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    async def predict(self, data: bytes, threshold: float | None = None, top_k: int | None = None) -> dict[str, Any]:
        return await self._batched((data, threshold, top_k))


def _clarifai_data(task: str, out: dict[str, Any], min_value: float | None) -> dict[str, Any]:
    if task == "classification":
        return {"concepts": [c for c in out["concepts"] if min_value is None or c["value"] >= min_value]}
    if task == "detection":
        return {"regions": [{"id": uuid.uuid4().hex, "region_info": {"bounding_box": r["bounding_box"]},
                             "data": {"concepts": [{"id": r["concept"], "value": r["value"]}]}}
                            for r in out["regions"]]}
    return {"embeddings": [{"vector": out["embedding"], "num_dimensions": len(out["embedding"])}]}


def _workflow_outputs(outputs: list[dict[str, Any]], min_value: float | None) -> list[dict[str, Any]]:
    """A workflow result in Clarifai's shape: after a detect step, each output's regions share the detector's ids."""
    first = outputs[0]
    region_ids = [uuid.uuid4().hex for _ in first.get("regions", [])]
    converted = []
    for out in outputs:
        task = workflow_service.STEP_TASKS[out["kind"]]
        if out["kind"] == "detect":
            data = _clarifai_data(task, out, min_value)
            for rid, region in zip(region_ids, data["regions"]):
                region["id"] = rid
        elif "regions" in out:  # a step on the detector's crops
            data = {"regions": [{"id": rid, "region_info": {"bounding_box": r["bounding_box"]},
                                 "data": _clarifai_data(task, r, min_value)} for rid, r in zip(region_ids, out["regions"])]}
        else:
            data = _clarifai_data(task, out, min_value)
        converted.append({"id": uuid.uuid4().hex, "model": {"id": out["model_id"],
                                                            "model_version": {"id": out["version_id"]}}, "data": data})
    return converted


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class Gateway:
    def __init__(self, predictor, settings_env: dict[str, str]):
        self.predictor = predictor
        self.ctx = _context(settings_env)
        self.indexes = search_service.IndexCache()

    @api.get("/healthz", summary="liveness")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="readiness: the metadata store answers",
             responses={503: {"model": ErrorResponse, "description": "the metadata store does not answer"}})
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.to_thread(self.ctx.store.ping)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return _error(503, "not_ready", f"metadata store unreachable: {type(exc).__name__}")
        return JSONResponse({"status": "ready", "version": __version__})

    @api.post("/v2/apps/{app_id}/models/{model_id}/versions/{version_id}/outputs",
              response_model=PostOutputsResponse, summary="predict with a model version",
              openapi_extra=openapi_body(PostOutputsRequest))
    async def version_outputs(self, app_id: str, model_id: str, version_id: str, request: Request,
                              authorization: str | None = Header(None)) -> dict[str, Any]:
        body = await parse_body(request, PostOutputsRequest)
        return await self._outputs(app_id, model_id, version_id, body, authorization)

    @api.post("/v2/apps/{app_id}/models/{model_id}/outputs", response_model=PostOutputsResponse,
              summary="predict with the model's default version (else its newest trained one)",
              openapi_extra=openapi_body(PostOutputsRequest))
    async def model_outputs(self, app_id: str, model_id: str, request: Request,
                            authorization: str | None = Header(None)) -> dict[str, Any]:
        body = await parse_body(request, PostOutputsRequest)
        return await self._outputs(app_id, model_id, None, body, authorization)

    def _image_bytes(self, app_id: str, k: int, inp: Input) -> bytes:
        return self._read_image(app_id, inp.data.image, f"inputs[{k}]", f"inputs[{k}].data.image")

    def _read_image(self, app_id: str, image, where: str, field: str) -> bytes:
        """The checked bytes of an ``ImageData``/``QueryImage`` (base64, stored URL or stored input id)."""
        if image.base64 is not None:
            try:
                data = base64.b64decode(image.base64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"{field}.base64 is not valid base64") from None
        elif image.url is not None:
            data = input_service.read_stored_url(self.ctx)(image.url)
        else:
            data = input_service.get_input_bytes(self.ctx, app_id, image.input_id)  # type: ignore[arg-type]
        try:
            inspect_image(data, max_bytes=self.ctx.settings.max_image_bytes,
                          max_pixels=self.ctx.settings.max_image_pixels)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        return data

    def _resolve(self, app_id: str, model_id: str, version_id: str | None, body: PostOutputsRequest,
                 authorization: str | None):
        key_service.authorize(self.ctx, authorization, app_id, "predict")
        model = model_service.get_model(self.ctx, app_id, model_id)
        version = model_service.get_trained_version(self.ctx, app_id, model_id, version_id)
        images = [self._image_bytes(app_id, k, inp) for k, inp in enumerate(body.inputs)]
        return model, version, images

    async def _outputs(self, app_id: str, model_id: str, version_id: str | None, body: PostOutputsRequest,
                       authorization: str | None) -> dict[str, Any]:
        model, version, images = await asyncio.to_thread(self._resolve, app_id, model_id, version_id, body,
                                                         authorization)
        config = body.model.output_info.output_config
        threshold = config.min_value if model["task"] == "detection" else None
        handle = self.predictor.options(multiplexed_model_id=version["artifacts"])
        calls = [handle.predict.remote(data, threshold, config.max_concepts) for data in images]
        try:
            outs = await asyncio.wait_for(asyncio.gather(*calls), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            return _error(504, "timeout", f"prediction took over {REQUEST_TIMEOUT_S:g}s (DEEPTRAIN_REQUEST_TIMEOUT_S)")
        ref = {"id": model_id, "model_version": {"id": version["id"]}}
        outputs = []
        for inp, out in zip(body.inputs, outs):
            input_ref = {"id": inp.id or inp.data.image.input_id}
            outputs.append({"id": uuid.uuid4().hex, "input": input_ref, "model": ref,
                            "data": _clarifai_data(model["task"], out, config.min_value)})
        return {"status": {"code": 10000, "description": "Ok"}, "outputs": outputs}

    @api.post("/v2/apps/{app_id}/workflows/{workflow_id}/results", response_model=PostWorkflowResultsResponse,
              summary="run a workflow (e.g. detect -> crop each region -> classify/embed) on each input",
              openapi_extra=openapi_body(PostWorkflowResultsRequest))
    async def workflow_results(self, app_id: str, workflow_id: str, request: Request,
                               authorization: str | None = Header(None)) -> dict[str, Any]:
        body = await parse_body(request, PostWorkflowResultsRequest)
        try:
            results = await asyncio.wait_for(asyncio.to_thread(self._run_workflow, app_id, workflow_id, body,
                                                               authorization), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            return _error(504, "timeout", f"workflow took over {REQUEST_TIMEOUT_S:g}s (DEEPTRAIN_REQUEST_TIMEOUT_S)")
        min_value = body.output_config.min_value
        ok = {"code": 10000, "description": "Ok"}
        return {"status": ok, "workflow": {"id": workflow_id},
                "results": [{"status": ok, "input": {"id": inp.id or inp.data.image.input_id},
                             "outputs": _workflow_outputs(r["outputs"], min_value)}
                            for inp, r in zip(body.inputs, results)]}

    def _run_workflow(self, app_id: str, workflow_id: str, body: PostWorkflowResultsRequest,
                      authorization: str | None) -> list[dict[str, Any]]:
        """In a worker thread: the workflow service's orchestration, each step on the Predictor (batched)."""
        key_service.authorize(self.ctx, authorization, app_id, "predict")
        workflow_service.get_workflow(self.ctx, app_id, workflow_id)
        images = [self._image_bytes(app_id, k, inp) for k, inp in enumerate(body.inputs)]
        config = body.output_config
        return workflow_service.run_workflow(self.ctx, app_id, workflow_id, images, self._predict_blocking,
                                             threshold=config.min_value, top_k=config.max_concepts)

    def _predict_blocking(self, version: dict[str, Any], images: list[bytes], threshold: float | None,
                          top_k: int | None) -> list[dict[str, Any]]:
        """Predictions of one version from a worker thread: all images sent at once, so the Predictor batches them."""
        handle = self.predictor.options(multiplexed_model_id=version["artifacts"])
        responses = [handle.predict.remote(data, threshold, top_k) for data in images]
        return [r.result(timeout_s=REQUEST_TIMEOUT_S) for r in responses]

    @api.post("/v2/apps/{app_id}/searches", response_model=PostSearchesResponse,
              summary="visual search: the app's inputs nearest to an image or a stored input (search scope)",
              openapi_extra=openapi_body(PostSearchesRequest))
    async def searches(self, app_id: str, request: Request,
                       authorization: str | None = Header(None)) -> dict[str, Any]:
        body = await parse_body(request, PostSearchesRequest)
        index, vector, data = await asyncio.to_thread(self._search_query, app_id, body, authorization)
        if vector is None:  # embed the query image on the Predictor, batched with other requests of the version
            handle = self.predictor.options(multiplexed_model_id=index.artifacts)
            try:
                out = await asyncio.wait_for(handle.predict.remote(data), REQUEST_TIMEOUT_S)
            except asyncio.TimeoutError:
                return _error(504, "timeout",
                              f"embedding took over {REQUEST_TIMEOUT_S:g}s (DEEPTRAIN_REQUEST_TIMEOUT_S)")
            vector = out["embedding"]
        hits = await asyncio.to_thread(index.query, vector, body.top_k, body.concept, body.query.input_id)
        return {"status": {"code": 10000, "description": "Ok"},
                "model": {"id": index.manifest["model_id"], "model_version": {"id": index.manifest["version_id"]}},
                "hits": [{"input": {"id": h["input_id"]}, "score": h["score"],
                          "concepts": [{"id": c, "value": 1.0} for c in h["concepts"]]} for h in hits]}

    def _search_query(self, app_id: str, body: PostSearchesRequest, authorization: str | None):
        key_service.authorize(self.ctx, authorization, app_id, "search")
        index = self.indexes.get(self.ctx, app_id)
        search_service.check_concept(self.ctx, app_id, body.concept)
        query = body.query
        image = None if query.image is None else self._read_image(app_id, query.image, "query.image", "query.image")
        vector, data = search_service.query_source(self.ctx, app_id, index, image, query.input_id)
        return index, vector, data


def build_app(settings: Settings, *, predictor_replicas: int = 1, predictor_cpus: float = 0.5):
    """The bound application; replicas load weights from the settings' storage (local or S3)."""
    from deeptrain.jobs.cluster import worker_env

    env = {"env_vars": {**worker_env(settings.as_env()),
                        **{k: os.environ[k] for k in SERVE_ENV if k in os.environ}}}
    predictor = Predictor.options(num_replicas=predictor_replicas,
                                  ray_actor_options={"num_cpus": predictor_cpus, "runtime_env": env})
    return Gateway.options(ray_actor_options={"num_cpus": 0, "runtime_env": env}).bind(
        predictor.bind(settings.as_env()), settings.as_env())


def app_builder(args: dict[str, str]):
    """``serve run``/``serve deploy`` entry (``serve/config.yaml``): settings from the environment."""
    return build_app(Settings.from_env(), predictor_cpus=float(args.get("predictor_cpus", 1)))


def start(settings: Settings, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> str:
    """Deploy the application on the current (or an embedded) Ray cluster; returns its base URL."""
    from deeptrain.jobs.cluster import ensure_ray

    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(settings, **options), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def stop() -> None:
    """Remove the application and shut Serve down: its HTTP proxy would otherwise keep the
    port, and a later ``start`` on another port would still be answered on the old one."""
    serve.delete(APP_NAME)
    serve.shutdown()
