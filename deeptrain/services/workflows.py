"""Workflows: named chains of model versions run on one input (detect -> crop each region -> classify/embed).

A workflow is an ordered list of steps ``{"kind", "model_id", "version_id"}`` with kind
``detect`` (a detection model), ``classify`` (classification) or ``embed`` (embedding).
Rules, checked when it is created: 1 to ``MAX_STEPS`` steps, ``detect`` only as the first
step, each model at most once, each model of the step's task and with a trained version
(the pinned one, or — ``version_id`` null — the model's default, else newest trained
version, resolved again on every run).

Running (``run_workflow``): with a detect step, the detector's regions are cropped out of
the *original* image (normalized box -> pixel box, rounded outwards) and every later step
runs on each crop; without one, every step runs on the whole image. One request crops at
most ``Settings.max_workflow_crops`` regions of at most ``max_image_pixels`` pixels in all
(a refusal says by how much it is over and what to change). Predictions go
through a ``predict(version, images, threshold, top_k)`` callable: the SDK passes the
local ``deeptrain.inference`` path, the HTTP gateway its Ray Serve predictors — the same
code on both sides, so their results are equal.
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable, Sequence

from PIL import Image
from sqlalchemy import select

from deeptrain.errors import Conflict, InvalidInput, NotFound
from deeptrain.ids import check_id
from deeptrain.images import decode_checked
from deeptrain.services import models as model_service
from deeptrain.services import usage
from deeptrain.services.context import Context, require_app
from deeptrain.store import Workflow

STEP_TASKS = {"detect": "detection", "classify": "classification", "embed": "embedding"}
MAX_STEPS = 8

# (version dict, encoded images, detection threshold or None, top-k concepts or None) -> one raw output per image
PredictFn = Callable[[dict[str, Any], list[bytes], "float | None", "int | None"], list[dict[str, Any]]]


def parse_step(text: str) -> dict[str, Any]:
    """``KIND:MODEL[:VERSION]`` (the CLI's ``--step``) -> a step dict."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidInput(f"invalid step {text!r}: write KIND:MODEL or KIND:MODEL:VERSION "
                           f"with KIND one of {', '.join(STEP_TASKS)}")
    return {"kind": parts[0], "model_id": parts[1], "version_id": parts[2] if len(parts) == 3 else None}


def _check_order(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if not 1 <= len(steps) <= MAX_STEPS:
        raise InvalidInput(f"a workflow has 1 to {MAX_STEPS} steps, got {len(steps)}")
    out = []
    for k, step in enumerate(steps):
        unknown = set(step) - {"kind", "model_id", "version_id"}
        if unknown or "kind" not in step or "model_id" not in step:
            raise InvalidInput(f"step {k + 1} must have kind and model_id (and optionally version_id), "
                               f"got {sorted(step)}")
        kind = step["kind"]
        if kind not in STEP_TASKS:
            raise InvalidInput(f"step {k + 1}: unknown kind {kind!r}; use one of {', '.join(STEP_TASKS)}")
        if kind == "detect" and k > 0:
            raise InvalidInput(f"step {k + 1}: detect can only be the first step (later steps run on its regions)")
        if step["model_id"] in {s["model_id"] for s in out}:
            raise InvalidInput(f"step {k + 1}: model {step['model_id']!r} is already a step of this workflow")
        out.append({"kind": kind, "model_id": step["model_id"], "version_id": step.get("version_id")})
    return out


def _resolve(ctx: Context, app_id: str, step: dict[str, Any], where: str) -> dict[str, Any]:
    """The trained version a step runs (checks the model's task)."""
    model = model_service.get_model(ctx, app_id, step["model_id"])
    task = STEP_TASKS[step["kind"]]
    if model["task"] != task:
        raise InvalidInput(f"{where}: {step['kind']} needs a {task} model, but {step['model_id']!r} is "
                           f"{'an' if model['task'][0] in 'aeiou' else 'a'} {model['task']} model")
    return model_service.get_trained_version(ctx, app_id, step["model_id"], step["version_id"])


def _workflow_dict(w: Workflow) -> dict[str, Any]:
    return {"id": w.id, "app_id": w.app_id, "steps": list(w.steps), "created_at": w.created_at.isoformat()}


def create_workflow(ctx: Context, app_id: str, workflow_id: str, steps: Sequence[dict[str, Any] | str]) -> dict[str, Any]:
    """Define a workflow; steps are dicts or ``KIND:MODEL[:VERSION]`` strings."""
    check_id(workflow_id, "workflow")
    checked = _check_order([parse_step(s) if isinstance(s, str) else dict(s) for s in steps])
    for k, step in enumerate(checked):
        _resolve(ctx, app_id, step, f"step {k + 1} ({step['kind']}:{step['model_id']})")
    with ctx.store.session() as s:
        require_app(s, app_id)
        if s.get(Workflow, (app_id, workflow_id)) is not None:
            raise Conflict(f"workflow {workflow_id!r} already exists in app {app_id!r}")
        row = Workflow(app_id=app_id, id=workflow_id, steps=checked)
        s.add(row)
        s.flush()
        return _workflow_dict(row)


def _require(s, app_id: str, workflow_id: str) -> Workflow:
    require_app(s, app_id)
    row = s.get(Workflow, (app_id, workflow_id))
    if row is None:
        raise NotFound(f"workflow {workflow_id!r} does not exist in app {app_id!r}", "workflow")
    return row


def get_workflow(ctx: Context, app_id: str, workflow_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        return _workflow_dict(_require(s, app_id, workflow_id))


def list_workflows(ctx: Context, app_id: str) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        return [_workflow_dict(w) for w in s.scalars(select(Workflow).where(Workflow.app_id == app_id)
                                                     .order_by(Workflow.id))]


def delete_workflow(ctx: Context, app_id: str, workflow_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        s.delete(_require(s, app_id, workflow_id))
    return {"id": workflow_id, "deleted": True}


def workflows_using_model(ctx: Context, app_id: str, model_id: str) -> list[str]:
    with ctx.store.session() as s:
        return usage.workflows_using_model(s, app_id, model_id)


def resolve_workflow(ctx: Context, app_id: str, workflow_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(step, trained version) for each step, as of now (an unpinned step takes the current default)."""
    steps = get_workflow(ctx, app_id, workflow_id)["steps"]
    return [(step, _resolve(ctx, app_id, step, f"workflow {workflow_id!r} step {k + 1}"))
            for k, step in enumerate(steps)]


def crop_box(width: int, height: int, box: dict[str, float]) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) of a normalized box, rounded outwards, at least 1 px."""
    left = min(width - 1, max(0, math.floor(box["left_col"] * width)))
    top = min(height - 1, max(0, math.floor(box["top_row"] * height)))
    right = max(left + 1, min(width, math.ceil(box["right_col"] * width)))
    bottom = max(top + 1, min(height, math.ceil(box["bottom_row"] * height)))
    return left, top, right, bottom


def check_crop_budget(ctx: Context, images: Sequence[bytes], detections: Sequence[dict[str, Any]]) -> None:
    """Refuse a request whose crops would be too many, or too many pixels in all (memory per request is bounded)."""
    count, pixels = 0, 0
    for data, det in zip(images, detections):
        with Image.open(io.BytesIO(data)) as img:  # the header only
            width, height = img.size
        for region in det["regions"]:
            left, top, right, bottom = crop_box(width, height, region["bounding_box"])
            count, pixels = count + 1, pixels + (right - left) * (bottom - top)
    settings = ctx.settings
    if count > settings.max_workflow_crops:
        raise InvalidInput(f"the detector found {count} regions in these inputs, over the {settings.max_workflow_crops} "
                           "a workflow request may crop (DEEPTRAIN_MAX_WORKFLOW_CROPS): raise min_value or send fewer "
                           "inputs per request")
    if pixels > settings.max_image_pixels:
        raise InvalidInput(f"the detected regions hold {pixels:,} pixels in all, over the {settings.max_image_pixels:,} "
                           "a workflow request may crop (DEEPTRAIN_MAX_IMAGE_PIXELS): raise min_value or send fewer "
                           "inputs per request")


def crop_regions(data: bytes, boxes: Sequence[dict[str, float]]) -> list[bytes]:
    """PNG crops (lossless) of the original image, one per normalized box."""
    if not boxes:
        return []
    image = decode_checked(data)
    crops = []
    for box in boxes:
        out = io.BytesIO()
        image.crop(crop_box(image.width, image.height, box)).save(out, format="PNG")
        crops.append(out.getvalue())
    return crops


def _step_output(step: dict[str, Any], version: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    return {"kind": step["kind"], "model_id": step["model_id"], "version_id": version["id"], **out}


def run_workflow(ctx: Context, app_id: str, workflow_id: str, images: Sequence[bytes], predict: PredictFn, *,
                 threshold: float | None = None, top_k: int | None = None) -> list[dict[str, Any]]:
    """Run every step on each (already checked) image; one ``{"outputs": [...]}`` per image.

    One output per step, in order, each ``{"kind", "model_id", "version_id", ...}``.
    Without a detect step each holds ``concepts`` or ``embedding`` of the whole image.
    With one, the detect output holds ``regions`` (``bounding_box``, ``concept``,
    ``value``) and every later output ``regions`` in the same order, each with the
    region's ``bounding_box`` and that step's ``concepts`` or ``embedding`` of its crop.
    ``threshold`` overrides the detector's ``detection_score_threshold``, ``top_k``
    limits the concepts.
    """
    steps = resolve_workflow(ctx, app_id, workflow_id)
    (first, first_version), rest = steps[0], steps[1:]
    if first["kind"] != "detect":
        per_step = [predict(version, list(images), None, top_k) for _, version in steps]
        return [{"outputs": [_step_output(step, version, outs[i]) for (step, version), outs in zip(steps, per_step)]}
                for i in range(len(images))]
    detections = predict(first_version, list(images), threshold, None)
    check_crop_budget(ctx, images, detections)
    crops = [crop for data, det in zip(images, detections)
             for crop in crop_regions(data, [r["bounding_box"] for r in det["regions"]])]
    per_step = [predict(version, crops, None, top_k) if crops else [] for _, version in rest]
    results, start = [], 0
    for det in detections:
        boxes = [r["bounding_box"] for r in det["regions"]]
        outputs = [_step_output(first, first_version, det)]
        for (step, version), outs in zip(rest, per_step):
            mine = outs[start:start + len(boxes)]
            outputs.append(_step_output(step, version, {"regions": [{"bounding_box": b, **o}
                                                                    for b, o in zip(boxes, mine)]}))
        results.append({"outputs": outputs})
        start += len(boxes)
    return results
