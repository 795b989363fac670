"""Clarifai's gRPC service (``clarifai.api.V2``) on the Serve gateway, through Ray Serve's gRPC proxy.

Ray Serve's proxy (``serve.start(grpc_options=...)`` in ``serve/app.py``, with ``GRPC_SERVICER``:
``serve/v2/grpc_service.py``) routes a
call of ``/clarifai.api.V2/<Method>`` to the ingress deployment's method of that name, with the request proto
and a ``grpc_context``. ``GrpcMethods`` (a base of the ``Gateway``) answers:

- ``PostModelOutputs``, ``PostWorkflowResults``, ``PostInputsSearches``: the request proto as the dict the JSON
  client posts (``MessageToDict(preserving_proto_field_name=True)``: bytes as base64), validated by the same
  body models and run by the same code as the HTTP routes (``serve/inference_calls.py``), the answer parsed into
  the response proto. The key comes from the call's ``authorization`` metadata (``Key <key>``); the app from
  ``user_app_id.app_id``, else the app key's own app.
- every other V2 method: NOT_IMPLEMENTED (10040), generated here from the service descriptor.

No method raises: any error is a response whose ``status`` carries Clarifai's code (as Clarifai answers), so
the client reads it instead of a gRPC error. The proxy binds all interfaces; with a second Serve application
on the same cluster the proxy needs ``application`` metadata, which Clarifai's client does not send: serve
gRPC from a cluster with this one application.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from clarifai_grpc.grpc.api import service_pb2
from google.protobuf import json_format, message_factory
from pydantic import ValidationError

from deeptrain.errors import Forbidden, InvalidInput
from deeptrain.services import keys as key_service
from deeptrain.wire import codes
from serve import inference_calls
from serve.predictor_calls import Timeout
from serve.schemas import PostInputsSearchesRequest, PostOutputsRequest, PostWorkflowResultsRequest
from serve.v2 import grpc_service
from serve.v2.envelope import status
from serve.v2.state import Services

log = logging.getLogger("deeptrain.serve")
GRPC_SERVICER = grpc_service.SERVICER  # Clarifai's servicer function, its requests made picklable
SERVICE = service_pb2.DESCRIPTOR.services_by_name["V2"]

Handler = Callable[[Services, str, dict[str, Any]], Awaitable[dict[str, Any]]]


def authorization(grpc_context) -> str | None:
    """The call's ``authorization`` metadata (the JSON client's header), if any."""
    if grpc_context is None:
        return None
    return next((value for key, value in grpc_context.invocation_metadata() if key.lower() == "authorization"), None)


def app_of(svc: Services, auth: str | None, doc: dict[str, Any], scope: str) -> str:
    """The app the call acts in, its key checked for ``scope`` (an HTTP route's ``access.check``)."""
    key = key_service.authenticate(svc.ctx, auth)
    app_id = (doc.get("user_app_id") or {}).get("app_id")
    if not app_id:
        if key["kind"] == "user":
            raise Forbidden("a user key acts in any app: set user_app_id.app_id", "app_key")
        app_id = key["app_id"]
    key_service.check_access(key, app_id, scope)
    return app_id


def _required(doc: dict[str, Any], field: str) -> str:
    if not doc.get(field):
        raise InvalidInput(f"{field} is required")
    return doc[field]


async def _outputs(svc: Services, app_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    body = PostOutputsRequest.model_validate(doc)
    return await inference_calls.outputs(svc, app_id, _required(doc, "model_id"), doc.get("version_id") or None, body)


async def _workflow(svc: Services, app_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    body = PostWorkflowResultsRequest.model_validate(doc)
    return await inference_calls.workflow_results(svc, app_id, _required(doc, "workflow_id"), body)


async def _search(svc: Services, app_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    return await inference_calls.inputs_search(svc, app_id, PostInputsSearchesRequest.model_validate(doc))


def error_body(exc: BaseException, path: str, redact: Callable[[str], str]) -> dict[str, Any]:
    """The body of a failed call (the HTTP routes' envelope and code for the same error)."""
    if isinstance(exc, Timeout):
        return {"status": status(codes.RPC_REQUEST_TIMEOUT, "the request's time ran out (DEEPTRAIN_REQUEST_TIMEOUT_S)")}
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return {"status": status(codes.invalid_body_code(path), f"invalid request: {problems}")}
    code, http_status = codes.error_status(exc, path)
    if http_status >= 500 and code == codes.INTERNAL_SERVER_ISSUE:
        log.error("gRPC call failed", exc_info=exc)
        return {"status": status(code, f"internal error ({type(exc).__name__}); see the server log")}
    return {"status": status(code, redact(str(exc)))}


async def call(svc: Services, request, grpc_context, handler: Handler, scope: str, path: str, response_type,
               redact: Callable[[str], str] = lambda text: text):
    """One implemented method: proto -> dict -> the shared handler -> proto; errors as a status, never raised."""
    try:
        doc = json_format.MessageToDict(request, preserving_proto_field_name=True)
        app_id = await asyncio.to_thread(app_of, svc, authorization(grpc_context), doc, scope)
        body = await handler(svc, app_id, doc)
    except Exception as exc:  # noqa: BLE001 - every failure is an answer
        body = error_body(exc, path, redact)
    try:
        return json_format.ParseDict(body, response_type(), ignore_unknown_fields=True)
    except Exception as exc:  # noqa: BLE001 - an answer the proto cannot hold is a bug: say so, in the status
        log.error("gRPC answer does not fit %s", response_type.__name__, exc_info=exc)
        return json_format.ParseDict(error_body(exc, path, redact), response_type(), ignore_unknown_fields=True)


class GrpcMethods:
    """The V2 methods of the ``Gateway`` (which sets ``services`` and ``redact``)."""

    services: Services
    redact: Callable[[str], str]

    async def PostModelOutputs(self, request, grpc_context=None):
        return await call(self.services, request, grpc_context, _outputs, "predict", "/outputs",
                          service_pb2.MultiOutputResponse, self.redact)

    async def PostWorkflowResults(self, request, grpc_context=None):
        return await call(self.services, request, grpc_context, _workflow, "predict", "/workflows/results",
                          service_pb2.PostWorkflowResultsResponse, self.redact)

    async def PostInputsSearches(self, request, grpc_context=None):
        return await call(self.services, request, grpc_context, _search, "search", "/inputs/searches",
                          service_pb2.MultiSearchResponse, self.redact)


IMPLEMENTED = frozenset(name for name in vars(GrpcMethods) if name[:1].isupper())


def not_implemented(method) -> dict[str, Any]:
    return {"status": status(codes.NOT_IMPLEMENTED, f"{method.name} is not implemented by deeptrain")}


def _unimplemented(method):
    """A method answering NOT_IMPLEMENTED in its own response type (one message for a streaming one)."""
    response_type = message_factory.GetMessageClass(method.output_type)

    def answer():
        return json_format.ParseDict(not_implemented(method), response_type())

    if method.server_streaming:
        async def stream(self, request, grpc_context=None):
            yield answer()
        stream.__name__ = method.name
        return stream

    async def unary(self, request, grpc_context=None):
        return answer()
    unary.__name__ = method.name
    return unary


for _method in SERVICE.methods:
    if _method.name not in IMPLEMENTED:
        setattr(GrpcMethods, _method.name, _unimplemented(_method))
