"""Request bodies of the model routes, and the ``train_info.params`` Struct read as deeptrain's training options.

A ``Struct`` carries every number as a double (``image_size: 32`` arrives as ``32.0`` from the official client
and over gRPC): an integral float is taken as the integer an int hyperparameter needs, any other float for an
int is refused (``invalid image_size=32.5: expected an integer``), as is an unknown name (listing the valid
ones). Besides the hyperparameters (``deeptrain.params``) the Struct takes ``template``, ``dataset_version_id``,
``workers`` (Ray Train workers; ``num_workers`` means the same), ``cpus_per_worker``, ``gpus_per_worker`` and
``placement`` (what each worker reserves, ``WorkerResources``).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from deeptrain.errors import InvalidInput
from deeptrain.params import HyperParams, ParamError, check_param_names
from serve.v2.routing import Lenient

MAX_ITEMS = 128
MAX_PARAMS = 64
OPTIONS = ("template", "dataset_version_id", "workers", "cpus_per_worker", "gpus_per_worker", "placement")


class ConceptRef(Lenient):
    id: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=256)

    @property
    def ref(self) -> str:
        if not (self.id or self.name):
            raise InvalidInput("a concept needs an id (or a name)")
        return self.id or self.name  # type: ignore[return-value]


class DataIn(Lenient):
    concepts: list[ConceptRef] = Field(default_factory=list, max_length=MAX_ITEMS)


class OutputInfoIn(Lenient):
    data: DataIn = DataIn()


class VersionRef(Lenient):
    id: str | None = Field(None, max_length=128)


class DatasetRef(Lenient):
    id: str | None = Field(None, max_length=128)
    version: VersionRef | None = None


class TrainInfoIn(Lenient):
    params: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PARAMS)
    dataset: DatasetRef | None = None


class ModelVersionIn(Lenient):
    id: str | None = Field(None, max_length=128)
    description: str = Field("", max_length=1000)
    train_info: TrainInfoIn = TrainInfoIn()
    output_info: OutputInfoIn | None = None


class ModelMetadata(Lenient):
    template: str | None = Field(None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PARAMS)


class ModelIn(Lenient):
    id: str = Field(..., min_length=1, max_length=64)
    name: str | None = Field(None, max_length=256)
    model_type_id: str = Field(..., max_length=64)
    output_info: OutputInfoIn = OutputInfoIn()
    metadata: ModelMetadata = ModelMetadata()
    model_version: ModelVersionIn | None = None


class PostModelsBody(Lenient):
    model: ModelIn | None = None
    models: list[ModelIn] = Field(default_factory=list, max_length=MAX_ITEMS)


class PostModelVersionsBody(Lenient):
    model_versions: list[ModelVersionIn] = Field(default_factory=lambda: [ModelVersionIn()], max_length=1)


# --- the params Struct ----------------------------------------------------------------------------------------

def _int_field(name: str) -> bool:
    annotation = HyperParams.model_fields[name].annotation
    return int in (typing.get_args(annotation) or (annotation,))


def hyperparams(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters from a Struct: names checked (unknown: refused with the valid ones), integral floats
    of int parameters made ints; what is left wrong is refused by ``resolve_params`` (naming it)."""
    try:
        check_param_names(values)
    except ParamError as exc:
        raise InvalidInput(f"{exc}; train_info.params also takes {', '.join(OPTIONS)}") from None
    out = {}
    for name, value in values.items():
        if isinstance(value, float) and value.is_integer() and _int_field(name):
            value = int(value)
        out[name] = value
    return out


def _number(params: dict[str, Any], name: str, kind: type) -> Any:
    value = params.get(name)
    if value is None:
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise InvalidInput(f"invalid {name}={value!r}: expected {'an integer' if kind is int else 'a number'}")
    return value


@dataclass
class TrainOptions:
    """``train_info.params`` split into deeptrain's training call: the overrides and the run's options."""

    overrides: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    dataset_version_id: str | None = None
    workers: int = 1
    cpus: float | None = None
    gpus: float | None = None
    placement: str = "PACK"

    @classmethod
    def from_struct(cls, params: dict[str, Any], dataset: DatasetRef | None = None) -> "TrainOptions":
        params = dict(params)
        if "num_workers" in params and "workers" not in params:
            params["workers"] = params.pop("num_workers")
        params.pop("num_workers", None)
        template, placement = params.get("template"), params.get("placement", "PACK")
        for name, value in (("template", template), ("placement", placement),
                            ("dataset_version_id", params.get("dataset_version_id"))):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"invalid {name}={value!r}: expected a string")
        dataset_version = params.get("dataset_version_id") or (dataset.version.id if dataset and dataset.version
                                                               else None)
        workers = _number(params, "workers", int)
        if workers is not None and workers < 1:
            raise InvalidInput(f"invalid workers={workers}: must be >= 1")
        return cls(overrides=hyperparams({k: v for k, v in params.items() if k not in OPTIONS}), template=template,
                   dataset_version_id=dataset_version or None, workers=workers or 1,
                   cpus=_number(params, "cpus_per_worker", float), gpus=_number(params, "gpus_per_worker", float),
                   placement=str(placement).upper())
