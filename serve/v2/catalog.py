"""Every Clarifai HTTP binding deeptrain does not implement answers NOT_IMPLEMENTED (10040, HTTP 501).

The bindings are read at import from ``clarifai_grpc``'s service descriptor (each V2 method's
``google.api.http`` option and its ``additional_bindings``). ``install`` runs after every router is
included: a (verb, path template) that an existing route serves is left alone; any other gets a route that
checks the caller's key (any valid key: an unknown caller learns nothing) and answers 10040. Such a route
goes before the existing routes when one of them would otherwise catch its paths (``GET /v2/concepts/status``
before ``GET /v2/concepts/{concept_id}``) and it catches none of theirs, else after them. Not in the OpenAPI
document.
Paths that are no Clarifai binding at all answer 11101/404 (the error handlers of ``serve/middleware.py``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from google.api import annotations_pb2
from starlette.routing import compile_path

from deeptrain.services import keys as key_service
from deeptrain.wire import codes
from serve.v2.envelope import error
from serve.v2.grpc import SERVICE
from serve.v2.state import services

VERBS = ("get", "put", "post", "delete", "patch")
_PARAM = re.compile(r"\{([^}]+)\}")


def bindings() -> list[tuple[str, str, str]]:
    """(method name, HTTP verb, path template) of every V2 binding, in descriptor order."""
    out = []
    for method in SERVICE.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        for one in (rule, *rule.additional_bindings):
            verb = one.WhichOneof("pattern")
            if verb in VERBS:
                out.append((method.name, verb.upper(), getattr(one, verb)))
    return out


def shape(path: str) -> str:
    """A path template with its parameters unnamed: ``/v2/inputs/{}``."""
    return _PARAM.sub("{}", path)


def _fastapi_path(template: str) -> str:
    """Clarifai's ``{user_app_id.app_id}`` as a FastAPI parameter name."""
    return _PARAM.sub(lambda m: "{" + re.sub(r"\W", "_", m.group(1)) + "}", template)


def _sample(template: str) -> str:
    return _PARAM.sub("x0", template)


def _answer(method_name: str):
    async def not_implemented(request: Request, authorization: str | None = Header(None)) -> JSONResponse:
        await asyncio.to_thread(key_service.authenticate, services(request).ctx, authorization)
        return error(501, codes.NOT_IMPLEMENTED, f"{method_name} is not implemented by deeptrain")
    return not_implemented


def served_routes(routes: list[Any]) -> list[APIRoute]:
    """Every route of a route list, those of included routers too (FastAPI keeps them nested)."""
    out: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(r)
        elif hasattr(r, "original_router"):
            out.extend(served_routes(r.original_router.routes))
    return out


def missing(api: FastAPI) -> list[tuple[str, str, str]]:
    """The bindings no route of ``api`` serves (a verb and template shape already served counts as served)."""
    served = {(verb, shape(r.path)) for r in served_routes(api.router.routes) for verb in r.methods}
    out, seen = [], set()
    for name, verb, template in bindings():
        if (verb, shape(template)) not in served and (verb, shape(template)) not in seen:
            seen.add((verb, shape(template)))
            out.append((name, verb, template))
    return out


def _early(served: list[APIRoute], verb: str, template: str) -> bool:
    """Whether ``template`` must come before the routes: one of them would catch its paths (``/inputs/{input_id}``
    catches ``/inputs/status``) and it would catch none of theirs."""
    regex, _, _ = compile_path(_fastapi_path(template))
    same_verb = [r for r in served if verb in r.methods]
    return (any(r.path_regex.match(_sample(template)) for r in same_verb)
            and not any(regex.match(_sample(r.path)) for r in same_verb))


def install(api: FastAPI) -> int:
    """Add a NOT_IMPLEMENTED route for every missing binding; returns how many."""
    served = served_routes(api.router.routes)
    todo = missing(api)
    early = APIRouter()
    for name, verb, template in todo:
        target = early if _early(served, verb, template) else api
        target.add_api_route(_fastapi_path(template), _answer(name), methods=[verb], include_in_schema=False,
                             name=f"not_implemented_{name}")
    routes = api.router.routes
    first = next((k for k, r in enumerate(routes) if r in served or hasattr(r, "original_router")), len(routes))
    before = len(routes)
    api.include_router(early)
    added = routes[before:]
    del routes[before:]
    routes[first:first] = added
    return len(todo)
