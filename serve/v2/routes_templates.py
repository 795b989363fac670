"""The templates deeptrain trains, with their hyperparameters described for a form (a deeptrain extension,
``GET /v2/templates``; any valid key: it says nothing about an app).

Each template: its task, model type, description, reference and parameter count, minimum image size, the
defaults it sets over the global ones, and one row per hyperparameter: ``deeptrain.params.text.describe_params``
(name, type, default for this template, range text, help text, source, whether the template sets the default)
plus the constraints a form checks before sending, read from ``HyperParams.model_json_schema()``:
``minimum``, ``maximum``, ``exclusive_minimum``, ``exclusive_maximum``, ``multiple_of``, ``enum`` and
``nullable`` (keys a parameter lacks are left out). ``image_size``'s minimum is the template's
``min_image_size`` where that is higher than the schema's.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter

from deeptrain.params import HyperParams
from deeptrain.params.text import describe_params
from deeptrain.templates import Template, all_templates
from serve.v2.access import ANY, Access
from serve.v2.envelope import ok
from serve.v2.render_models import TYPE_OF_TASK
from serve.v2.routing import route

router = APIRouter(tags=["templates"])
CONSTRAINTS = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum",
               "exclusiveMaximum": "exclusive_maximum", "multipleOf": "multiple_of", "enum": "enum"}


def constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """One property's checks as the form reads them: its own, else those of its non-null ``anyOf`` branch."""
    branches = schema.get("anyOf") or [schema]
    nullable = any(b.get("type") == "null" for b in branches)
    found: dict[str, Any] = {}
    for branch in (b for b in branches if b.get("type") != "null"):
        for key, name in CONSTRAINTS.items():
            if key in branch and name not in found:
                found[name] = branch[key]
    for key, name in CONSTRAINTS.items():  # checks beside anyOf, on the property itself
        if key in schema and name not in found:
            found[name] = schema[key]
    if nullable:
        found["nullable"] = True
    return found


def render_template(template: Template, properties: dict[str, Any]) -> dict[str, Any]:
    params = []
    for row in describe_params(template):
        extra = constraints(properties.get(row["name"], {}))
        if row["name"] == "image_size" and template.min_image_size > extra.get("minimum", 0):
            extra["minimum"] = template.min_image_size
        params.append({**row, **extra})
    return {"task": template.task, "model_type_id": TYPE_OF_TASK[template.task], "name": template.name,
            "description": template.description, "reference": template.reference,
            "reference_num_params": template.reference_num_params, "min_image_size": template.min_image_size,
            "defaults": dict(template.defaults), "params": params}


@functools.lru_cache(maxsize=1)
def _described() -> tuple[dict[str, Any], ...]:
    """Every template, described once per process (the registry is fixed once imported)."""
    properties = HyperParams.model_json_schema().get("properties", {})
    return tuple(render_template(t, properties) for t in all_templates())


@route(router, "GET", "/templates", scope=None, need=ANY,
       summary="the templates deeptrain trains, each with its hyperparameters (type, default, range, help)")
async def list_templates(access: Access) -> dict[str, Any]:
    return ok(templates=list(_described()))
