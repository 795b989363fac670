"""Planning a training run: everything that can be checked before a worker starts.

``plan_training`` resolves the hyperparameters once (``resolve_params``: template defaults
<- the model's params <- this run's overrides), checks the labels (concepts with training
inputs, the single-label rule of softmax and embedding, a test split) and fixes the
concept list, the steps per epoch and the preprocessing geometry, and turns ``init_from`` into the
weights it names (``deeptrain.weights.resolve``: a ``URI#sha256=HEX`` or None). The ``TrainPlan`` it
returns carries the frozen ``HyperParams`` to the workers; it is saved beside the
version's artifacts, so ``resume`` runs exactly what was planned.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.params import HyperParams, resolve_params
from deeptrain.services import datasets as dataset_service
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.templates import get_template
from deeptrain.training.preprocess import canvas_size
from deeptrain.weights import resolve_init_from

MAX_BOXES = 512
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class WorkerResources:
    """What each Ray Train worker reserves, and how the workers are placed on the nodes.

    cpus: CPUs per worker; None: ``Settings.cpu_per_worker`` (``DEEPTRAIN_CPU_PER_WORKER``, 0.5).
    gpus: GPUs per worker. None: follow ``use_gpu`` (auto = when the cluster has GPUs), one
    per worker; 0: no GPUs; more: GPUs (an error on a cluster without any). Fractions share.
    placement: Ray placement-group strategy of the workers: PACK (default, fill a node
    first), SPREAD, STRICT_PACK (one node), STRICT_SPREAD (one worker per node).
    """

    cpus: float | None = None
    gpus: float | None = None
    placement: str = "PACK"

    def __post_init__(self) -> None:
        if self.cpus is not None and not self.cpus >= 0:
            raise InvalidInput(f"CPUs per worker must be >= 0, got {self.cpus}")
        if self.gpus is not None and not self.gpus >= 0:
            raise InvalidInput(f"GPUs per worker must be >= 0, got {self.gpus}")
        if self.placement not in PLACEMENTS:
            raise InvalidInput(f"placement {self.placement!r} is not one of {', '.join(PLACEMENTS)}")

    def use_gpu(self, requested: bool | None) -> bool | None:
        """``use_gpu`` given the hyperparameter: an explicit GPU count decides it, and may not contradict it."""
        if self.gpus is None:
            return requested
        wanted = self.gpus > 0
        if requested is not None and requested != wanted:
            raise InvalidInput(f"{self.gpus:g} GPUs per worker contradicts use_gpu={str(requested).lower()}; "
                               "drop one of the two")
        return wanted


@dataclass(frozen=True)
class TrainPlan:
    """A planned run. ``params`` is the resolved, frozen parameter set every later step reads."""

    params: HyperParams
    concepts: list[str]
    class_map: list[int]
    dataset_version_id: str
    num_train: int
    num_test: int
    steps_per_epoch: int
    canvas: int
    max_boxes: int
    resources: WorkerResources = field(default_factory=WorkerResources)
    num_val: int = 0  # labelled validation inputs; 0: the periodic evaluation falls back to the test split
    # where the base's weights came from (``deeptrain.weights.resolve``): source, architecture, sha256, uri
    init_weights: dict[str, Any] = field(default_factory=dict)

    @property
    def validation_split(self) -> str:
        """The split the periodic evaluation (and Tune) reads: validation, or test when there is none."""
        return "validation" if self.num_val else "test"

    def to_json(self) -> bytes:
        record = {**asdict(self), "params": self.params.model_dump(mode="json"), "resources": asdict(self.resources)}
        return json.dumps(record).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "TrainPlan":
        record = json.loads(data)
        return cls(**{**record, "params": HyperParams.model_validate(record["params"]),
                      "resources": WorkerResources(**record.get("resources") or {})})


def geometry(table: pa.Table, image_size: int) -> tuple[int, int]:
    """(canvas, max_boxes): the square canvas every image of the table fits at ``image_size``, and the
    most boxes one input carries (at least 1, at most ``MAX_BOXES``)."""
    aspect = pc.max(pc.divide(pc.max_element_wise(table["width"], table["height"]).cast("float64"),
                              pc.min_element_wise(table["width"], table["height"]).cast("float64"))).as_py()
    max_boxes = max((len(b) for b in table.column("boxes").to_pylist()), default=0)
    return canvas_size(image_size, aspect or 1.0), min(max(max_boxes, 1), MAX_BOXES)


def _train_counts(names: list[str], per_row: list[list[int]], split: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row, s in zip(per_row, split):
        if s == "train":
            for c in set(row):
                counts[names[c]] = counts.get(names[c], 0) + 1
    return counts


def _check_concepts(task: str, app_id: str, dataset_id: str, concepts: list[str], counts: dict[str, int]) -> None:
    if not concepts:
        what = "boxes" if task == "detection" else "labelled"
        raise InvalidInput(f"dataset version {dataset_id} of app {app_id!r} has no {what} training inputs; "
                           "label some inputs (and give them split train) before training")
    missing = [c for c in concepts if counts.get(c, 0) == 0]
    if missing:
        raise InvalidInput(f"concept(s) {', '.join(missing)} have no training inputs in dataset version "
                           f"{dataset_id}; label some or remove them from the model's concepts")
    if len(concepts) < 2 and task != "detection":
        raise InvalidInput(f"{task} needs at least 2 concepts with training inputs, found {concepts}")


def _check_single_label(task: str, params: HyperParams, ids: list[str], used: list[list[int]]) -> None:
    if not ((task == "classification" and not params.logreg) or task == "embedding"):
        return
    bad = [i for i, u in zip(ids, used) if len(u) > 1]
    if bad:
        reason = "softmax (logreg false)" if task == "classification" else "embedding training"
        raise InvalidInput(f"{reason} needs exactly one concept per input, but {len(bad)} input(s) have "
                           f"several: {', '.join(bad[:10])}{' …' if len(bad) > 10 else ''}; relabel them or "
                           "use logreg true")


def plan_training(ctx: Context, app_id: str, model_id: str, overrides: dict[str, Any],
                  dataset_version_id: str | None, num_workers: int,
                  resources: WorkerResources | None = None) -> TrainPlan:
    """Validate and plan a run; every refusal names what to fix."""
    model = model_service.get_model(ctx, app_id, model_id)
    task = model["task"]
    template = get_template(task, model["template"])
    params = resolve_params(template, model["params"], {**overrides, "num_workers": num_workers})
    resources = resources or WorkerResources()
    if resources.cpus is None:
        resources = replace(resources, cpus=ctx.settings.cpu_per_worker)
    resources.use_gpu(params.use_gpu)
    if dataset_version_id is None:
        dataset = dataset_service.snapshot(ctx, app_id, test_fraction=params.test_fraction,
                                           validation_fraction=params.validation_fraction)
    else:
        dataset = dataset_service.get_dataset(ctx, app_id, dataset_version_id)
    names = [c["id"] for c in dataset["concepts"]]
    table = dataset_service.open_dataset(ctx, app_id, dataset["id"]).to_table(
        columns=["input_id", "concepts", "boxes", "split", "width", "height"])
    split = table.column("split").to_pylist()
    if task == "detection":
        per_row = [[b["concept"] for b in boxes] for boxes in table.column("boxes").to_pylist()]
    else:
        per_row = table.column("concepts").to_pylist()
    counts = _train_counts(names, per_row, split)
    concepts = model["concepts"] or sorted(counts)
    _check_concepts(task, app_id, dataset["id"], concepts, counts)
    index = {c: i for i, c in enumerate(concepts)}
    class_map = [index.get(n, -1) for n in names]
    used = [[c for c in set(row) if class_map[c] >= 0] for row in per_row]
    _check_single_label(task, params, table.column("input_id").to_pylist(), used)
    keep = [bool(u) or task == "detection" for u in used]
    num_train, num_val, num_test = (sum(1 for k, s in zip(keep, split) if k and s == name)
                                    for name in ("train", "validation", "test"))
    if num_test == 0:
        raise InvalidInput(f"dataset version {dataset['id']} has no labelled test inputs to evaluate on; "
                           "import some with --split test or snapshot with a test_fraction")
    canvas, max_boxes = geometry(table, params.image_size)
    params, init_weights = resolve_init_from(ctx, app_id, template, params)
    return TrainPlan(params=params, concepts=concepts, class_map=class_map, dataset_version_id=dataset["id"],
                     num_train=num_train, num_test=num_test, steps_per_epoch=params.steps_per_epoch(num_train),
                     canvas=canvas, max_boxes=max_boxes, resources=resources, num_val=num_val,
                     init_weights=init_weights)


def save_plan(ctx: Context, prefix: str, plan: TrainPlan) -> None:
    ctx.storage.put_bytes(f"{prefix}/plan.json", plan.to_json())


def load_plan(ctx: Context, version: dict[str, Any]) -> TrainPlan:
    """The plan a version was started with (saved beside its artifacts)."""
    try:
        return TrainPlan.from_json(ctx.storage.get_bytes(f"{version['artifacts']}/plan.json"))
    except NotFound:
        raise InvalidInput(f"version {version['id']!r} has no saved plan to resume from") from None
