"""The hyperparameter schema (SPEC §4): one pydantic model, no torch, no ray.

``HyperParams`` is frozen: once resolved it travels unchanged from the plan to the
optimizer, and every value derived from it (``lrate``, the base's learning-rate scale,
whether the base is frozen, steps per epoch) is computed here and nowhere else.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deeptrain.errors import InvalidInput

DEFAULT_PER_ITEM_LRATE = 7.8125e-5  # = 0.01 / 128
LRATE_PARAMS = ("lrate", "per_item_lrate", "per_128_lrate")
Precision = Literal["fp32", "bf16", "fp16"]
# init_from values the plan resolves (``deeptrain.weights.resolve``): none of them is a source itself
INIT_IMAGENET, INIT_IF_AVAILABLE, INIT_SCRATCH = "imagenet", "imagenet-if-available", "scratch"
SYMBOLIC_INIT_FROM = (INIT_IMAGENET, INIT_IF_AVAILABLE, INIT_SCRATCH)


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

    model_config = ConfigDict(strict=True, extra="forbid", validate_default=False, frozen=True)

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
        "evaluate on the validation split every test_freq epochs, and always after the last (then the test "
        "split too, once)", ">= 1"), ge=1)
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
        "added by the service: where the base's weights come from: imagenet (the backbone's ImageNet "
        "weights from the `deeptrain weights` registry or a local timm/torchvision cache, an error if "
        "there are none), imagenet-if-available (the templates' default: those weights when present, "
        "else from scratch), scratch, a model version id, a weights file (.safetensors / .pt) or a "
        "file:// / s3:// URI of a state_dict (timm/torchvision naming accepted); the plan resolves it to "
        "a URI with its sha256", "imagenet, imagenet-if-available, scratch, a version id, path or URI"),
        min_length=1)
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
    validation_fraction: float = _field(0.1, _service(
        "added by the service: when a dataset version has no validation inputs, the fraction of its training "
        "inputs carved into validation by content hash (what Tune and the periodic evaluation read)",
        "[0, 1)"), ge=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _derive_lrate(self) -> "HyperParams":
        given = [name for name in ("per_item_lrate", "per_128_lrate") if getattr(self, name) is not None]
        if len(given) == 2:
            raise ValueError(two_lrates_reason(given))
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

    # --- derived values: computed here only ---------------------------------------------

    @property
    def pretrained_base(self) -> bool:
        """Whether the base starts from weights (the multiplier applies only then): ``init_from`` names a
        source; the symbolic values (``imagenet``, ``imagenet-if-available``, ``scratch``) are not one until
        the plan resolves them (``deeptrain.weights``) to a URI, or to None (scratch)."""
        return self.init_from is not None and self.init_from not in SYMBOLIC_INIT_FROM

    @property
    def from_scratch(self) -> bool:
        """``init_from`` asks for no weights (unset or ``scratch``): ``base_gradient_multiplier`` is then ignored,
        whatever the plan finds (``imagenet``/``imagenet-if-available`` may still resolve to weights)."""
        return self.init_from in (None, INIT_SCRATCH)

    @property
    def base_lr_scale(self) -> float:
        """The base's learning rate relative to ``lrate``: the multiplier with a pre-initialized base, else 1."""
        return float(self.base_gradient_multiplier) if self.pretrained_base else 1.0

    @property
    def base_frozen(self) -> bool:
        """A pre-initialized base with multiplier 0 is frozen (no gradients, BatchNorm in eval mode)."""
        return self.pretrained_base and self.base_gradient_multiplier == 0

    def local_batch(self, world_size: int) -> int:
        """Each worker's share of the global ``batch_size``."""
        return self.batch_size // max(1, world_size)

    def steps_per_epoch(self, num_train: int) -> int:
        """Optimizer steps per epoch: ``(num_items_per_epoch or num_train) // batch_size``; a batch needs at
        least ``batch_size`` training inputs to draw from."""
        items = self.num_items_per_epoch or num_train
        if min(items, num_train) < self.batch_size:
            what = "training items per epoch" if items < num_train else "training items"
            raise InvalidInput(f"batch_size {self.batch_size} is larger than the {min(items, num_train)} {what}; "
                               "lower batch_size or add inputs")
        return items // self.batch_size

    def lrate_source(self) -> str:
        """Which parameter the learning rate came from: ``lrate``, ``per_item_lrate`` or ``per_128_lrate``."""
        if self.per_128_lrate is not None:
            return "per_128_lrate"
        if self.per_item_lrate is not None:
            return "per_item_lrate"
        return "lrate"


MULTIPLIER_IGNORED = "base_gradient_multiplier is ignored without init_from: the whole model trains at lrate"


def _implied_lrate(name: str, value: float, batch_size: int) -> float:
    return value * batch_size if name == "per_item_lrate" else value * batch_size / 128


def two_lrates_reason(given: list[str]) -> str:
    return (f"{' and '.join(given)} were both given; give at most one of lrate, per_item_lrate, "
            "per_128_lrate")


def param_names() -> list[str]:
    """Every valid parameter name, sorted."""
    return sorted(HyperParams.model_fields)


def unknown_param_error(name: Any) -> ParamError:
    names = param_names()
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ParamError(str(name), None, f"unknown parameter{hint}",
                      message=f"unknown parameter {name!r}{hint}; valid parameters: {', '.join(names)}")


def check_param_names(names: Iterable[Any]) -> None:
    """Raise ``ParamError`` (listing the valid names and the closest match) for the first unknown name."""
    for name in names:
        if name not in HyperParams.model_fields:
            raise unknown_param_error(name)


def type_name(annotation: Any) -> str:
    args = getattr(annotation, "__args__", None)
    origin = getattr(annotation, "__origin__", None)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if args:  # a union such as float | None
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def base_type_name(annotation: Any) -> str:
    """The type without its ``| None``."""
    args = getattr(annotation, "__args__", None)
    if args and getattr(annotation, "__origin__", None) is not Literal:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return type_name(inner[0])
    return type_name(annotation)
