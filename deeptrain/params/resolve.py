"""Resolving parameters: template defaults, then the model's stored params, then the run's overrides.

Each layer is a mapping of parameter names to values (``None`` = not given). The
one-learning-rate rule (at most one of ``lrate``, ``per_item_lrate``, ``per_128_lrate``)
applies within a layer; a later layer's learning rate replaces an earlier one's. So a
model created with ``per_128_lrate=0.1`` trains with ``--param lrate=0.05`` at 0.05.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import ValidationError

from deeptrain.params.schema import (LRATE_PARAMS, MULTIPLIER_IGNORED, HyperParams, ParamError, base_type_name,
                                     check_param_names, two_lrates_reason, unknown_param_error)

if TYPE_CHECKING:  # pragma: no cover
    from deeptrain.templates import Template

_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string",
}

# pydantic's bound errors: (the words before the bound, the bound's key in the error's context)
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt"), "multiple_of": ("a multiple of", "multiple_of")}


def _reason(err: Mapping[str, Any]) -> str:
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    field = HyperParams.model_fields.get(str(err["loc"][0])) if err.get("loc") else None
    valid = ""
    if field is not None and isinstance(field.json_schema_extra, dict):
        valid = f" (valid: {base_type_name(field.annotation)}, {field.json_schema_extra['range']})"
    if etype in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[etype]}, got {type(err.get('input')).__name__}{valid}"
    if etype in _BOUNDS:
        words, key = _BOUNDS[etype]
        return f"must be {words} {ctx.get(key)}{valid}"
    if etype == "finite_number":
        return f"must be a finite number{valid}"
    if etype == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if etype == "string_too_short":
        return "must not be empty"
    if etype == "value_error":
        return str(ctx.get("error", err.get("msg", "")))
    return f"{err.get('msg', 'invalid value')}{valid}"


def _from_validation_error(exc: ValidationError) -> ParamError:
    problems: list[tuple[str | None, Any, str]] = []
    seen: set[str | None] = set()
    for err in exc.errors(include_url=False):
        loc = err.get("loc") or ()
        if err.get("type") == "extra_forbidden" and loc:
            return unknown_param_error(loc[0])
        param = str(loc[0]) if loc else None
        if param in seen:  # a union type reports one error per member: keep the first
            continue
        seen.add(param)
        value = err.get("input") if param is not None else None
        problems.append((param, value, _reason(err)))
    param, value, reason = problems[0]
    return ParamError(param, value, reason, problems=problems)


def _plain(value: Any) -> Any:
    """numpy scalars (as Tune may sample) -> Python scalars; nothing else is coerced."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _layer(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """One layer's given values (``None`` dropped, numpy scalars made plain), names and learning rate checked."""
    if values is not None and not isinstance(values, Mapping):
        raise TypeError(f"a parameter layer is a mapping of names to values, got {type(values).__name__}")
    given = {k: _plain(v) for k, v in dict(values or {}).items() if v is not None}
    check_param_names(given)
    rates = [name for name in LRATE_PARAMS if name in given]
    if len(rates) > 1:
        raise ParamError(rates[1], given[rates[1]], two_lrates_reason(rates),
                         message=f"{two_lrates_reason(rates)} "
                                 f"({', '.join(f'{n}={given[n]!r}' for n in rates)})")
    return given


def merge_layers(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win; a layer that gives a learning rate drops the ones of the layers before it."""
    merged: dict[str, Any] = {}
    for values in layers:
        given = _layer(values)
        if any(name in given for name in LRATE_PARAMS):
            merged = {k: v for k, v in merged.items() if k not in LRATE_PARAMS}
        merged.update(given)
    return merged


def resolve_params(template: "Template | None", *layers: Mapping[str, Any] | None,
                   num_workers: int | None = None) -> HyperParams:
    """Global defaults <- ``template.defaults`` <- each of ``layers`` in order, validated and frozen.

    Callers pass ``(template, model_params, overrides)``: the model's stored params, then
    the run's. The derived ``lrate`` is always set on the result. Also checked:

    - ``image_size`` must be at least ``template.min_image_size``;
    - ``batch_size`` (the global batch) must be divisible by the number of workers:
      ``num_workers`` when given, else the resolved ``num_workers`` parameter;
    - ``base_gradient_multiplier`` given without ``init_from`` (or with ``scratch``) is kept, with a
      warning that it is ignored; ``imagenet``/``imagenet-if-available`` are resolved by the plan.
    """
    defaults = dict(template.defaults) if template is not None else {}
    merged = merge_layers(defaults, *layers)
    try:
        params = HyperParams.model_validate(merged)
    except ValidationError as exc:
        raise _from_validation_error(exc) from None
    _check_template(template, params)
    _check_workers(params, num_workers)
    if any((values or {}).get("base_gradient_multiplier") is not None for values in layers) \
            and params.from_scratch:
        warnings.warn(f"base_gradient_multiplier={params.base_gradient_multiplier!r}: {MULTIPLIER_IGNORED}",
                      UserWarning, stacklevel=2)
    return params


def _check_template(template: "Template | None", params: HyperParams) -> None:
    if template is not None and params.image_size < template.min_image_size:
        raise ParamError("image_size", params.image_size,
                         f"below the minimum {template.min_image_size} of the {template.task} template "
                         f"{template.name}")


def _check_workers(params: HyperParams, num_workers: int | None) -> None:
    workers = params.num_workers if num_workers is None else int(num_workers)
    if workers < 1:
        raise ParamError("num_workers", workers, "must be >= 1")
    if params.batch_size % workers:
        reason = (f"batch_size {params.batch_size} is not divisible by {workers} workers "
                  "(batch_size is the global batch, split evenly over the workers)")
        raise ParamError("batch_size", params.batch_size, reason,
                         message=f"invalid batch_size={params.batch_size}: {reason}")
