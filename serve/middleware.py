"""The API's error shape (a 504 for a request past its time among them) and its request-body limit.

Every error is ``{"status": {"code", "description"}}``, ``code`` one of Clarifai's numeric status codes
(``deeptrain.wire.codes``), with a 4xx, 5xx status (a 500 never carries a stack trace). Descriptions pass through ``api.state.redact`` (set by the
gateway: the storage root and the server's home become placeholders), so no message of
any layer can tell a caller where the service keeps its data.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deeptrain.errors import DeeptrainError
from deeptrain.wire import codes
from serve.v2.envelope import error, exception_response

log = logging.getLogger("deeptrain.serve")


def timeout_response(what: str, seconds: float) -> JSONResponse:
    """The 504 of a request whose ``request_timeout_s`` ran out during ``what``."""
    return error(504, codes.RPC_REQUEST_TIMEOUT, f"{what} took over {seconds:g}s (DEEPTRAIN_REQUEST_TIMEOUT_S)")


def install_error_handlers(api: FastAPI) -> None:
    api.state.redact = lambda text: text

    @api.exception_handler(DeeptrainError)
    async def _deeptrain_error(request: Request, exc: DeeptrainError) -> JSONResponse:
        return exception_response(exc, request.url.path, request.app.state.redact)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        broken = any(e.get("type") == "json_invalid" for e in exc.errors())
        return error(400, codes.invalid_body_code(request.url.path, broken), f"invalid request body: {problems}")

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing errors (unknown path, wrong method) and malformed multipart bodies, in the API's error shape."""
        by_status = {404: codes.CONN_DOES_NOT_EXIST, 405: codes.CONN_METHOD_NOT_ALLOWED,
                     413: codes.RPC_MAX_MESSAGE_SIZE_EXCEEDED}
        return error(exc.status_code, by_status.get(exc.status_code, codes.CONN_BAD_REQUEST_FORMAT), str(exc.detail))

    @api.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return exception_response(exc, request.url.path)


class BodyLimit:
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
            return await error(413, codes.RPC_MAX_MESSAGE_SIZE_EXCEEDED, message)(scope, receive, send)
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
