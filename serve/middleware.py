"""The API's error shape (a 504 for a request past its time among them) and its request-body limit.

Every error is ``{"status": {"code", "description"}}`` with a 4xx, 503 or 504 status (a 500 never
carries a stack trace). Descriptions pass through ``api.state.redact`` (set by the
gateway: the storage root and the server's home become placeholders), so no message of
any layer can tell a caller where the service keeps its data.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deeptrain.errors import Conflict, DeeptrainError, Forbidden, InvalidInput, NotFound, StorageError, Unauthorized

log = logging.getLogger("deeptrain.serve")

HTTP_STATUS = {InvalidInput: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409, StorageError: 502}


def error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"status": {"code": code, "description": description}}, status_code=status)


def timeout_response(what: str, seconds: float) -> JSONResponse:
    """The 504 of a request whose ``request_timeout_s`` ran out during ``what``."""
    return error(504, "timeout", f"{what} took over {seconds:g}s (DEEPTRAIN_REQUEST_TIMEOUT_S)")


def install_error_handlers(api: FastAPI) -> None:
    api.state.redact = lambda text: text

    @api.exception_handler(DeeptrainError)
    async def _deeptrain_error(request: Request, exc: DeeptrainError) -> JSONResponse:
        status = next((s for t, s in HTTP_STATUS.items() if isinstance(exc, t)), 400)
        return error(status, exc.code, request.app.state.redact(str(exc)))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error(400, "invalid_input", f"invalid request body: {problems}")

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing errors (unknown path, wrong method) and malformed multipart bodies, in the API's error shape."""
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return error(exc.status_code, codes.get(exc.status_code, "invalid_input"), str(exc.detail))

    @api.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error(500, "internal", f"internal error ({type(exc).__name__}); see the server log")


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
            return await error(413, "too_large", message)(scope, receive, send)
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
