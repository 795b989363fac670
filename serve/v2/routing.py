"""One handler, every Clarifai path form: ``route(router, "GET", "/inputs/{input_id}", scope="inputs")``
registers ``/v2/users/{user_id}/apps/{app_id}/inputs/{input_id}``, ``/v2/apps/{app_id}/inputs/{input_id}``
and ``/v2/inputs/{input_id}`` (the app from the key); ``need=USER``/``ANY`` routes live outside an app:
``/v2/users/{user_id}/…`` and ``/v2/…``.

The handler takes ``access: Access`` (filled by the form's dependency, ``access.py``) and its own path
and query parameters; it reads its body itself, after the key is checked (``read_body``).
Register fixed segments before parameters (``/inputs/searches`` before ``/inputs/{input_id}``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from serve.bodies import json_body
from serve.v2.access import ANY, APP, USER, Access, dependency

M = TypeVar("M", bound=BaseModel)
FORMS = {APP: (("users", "/v2/users/{user_id}/apps/{app_id}"), ("apps", "/v2/apps/{app_id}"), ("short", "/v2")),
         USER: (("users", "/v2/users/{user_id}"), ("short", "/v2")),
         ANY: (("users", "/v2/users/{user_id}"), ("short", "/v2"))}


class Lenient(BaseModel):
    """A request body in Clarifai's shape: fields the client sends that deeptrain has no use for (e.g.
    ``user_app_id``) are ignored; the ones with meaning are checked."""

    model_config = ConfigDict(extra="ignore")


async def read_body(request: Request, model: type[M]) -> M:
    """The JSON body as ``model`` (an empty body is ``{}``); a bad one is a 400."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def route(router: APIRouter, method: str, path: str, *, scope: str | None, need: str = APP,
          body: type[BaseModel] | None = None, forms: tuple[str, ...] | None = None, short: str | None = None,
          **options: Any):
    """Register the decorated handler in each path form of ``need`` (``forms``: only those; ``short``: the
    short form's path when it is not ``path``, as GetApp's ``/v2/app``)."""
    def register(handler: Callable) -> Callable:
        signature = inspect.signature(handler)
        hints = typing.get_type_hints(handler)  # resolved here: FastAPI would look names up in this module
        for form, prefix in FORMS[need]:
            if forms is not None and form not in forms:
                continue

            @functools.wraps(handler)
            async def endpoint(*args: Any, **kwargs: Any) -> Any:
                return await handler(*args, **kwargs)

            params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation),
                                default=Depends(dependency(form, scope, need)) if hints.get(p.name) is Access
                                else p.default)
                      for p in signature.parameters.values()]
            endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
                parameters=params, return_annotation=hints.get("return", signature.return_annotation))
            extra = {**(json_body(body) if body is not None else {}), "x-deeptrain-scope": scope or "none",
                     "x-deeptrain-need": need}
            full = "/v2" + short if form == "short" and short is not None else prefix + path
            router.add_api_route(full, endpoint, methods=[method], openapi_extra=extra,
                                 operation_id=f"{handler.__name__}__{form}", **options)
        return handler
    return register
