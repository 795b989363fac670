"""Clarifai's response envelope: ``status: {code, description, details}`` on every answer, with the
numeric codes of ``deeptrain.wire.codes`` and an HTTP status that still means something to plain REST users."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from deeptrain.wire import codes

OK = {"code": codes.SUCCESS, "description": "Ok"}


def status(code: int, description: str, details: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "description": description}
    if details:
        body["details"] = details
    return body


def ok(**fields: Any) -> dict[str, Any]:
    """A successful answer: the success status and ``fields``."""
    return {"status": OK, **fields}


def error(http_status: int, code: int, description: str, details: str = "") -> JSONResponse:
    return JSONResponse({"status": status(code, description, details)}, status_code=http_status)


def exception_response(exc: BaseException, path: str, redact=lambda text: text) -> JSONResponse:
    """The answer to an exception raised while serving ``path`` (its description redacted)."""
    code, http_status = codes.error_status(exc, path)
    if http_status >= 500 and code == codes.INTERNAL_SERVER_ISSUE:
        return error(http_status, code, f"internal error ({type(exc).__name__}); see the server log")
    return error(http_status, code, redact(str(exc)))
