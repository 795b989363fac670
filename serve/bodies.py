"""Request bodies: JSON in Clarifai's shapes, or multipart/form-data uploads, into the same pydantic models.

A multipart request carries image files as ``image`` parts (repeatable for outputs and
workflow results, exactly one for searches) and its options as plain form fields. It is
rewritten into the JSON request's shape (each file as a base64 image, its filename as the
input id) and validated by the same model, so both kinds of request go down one path and
fail with the same messages. ``openapi_body`` documents both content types of a route, and
``install_openapi`` puts the body models into the API's document.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from deeptrain.errors import InvalidInput
from serve.schemas import (MAX_CONCEPTS, MAX_ID_CHARS, MAX_INPUTS_PER_REQUEST, PostOutputsRequest, PostSearchesRequest,
                           PostWorkflowResultsRequest)

M = TypeVar("M", bound=BaseModel)

_FILE = {"type": "string", "format": "binary"}
_CONFIG_FIELDS = {
    "max_concepts": {"type": "integer", "minimum": 1, "maximum": MAX_CONCEPTS,
                     "description": "classification: only the top k concepts"},
    "min_value": {"type": "number", "minimum": 0, "maximum": 1,
                  "description": "drop concepts (detection: regions) scoring below it"},
}
_IMAGES = {"type": "array", "items": _FILE, "minItems": 1, "maxItems": MAX_INPUTS_PER_REQUEST,
           "description": "image files, one input each (the filename is echoed as the input id)"}


async def _files(form: FormData) -> list[dict[str, Any]]:
    parts = form.getlist("image")
    if not parts:
        raise InvalidInput("multipart body has no 'image' file part")
    inputs = []
    for k, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise InvalidInput(f"multipart part 'image' number {k} is a text field, not a file")
        data = await part.read()
        inputs.append({"id": part.filename or None, "data": {"image": {"base64": base64.b64encode(data).decode()}}})
    return inputs


def _options(form: FormData, names: set[str]) -> dict[str, Any]:
    unknown = sorted(set(form.keys()) - names - {"image"})
    if unknown:
        raise InvalidInput(f"unknown multipart field(s) {', '.join(map(repr, unknown))}; "
                           f"use image, {', '.join(sorted(names))}")
    options = {}
    for name in names & set(form.keys()):
        value = form[name]
        if isinstance(value, UploadFile):
            raise InvalidInput(f"multipart field {name!r} must be a text field, not a file")
        options[name] = value
    return options


async def _outputs(form: FormData) -> dict[str, Any]:
    config = _options(form, set(_CONFIG_FIELDS))
    return {"inputs": await _files(form), "model": {"output_info": {"output_config": config}}}


async def _workflow(form: FormData) -> dict[str, Any]:
    config = _options(form, set(_CONFIG_FIELDS))
    return {"inputs": await _files(form), "output_config": config}


async def _search(form: FormData) -> dict[str, Any]:
    options = _options(form, {"top_k", "concept"})
    inputs = await _files(form)
    if len(inputs) != 1:
        raise InvalidInput(f"a search takes exactly one 'image' file part, got {len(inputs)}")
    return {"query": {"image": inputs[0]["data"]["image"]}, **options}


_FORMS: dict[type[BaseModel], tuple[Callable, dict[str, Any]]] = {
    PostOutputsRequest: (_outputs, {"image": _IMAGES, **_CONFIG_FIELDS}),
    PostWorkflowResultsRequest: (_workflow, {"image": _IMAGES, **_CONFIG_FIELDS}),
    PostSearchesRequest: (_search, {
        "image": {**_FILE, "description": "the query image"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "concept": {"type": "string", "maxLength": MAX_ID_CHARS, "description": "only inputs labelled with this concept id"},
    }),
}


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's body as ``model``: multipart/form-data as described above, anything else read as JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            to_document, _ = _FORMS[model]
            try:
                form = await request.form(max_files=MAX_INPUTS_PER_REQUEST, max_fields=8)
            except HTTPException as exc:
                if exc.status_code != 400:
                    raise
                raise InvalidInput(f"invalid multipart body: {exc.detail}") from None
            try:
                return model.model_validate(await to_document(form))
            finally:
                await form.close()
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body ``parse_body`` reads: the JSON model, or the multipart form."""
    _, properties = _FORMS[model]
    form = {"type": "object", "required": ["image"], "properties": properties, "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
        "multipart/form-data": {"schema": form},
    }}}


JSON_BODIES: list[type[BaseModel]] = []  # the control plane's bodies (JSON only), registered by json_body


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a JSON ``model`` itself (after its key is checked)."""
    if model not in JSON_BODIES:
        JSON_BODIES.append(model)
    return {"requestBody": {"required": False, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def add_body_schemas(doc: dict[str, Any]) -> dict[str, Any]:
    """Put the JSON body models (and the models they use) into the OpenAPI document's components."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in [*_FORMS, *JSON_BODIES]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return doc


def install_openapi(api: FastAPI) -> None:
    """``api``'s document: FastAPI's plus the request body models, which the routes read themselves (JSON or
    multipart), without FastAPI's 422, which never happens (a bad request is a 400)."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            doc = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            for operations in doc["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                doc.get("components", {}).get("schemas", {}).pop(unused, None)
            api.openapi_schema = add_body_schemas(doc)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
