"""The hyperparameter schema (SPEC §4): one pydantic model, no torch, no ray.

Names are the seed's, verbatim, from the CLI to the manifest. The parameters the
service adds on top of the seed's are marked ``source="service"``.

Entry points:

- ``resolve_params(template, overrides)``: global defaults <- the template's defaults
  <- the user's overrides, validated, with ``lrate`` derived and recorded. This is what
  every caller (SDK, CLI, HTTP API, Tune) goes through.
- ``parse_cli_params(["batch_size=32", ...])``: CLI strings -> typed values (the schema
  itself is strict: ``"32"`` for an int is an error, so strings are converted here).
- ``describe_params(template)``: a table of every parameter for ``templates show``.
- ``HyperParams``: the resolved, JSON-serializable result
  (``HyperParams.model_validate(p.model_dump(mode="json")) == p``).

Every problem raises ``ParamError`` (a ``ValueError``) naming the parameter, the bad
value and the reason.
"""

from __future__ import annotations

import difflib
import math
import warnings
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deeptrain.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from deeptrain.templates import Template

__all__ = [
    "DEFAULT_PER_ITEM_LRATE",
    "LRATE_PARAMS",
    "HyperParams",
    "ParamError",
    "check_param_names",
    "describe_params",
    "param_names",
    "parse_cli_params",
    "resolve_params",
]

DEFAULT_PER_ITEM_LRATE = 7.8125e-5  # = 0.01 / 128
LRATE_PARAMS = ("lrate", "per_item_lrate", "per_128_lrate")
Precision = Literal["fp32", "bf16", "fp16"]


class ParamError(InvalidInput):
    """A bad hyperparameter. ``str(exc)`` says which parameter, which value, and why.

    ``param``, ``value`` and ``reason`` describe the first problem; ``problems`` holds
    every problem as ``(param, value, reason)`` when several were found at once.
    """

    def __init__(self, param: str | None, value: Any, reason: str, *,
                 problems: list[tuple[str | None, Any, str]] | None = None, message: str | None = None):
        self.param = param
        self.value = value
        self.reason = reason
        self.problems = problems or [(param, value, reason)]
        if message is None:
            message = "; ".join(_problem_text(p, v, r) for p, v, r in self.problems)
        super().__init__(message)


def _problem_text(param: str | None, value: Any, reason: str) -> str:
    if param is None:
        return reason
    return f"invalid {param}={value!r}: {reason}"


def _seed(description: str, range_: str) -> dict[str, Any]:
    return {"source": "seed", "range": range_, "description": description}


def _service(description: str, range_: str) -> dict[str, Any]:
    return {"source": "service", "range": range_, "description": description}


def _field(default: Any, meta: dict[str, Any], **constraints: Any) -> Any:
    return Field(default, description=meta["description"],
                 json_schema_extra={"source": meta["source"], "range": meta["range"]}, **constraints)


class HyperParams(BaseModel):
    """Validated hyperparameters of one training run (strict types, no unknown names).

    Constructing it directly derives ``lrate`` when it is not given (from
    ``per_128_lrate`` if given, else ``per_item_lrate``, default 7.8125e-5); use
    ``resolve_params`` to apply a template's defaults and the cross-parameter checks.
    """

    model_config = ConfigDict(strict=True, extra="forbid", validate_default=False)

    # --- the seed's parameters (names verbatim) ---------------------------------------
    average_horizontal_flips: bool = _field(True, _seed(
        "training: flip the image and its boxes horizontally with p=0.5; inference/evaluation: "
        "average the outputs (scores or embeddings) of the image and its mirror", "true/false"))
    base_gradient_multiplier: float = _field(0.001, _seed(
        "learning rate of the pre-initialized base = lrate x multiplier; the head trains at lrate. "
        "0 freezes the base (no gradients, no optimizer state, BatchNorm in eval mode). "
        "Ignored, with a warning, without init_from", ">= 0"), ge=0, allow_inf_nan=False)
    batch_size: int = _field(64, _seed(
        "global batch per update, split evenly over the workers (must be divisible by num_workers)",
        "1..4096"), ge=1, le=4096)
    detection_score_threshold: float = _field(0.3, _seed(
        "detection: only boxes scoring above it are returned; evaluation (mAP) uses all boxes",
        "0..1"), ge=0, le=1, allow_inf_nan=False)
    image_size: int = _field(256, _seed(
        "the shorter side is resized to it, then cropped square (random crop in training, "
        "center crop in evaluation); below the template's minimum is an error",
        "32..1024, multiple of 16, >= the template's minimum"), ge=32, le=1024, multiple_of=16)
    init_epochs: int = _field(25, _seed("epochs at the initial lrate before the first step", ">= 0"), ge=0)
    logreg: bool = _field(True, _seed(
        "true: sigmoid + binary cross-entropy, multi-label; false: softmax + cross-entropy, "
        "exactly one concept per input", "true/false"))
    lrate: float | None = _field(None, _seed(
        "learning rate per minibatch (SGD with momentum); derived from per_item_lrate or "
        "per_128_lrate when not given, and recorded", "> 0"), gt=0, allow_inf_nan=False)
    num_epochs: int = _field(65, _seed("total epochs", ">= 1"), ge=1)
    num_items_per_epoch: int = _field(0, _seed(
        "items per epoch; 0 = the training split's size; larger than the split cycles through it, "
        "reshuffled each pass", ">= 0"), ge=0)
    per_128_lrate: float | None = _field(None, _seed(
        "lrate = per_128_lrate x batch_size / 128 (give at most one of lrate, per_item_lrate, "
        "per_128_lrate)", "> 0"), gt=0, allow_inf_nan=False)
    per_item_lrate: float | None = _field(None, _seed(
        "lrate = per_item_lrate x batch_size (default 7.8125e-5 when neither lrate nor "
        "per_128_lrate is given)", "> 0"), gt=0, allow_inf_nan=False)
    step_epochs: int = _field(7, _seed(
        "after init_epochs, multiply the learning rate by lrate_step_factor every step_epochs epochs",
        ">= 1"), ge=1)
    test_freq: int = _field(1, _seed(
        "evaluate on the test split every test_freq epochs, and always after the last", ">= 1"), ge=1)
    use_perclass_regression: bool = _field(False, _seed(
        "detection: true gives num_classes sets of 4 box regressors per anchor, false one set",
        "true/false"))

    # --- parameters the service adds (not the seed's) ---------------------------------
    lrate_step_factor: float = _field(0.5, _service(
        "added by the service (the seed does not say): the factor applied to the learning rate "
        "every step_epochs after init_epochs", "(0, 1]"), gt=0, le=1, allow_inf_nan=False)
    warmup_steps: int = _field(0, _service(
        "added by the service: linear learning-rate warm-up: optimizer step k (0-based) of the first "
        "warmup_steps runs at (k + 1) / warmup_steps of the scheduled lr; 0 = none", "0..100000"), ge=0, le=100_000)
    momentum: float = _field(0.9, _service("added by the service: SGD momentum", "[0, 1)"),
                             ge=0, lt=1, allow_inf_nan=False)
    weight_decay: float = _field(1e-4, _service(
        "added by the service: SGD weight decay (L2), not applied to biases and normalization weights",
        ">= 0"), ge=0, allow_inf_nan=False)
    embedding_dim: int = _field(256, _service(
        "added by the service: embedding templates: size of the L2-normalized output vector",
        "1..4096"), ge=1, le=4096)
    init_from: str | None = _field(None, _service(
        "added by the service: initialize the base from a model version, a weights file "
        "(.safetensors / .pt) or a file:// / s3:// URI of a state_dict (timm/torchvision naming "
        "accepted); nothing is downloaded", "a version id, path or URI"), min_length=1)
    seed: int = _field(0, _service(
        "added by the service: random seed; same seed + same data = same metrics on CPU", ">= 0"), ge=0)
    num_workers: int = _field(1, _service(
        "added by the service: number of Ray Train workers (data-parallel)", "1..1024"), ge=1, le=1024)
    use_gpu: bool | None = _field(None, _service(
        "added by the service: train on GPUs; null = auto (use them when the cluster has them)",
        "true/false/null (auto)"))
    precision: Precision = _field("fp32", _service(
        "added by the service: fp32, or bf16/fp16 autocast (mixed precision)", "fp32, bf16, fp16"))
    test_fraction: float = _field(0.1, _service(
        "added by the service: fraction of the inputs put in the test split when they carry no split",
        "(0, 1)"), gt=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _derive_lrate(self) -> "HyperParams":
        given = [name for name in ("per_item_lrate", "per_128_lrate") if getattr(self, name) is not None]
        if len(given) == 2:
            raise ValueError(_two_lrates_reason(given))
        if self.lrate is None:
            if self.per_128_lrate is not None:
                lrate = self.per_128_lrate * self.batch_size / 128
            else:
                if self.per_item_lrate is None:
                    self.__dict__["per_item_lrate"] = DEFAULT_PER_ITEM_LRATE
                lrate = self.per_item_lrate * self.batch_size
            self.__dict__["lrate"] = lrate
        else:
            # A resolved record carries the derived lrate beside its source: they must agree.
            for name in given:
                implied = _implied_lrate(name, getattr(self, name), self.batch_size)
                if not math.isclose(self.lrate, implied, rel_tol=1e-9):
                    raise ValueError(
                        f"lrate {self.lrate!r} does not match {name} {getattr(self, name)!r} with batch_size "
                        f"{self.batch_size} (= {implied!r}); give only one of lrate, per_item_lrate, per_128_lrate"
                    )
        return self

    def lrate_source(self) -> str:
        """Which parameter the learning rate came from: ``lrate``, ``per_item_lrate`` or ``per_128_lrate``."""
        if self.per_128_lrate is not None:
            return "per_128_lrate"
        if self.per_item_lrate is not None:
            return "per_item_lrate"
        return "lrate"


def _implied_lrate(name: str, value: float, batch_size: int) -> float:
    return value * batch_size if name == "per_item_lrate" else value * batch_size / 128


def _two_lrates_reason(given: list[str]) -> str:
    return (f"{' and '.join(given)} were both given; give at most one of lrate, per_item_lrate, "
            "per_128_lrate")


def param_names() -> list[str]:
    """Every valid parameter name, sorted."""
    return sorted(HyperParams.model_fields)


def _unknown_param_error(name: Any) -> ParamError:
    names = param_names()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ParamError(str(name), None, f"unknown parameter{hint}",
                      message=f"unknown parameter {name!r}{hint}; valid parameters: {', '.join(names)}")


def check_param_names(names: Iterable[Any]) -> None:
    """Raise ``ParamError`` (listing the valid names and the closest match) for the first unknown name."""
    for name in names:
        if name not in HyperParams.model_fields:
            raise _unknown_param_error(name)



# --- turning pydantic's errors into user-readable ones --------------------------------

_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string",
}


def _reason(err: Mapping[str, Any]) -> str:
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    field = HyperParams.model_fields.get(str(err["loc"][0])) if err.get("loc") else None
    valid = ""
    if field is not None and isinstance(field.json_schema_extra, dict):
        valid = f" (valid: {_base_type_name(field.annotation)}, {field.json_schema_extra['range']})"
    if etype in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[etype]}, got {type(err.get('input')).__name__}{valid}"
    if etype == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}{valid}"
    if etype == "greater_than":
        return f"must be > {ctx.get('gt')}{valid}"
    if etype == "less_than_equal":
        return f"must be <= {ctx.get('le')}{valid}"
    if etype == "less_than":
        return f"must be < {ctx.get('lt')}{valid}"
    if etype == "multiple_of":
        return f"must be a multiple of {ctx.get('multiple_of')}{valid}"
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
            return _unknown_param_error(loc[0])
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


# --- resolution -----------------------------------------------------------------------

def resolve_params(template: "Template | None", overrides: Mapping[str, Any] | None = None,
                   num_workers: int | None = None) -> HyperParams:
    """Global defaults <- ``template.defaults`` <- ``overrides``, validated.

    - ``None`` values in ``overrides`` mean "not given".
    - At most one of ``lrate``, ``per_item_lrate``, ``per_128_lrate`` may be given; the
      derived ``lrate`` is always set on the result. A learning rate given by the user
      replaces one the template's defaults may carry.
    - ``image_size`` must be at least ``template.min_image_size``.
    - ``batch_size`` (the global batch) must be divisible by the number of workers:
      ``num_workers`` when given, else the resolved ``num_workers`` parameter.
    - ``base_gradient_multiplier`` given without ``init_from`` is kept but a warning says
      it is ignored.
    """
    given = {k: _plain(v) for k, v in dict(overrides or {}).items() if v is not None}
    check_param_names(given)
    template_defaults = dict(template.defaults) if template is not None else {}
    check_param_names(template_defaults)

    given_lr = [name for name in LRATE_PARAMS if name in given]
    if len(given_lr) > 1:
        raise ParamError(given_lr[1], given[given_lr[1]], _two_lrates_reason(given_lr),
                         message=f"{_two_lrates_reason(given_lr)} "
                                 f"({', '.join(f'{n}={given[n]!r}' for n in given_lr)})")
    if given_lr:
        template_defaults = {k: v for k, v in template_defaults.items() if k not in LRATE_PARAMS}

    merged = {**template_defaults, **given}
    try:
        params = HyperParams.model_validate(merged)
    except ValidationError as exc:
        raise _from_validation_error(exc) from None

    if template is not None and params.image_size < template.min_image_size:
        raise ParamError("image_size", params.image_size,
                         f"below the minimum {template.min_image_size} of the {template.task} template "
                         f"{template.name}")
    workers = params.num_workers if num_workers is None else int(num_workers)
    if workers < 1:
        raise ParamError("num_workers", workers, "must be >= 1")
    if params.batch_size % workers:
        raise ParamError("batch_size", params.batch_size,
                         f"batch_size {params.batch_size} is not divisible by {workers} workers "
                         "(batch_size is the global batch, split evenly over the workers)",
                         message=f"invalid batch_size={params.batch_size}: batch_size {params.batch_size} is not "
                                 f"divisible by {workers} workers (batch_size is the global batch, split evenly "
                                 "over the workers)")
    if "base_gradient_multiplier" in given and params.init_from is None:
        warnings.warn(
            f"base_gradient_multiplier={params.base_gradient_multiplier!r} is ignored without init_from: "
            "the whole model trains at lrate",
            UserWarning,
            stacklevel=2,
        )
    return params


# --- CLI strings ----------------------------------------------------------------------

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_NONE = {"none", "null", "auto", ""}


def _type_name(annotation: Any) -> str:
    args = getattr(annotation, "__args__", None)
    origin = getattr(annotation, "__origin__", None)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if args:  # a union such as float | None
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def _base_type_name(annotation: Any) -> str:
    """The type without its ``| None``."""
    args = getattr(annotation, "__args__", None)
    if args and getattr(annotation, "__origin__", None) is not Literal:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _type_name(inner[0])
    return _type_name(annotation)


def _convert(name: str, text: str, annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    origin = getattr(annotation, "__origin__", None)
    low = text.strip().lower()
    if origin is Literal:
        return text.strip()
    if args:  # Optional[X]
        if low in _NONE:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(name, text, inner[0])
    if annotation is bool:
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError
    if annotation is int:
        return int(text.strip())
    if annotation is float:
        value = float(text.strip())
        return value
    return text


def parse_cli_params(items: Iterable[str]) -> dict[str, Any]:
    """``["batch_size=32", "logreg=false"]`` -> ``{"batch_size": 32, "logreg": False}``.

    Each value is converted using its parameter's type: bool accepts true/false, 1/0,
    yes/no, on/off (any case); optional parameters accept none/null (and auto); ints and
    floats use Python's parsing. Range checks happen in ``resolve_params``.
    """
    result: dict[str, Any] = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParamError(None, item, f"expected name=value, got {item!r}",
                             message=f"invalid parameter {item!r}: expected name=value, e.g. batch_size=32")
        check_param_names([name])
        if name in result:
            raise ParamError(name, text, "given twice")
        annotation = HyperParams.model_fields[name].annotation
        try:
            result[name] = _convert(name, text, annotation)
        except ValueError:
            raise ParamError(name, text, f"expected {_type_name(annotation)}",
                             message=f"invalid {name}={text!r}: expected {_type_name(annotation)}"
                                     + (" (true/false, 1/0, yes/no)" if annotation is bool else "")) from None
    return result


# --- description ----------------------------------------------------------------------

def describe_params(template: "Template | None" = None) -> list[dict[str, Any]]:
    """One row per parameter: name, type, default (for this template), range, description, source.

    Rows are sorted by name, the seed's parameters first.
    """
    defaults = resolve_params(template, {}) if template is not None else HyperParams()
    template_defaults = dict(template.defaults) if template is not None else {}
    rows = []
    for name, field in HyperParams.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        range_ = str(extra.get("range", ""))
        if name == "image_size" and template is not None:
            range_ = f"32..1024, multiple of 16, >= {template.min_image_size} ({template.name})"
        if name == "lrate":
            default: Any = defaults.lrate
            description = f"{field.description}; default here: per_item_lrate x batch_size = {defaults.lrate:g}"
        else:
            default = getattr(defaults, name)
            description = field.description or ""
        rows.append({
            "name": name,
            "type": "float" if name == "lrate" else _type_name(field.annotation),
            "default": default,
            "template_default": name in template_defaults,
            "range": range_,
            "description": description,
            "source": extra.get("source", "service"),
        })
    rows.sort(key=lambda r: (r["source"] != "seed", r["name"]))
    return rows
