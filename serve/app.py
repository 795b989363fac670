"""The Ray Serve application: a FastAPI gateway in front of batching predictors.

(No ``from __future__ import annotations`` here: FastAPI reads the route signatures that
Serve rewrites for the ingress class, and string annotations are not resolved there.)

Gateway (ingress, no CPU reserved): a FastAPI app of Clarifai's v2 routes (``serve/v2/``: the control
plane, and the predictions, searches and workflow runs of ``serve/inference_calls.py``), each checking its
key before it reads the body, and the same predictions over gRPC (``serve/v2/grpc.py``: Clarifai's V2 service
through Ray Serve's gRPC proxy, when ``start`` gets a ``grpc_port``). Clarifai bindings deeptrain lacks answer
NOT_IMPLEMENTED (``serve/v2/catalog.py``). Images go to the Predictor (``serve/predictor.py``, the version's
artifact prefix passed with the images, batched; the calls and their deadline: ``serve/predictor_calls.py``).
Request bodies: ``serve/bodies.py``, ``serve/schemas.py``; errors: ``serve/middleware.py``; response shapes:
``serve/responses.py``.
"""

import asyncio
import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from ray import serve

from deeptrain import __version__
from deeptrain import search as search_service
from deeptrain.config import Settings
from deeptrain.services.context import Context
from deeptrain.wire import codes
from serve import console
from serve.bodies import install_openapi
from serve.middleware import BodyLimit, install_error_handlers
from serve.local_predictor import LocalPredictor
from serve.predictor import Predictor
from serve.schemas import ErrorResponse
from serve.v2 import catalog
from serve.v2.control import include_control_plane
from serve.v2.envelope import error
from serve.v2.grpc import GRPC_SERVICER, GrpcMethods
from serve.v2.state import Services, services

APP_NAME = "deeptrain"
# gRPC (Clarifai's V2 service) when asked for: the port Clarifai's insecure client defaults to. Ray Serve's gRPC
# proxy listens on every interface, whatever the HTTP host: `deeptrain serve` starts it only with --grpc-port
DEFAULT_GRPC_PORT = 18080
log = logging.getLogger("deeptrain.serve")

# the Swagger UI at /docs and ReDoc at /redoc load their scripts from this server (fastapi-offline), never a CDN
api = FastAPIOffline(
    title="deeptrain",
    version=__version__,
    description="deeptrain's service: Clarifai's v2 API over JSON — apps, concepts, inputs, annotations, dataset "
                "versions, models, training (model versions), tuning, keys — and predictions, workflow results and "
                "visual search. Every answer carries Clarifai's status envelope with its numeric codes.",
    responses={code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 501, 502, 503, 504)},
)
install_openapi(api)
install_error_handlers(api)
include_control_plane(api)
console.install(api)  # the web console at / (serve/console/): pages and their assets
api.add_middleware(BodyLimit, limit=Settings.from_env().max_request_bytes)  # the actor's env: build_app sets it


@api.get("/healthz", summary="liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@api.get("/readyz", summary="readiness: the metadata store answers",
         responses={503: {"model": ErrorResponse, "description": "the metadata store does not answer"}})
async def readyz(request: Request) -> JSONResponse:
    try:
        await asyncio.to_thread(services(request).ctx.store.ping)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return error(503, codes.RPC_SERVER_UNAVAILABLE, f"metadata store unreachable: {type(exc).__name__}")
    return JSONResponse({"status": "ready", "version": __version__})


# after every route: Clarifai's other bindings answer NOT_IMPLEMENTED
catalog.install(api)


def replica_api(services_: Services, redact) -> FastAPIOffline:
    """``api`` with a replica's services (the Gateway refers to ``api`` only through this function, so that
    Serve, which pickles the Gateway class, imports the app in the replica instead of pickling it)."""
    api.state.services, api.state.redact = services_, redact
    return api


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress()
class Gateway(GrpcMethods):
    """HTTP: ``api`` (handed to Serve at replica start, with this replica's services on its state); gRPC: the
    methods of ``GrpcMethods``, on the same services."""

    def __init__(self, predictor, settings_env: dict[str, str]):
        ctx = Context.from_settings(Settings.from_env(env=settings_env))
        if predictor is None:  # build_app(model_in_gateway=True): the model runs in this replica (one hop)
            predictor = LocalPredictor(settings_env)
        self.services = Services(ctx, predictor, ctx.settings.request_timeout_s, search_service.IndexCache())
        home, storage = str(ctx.settings.home), ctx.storage
        self.redact = lambda text: storage.scrub(text).replace(home, "<home>")

    def __serve_build_asgi_app__(self):
        return replica_api(self.services, self.redact)

    async def predictor_stats(self) -> dict[str, Any]:
        """The batch sizes of the Predictor this replica calls (its own, or a replica of the deployment)."""
        return await self.services.predictor.stats.remote()


# Ray Serve's own switches for the replicas (read when a replica starts): user code on the replica's event loop
# instead of a thread of its own, no per-request log line on stderr. Measured (200 concurrent handle calls to the
# Predictor, 32 px, 2 cores): 62.6 images/s, the forward busy 98% of the time; with Serve's gRPC transport
# between deployments as well (RAY_SERVE_USE_GRPC_BY_DEFAULT=1) 8.8 images/s, the forward busy 9%. The handle
# routers stay on their own loop: the workflow route calls the Predictor from a worker thread.
REPLICA_SERVE_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                     "RAY_SERVE_LOG_TO_STDERR": "0"}


def replica_env(settings: Settings) -> dict[str, dict[str, str]]:
    """The replicas' runtime_env: the settings, the storage credentials and ``REPLICA_SERVE_ENV``."""
    from deeptrain.cluster import worker_env

    return {"env_vars": {**REPLICA_SERVE_ENV, **worker_env(settings)}}


def build_app(settings: Settings, *, predictor_replicas: int = 1, predictor_cpus: float = 0.5,
              model_in_gateway: bool = False):
    """The bound application; replicas load weights from the settings' storage (local or S3). With
    ``model_in_gateway`` each Gateway replica runs the model itself (``serve/local_predictor.py``): one hop,
    ``predictor_replicas`` Gateway replicas of ``predictor_cpus`` each."""
    env = replica_env(settings)
    if model_in_gateway:
        return Gateway.options(num_replicas=predictor_replicas,
                               ray_actor_options={"num_cpus": predictor_cpus, "runtime_env": env}).bind(
            None, settings.as_env())
    predictor = Predictor.options(num_replicas=predictor_replicas,
                                  ray_actor_options={"num_cpus": predictor_cpus, "runtime_env": env})
    return Gateway.options(ray_actor_options={"num_cpus": 0, "runtime_env": env}).bind(
        predictor.bind(settings.as_env()), settings.as_env())


def app_builder(args: dict[str, str]):
    """``serve run``/``serve deploy`` entry (``serve/config.yaml``): settings from the environment."""
    return build_app(Settings.from_env(), predictor_cpus=float(args.get("predictor_cpus", 1)))


def start(settings: Settings, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = None,
          ingress: str = "proxy", **options: Any) -> str:
    """Deploy the application on the current (or an embedded) Ray cluster; returns its base URL. With
    ``grpc_port``, Clarifai's V2 gRPC service too (Ray Serve's gRPC proxy: every interface, that port).
    ``ingress``: Ray Serve's HTTP proxy or HAProxy (``serve/ingress.py``; HAProxy only on a Ray started for it)."""
    import os

    import ray

    from deeptrain.cluster import ensure_ray
    from serve import ingress as ingresses

    ingresses.require_known(ingress)
    starts_local_ray = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    ensure_ray(env=ingresses.local_ray_env(ingress) if starts_local_ray else None)
    ingresses.require(ingress)
    grpc_options = {"port": grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]} if grpc_port else None
    serve.start(http_options={"host": host, "port": port}, grpc_options=grpc_options)
    serve.run(build_app(settings, **options), name=APP_NAME, route_prefix="/", blocking=False)
    others = sorted(set(serve.status().applications) - {APP_NAME})
    if grpc_port and others:
        log.warning("gRPC calls without 'application' metadata (Clarifai's client sends none) fail while other "
                    "Serve applications run on this cluster: %s", ", ".join(others))
    return f"http://{host}:{port}"


def stop() -> None:
    """Remove the application and shut Serve down: its HTTP proxy would otherwise keep the
    port, and a later ``start`` on another port would still be answered on the old one."""
    serve.delete(APP_NAME)
    serve.shutdown()
