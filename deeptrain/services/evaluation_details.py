"""A trained version's evaluation for people: per-concept figures, PR curves and the test inputs it gets wrong.

Computed on demand from the trained weights (``deeptrain.artifacts.load_model``) over the version's dataset
version's test split, with the preprocessing of ``deeptrain.inference`` (so a mistake shown is what a served
prediction of that input answers), then cached as JSON next to the weights (``evaluation_details.json``): the
second request is a read. The stored evaluation training wrote (``version["metrics"]``) stays the reference for
the scalar metrics, and for classification the per-concept figures and confusion matrix (the whole test split).

Bounded: at most ``MAX_CHECKED`` test inputs (the first in input id order; ``checked`` says how many), images
read and predicted ``BATCH`` at a time, and one computation at a time per process (``_COMPUTING``).

What a mistake is, per task:
  classification: an input with exactly one of the model's concepts whose top-scoring concept is another;
  detection: a true box no prediction matched (IoU >= 0.5, same concept) or a prediction that matched no box,
    predictions above the version's ``detection_score_threshold``;
  embedding: the nearest other checked input (cosine) has a different concept.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import numpy as np
import pyarrow.compute as pc
import torch

from deeptrain.artifacts import LoadedModel, load_model
from deeptrain.errors import NotFound, NotTrained
from deeptrain.inference import model_input, predict_prepared, prepare
from deeptrain.models.tasks import predict_with_flips
from deeptrain.services import datasets as dataset_service
from deeptrain.services import models as model_service
from deeptrain.services.context import Context

MAX_CHECKED = 2000  # test inputs looked at, the first in input id order
BATCH = 64  # images decoded and predicted at a time
PR_POINTS = 101  # the most [recall, precision] points of a concept's PR curve
TOP = 3  # predicted concepts shown per mistake
IOU = 0.5  # a detection matches a true box of its concept at this IoU or more
CACHE = "evaluation_details.json"
_COMPUTING = threading.Lock()  # one computation at a time: bounded memory, and a second asker reads its cache


def trained_version(ctx: Context, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
    """The version (scoped to ``app_id``: another app's is NotFound); NotTrained unless it is trained."""
    version = model_service.get_version(ctx, app_id, model_id, version_id)
    if version["status"] != "trained":
        raise NotTrained(f"version {version_id!r} of model {model_id!r} is {version['status']}: it has no "
                         "evaluation until it is trained", version["status"])
    return version


def details(ctx: Context, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
    """The version's cached evaluation details, computed (and cached) on the first ask."""
    version = trained_version(ctx, app_id, model_id, version_id)
    key = f"{version['artifacts']}/{CACHE}"
    cached = _read_cache(ctx, key)
    if cached is not None:
        return cached
    with _COMPUTING:
        cached = _read_cache(ctx, key)  # another request may have computed it while this one waited
        if cached is not None:
            return cached
        computed = compute(ctx, version)
        ctx.storage.put_bytes(key, json.dumps(computed).encode())
        return computed


def evaluation(ctx: Context, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
    """What ``GET …/evaluation`` answers: the details less the list of mistakes."""
    return {k: v for k, v in details(ctx, app_id, model_id, version_id).items() if k != "mistakes"}


def mistakes(ctx: Context, app_id: str, model_id: str, version_id: str, offset: int, limit: int) -> dict[str, Any]:
    """One page of mistakes (input id order), with how many inputs were checked and how many are mistakes."""
    found = details(ctx, app_id, model_id, version_id)
    return {"mistakes": found["mistakes"][offset:offset + limit], "checked": found["checked"],
            "num_mistakes": found["num_mistakes"]}


def _read_cache(ctx: Context, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(ctx.storage.get_bytes(key))
    except NotFound:
        return None


# --- reading the test split ------------------------------------------------------------------------------------

def _test_rows(ctx: Context, version: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """The first MAX_CHECKED test rows in input id order, labels mapped to the model's concepts: ``true``
    (concept ids) and, for detection, ``boxes``. Classification and embedding keep rows with one of the model's
    concepts (what training evaluated); detection keeps every row (an image without boxes can hold false
    positives). Images are not read here."""
    dataset = dataset_service.get_dataset(ctx, version["app_id"], version["dataset_version_id"])
    names = [c["id"] for c in dataset["concepts"]]
    model_concepts = set(version["concepts"])
    ordered = lambda found: [c for c in version["concepts"] if c in found]  # noqa: E731 (the model's order)
    table = dataset_service.open_dataset(ctx, version["app_id"], dataset["id"]).to_table(
        columns=["input_id", "concepts", "boxes"], filter=pc.field("split") == "test")
    rows = []
    for input_id, concepts, boxes in zip(*(table.column(c).to_pylist() for c in ("input_id", "concepts", "boxes"))):
        true_boxes = [{**{k: b[k] for k in ("top_row", "left_col", "bottom_row", "right_col")},
                       "concept": names[b["concept"]]} for b in boxes if names[b["concept"]] in model_concepts]
        if task == "detection":
            rows.append({"input_id": input_id, "true": ordered({b["concept"] for b in true_boxes}),
                         "boxes": true_boxes})
            continue
        true = ordered({names[c] for c in concepts})
        if true:
            rows.append({"input_id": input_id, "true": true})
    rows.sort(key=lambda r: r["input_id"])
    return rows[:MAX_CHECKED]


def _image_batches(ctx: Context, version: dict[str, Any], ids: list[str]) -> Iterator[tuple[list[str], list[bytes]]]:
    """(input ids, image bytes) of ``ids``, at most BATCH at a time, streamed from the Parquet files."""
    dataset = dataset_service.open_dataset(ctx, version["app_id"], version["dataset_version_id"])
    scanner = dataset.scanner(columns=["input_id", "image"], filter=pc.field("input_id").isin(ids),
                              batch_size=BATCH)
    pending_ids: list[str] = []
    pending: list[bytes] = []
    for batch in scanner.to_batches():
        pending_ids.extend(batch.column("input_id").to_pylist())
        pending.extend(batch.column("image").to_pylist())
        while len(pending) >= BATCH:
            yield pending_ids[:BATCH], pending[:BATCH]
            pending_ids, pending = pending_ids[BATCH:], pending[BATCH:]
    if pending:
        yield pending_ids, pending


@torch.no_grad()
def _outputs(ctx: Context, version: dict[str, Any], loaded: LoadedModel, ids: list[str]) -> dict[str, Any]:
    """Per input id: the model's scores (classification), embedding, or regions (detection)."""
    task = loaded.manifest["task"]
    flips = loaded.params.average_horizontal_flips
    out: dict[str, Any] = {}
    for batch_ids, images in _image_batches(ctx, version, ids):
        prepared = [prepare(loaded, data) for data in images]
        if task == "detection":
            out.update(zip(batch_ids, (p["regions"] for p in predict_prepared(loaded, prepared))))
        else:
            rows = predict_with_flips(loaded.model, task, model_input(loaded, prepared), flips).float().cpu()
            out.update(zip(batch_ids, rows))
    return out


# --- per task --------------------------------------------------------------------------------------------------

def _top(scores: dict[str, float]) -> list[dict[str, Any]]:
    ranked = sorted(scores.items(), key=lambda cs: -cs[1])[:TOP]
    return [{"concept": c, "score": float(s)} for c, s in ranked]


def _pr_curve(scores: np.ndarray, positive: np.ndarray) -> list[list[float]]:
    """[recall, precision] from the highest threshold down, at most PR_POINTS points (evenly picked, ends kept);
    empty for a concept without positives."""
    total = int(positive.sum())
    if total == 0:
        return []
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(positive[order])
    kept = np.r_[np.flatnonzero(np.diff(scores[order])), len(order) - 1]  # the last index of each distinct score
    recall, precision = hits[kept] / total, hits[kept] / (kept + 1)
    points = np.unique(np.linspace(0, len(kept) - 1, min(len(kept), PR_POINTS)).round().astype(int))
    return [[round(float(recall[i]), 6), round(float(precision[i]), 6)] for i in points]


def _classification(version: dict[str, Any], rows: list[dict[str, Any]], outputs: dict[str, Any]) -> dict[str, Any]:
    concepts = version["concepts"]
    stored = version.get("metrics") or {}
    rows = [r for r in rows if r["input_id"] in outputs]
    scores = torch.stack([outputs[r["input_id"]] for r in rows]).numpy() if rows else np.zeros((0, len(concepts)))
    truth = np.array([[c in r["true"] for c in concepts] for r in rows], dtype=bool).reshape(len(rows), len(concepts))
    found = []
    for row, s in zip(rows, scores):
        if len(row["true"]) == 1 and concepts[int(np.argmax(s))] != row["true"][0]:
            found.append({"input_id": row["input_id"], "true": row["true"], "predicted": _top(dict(zip(concepts, s)))})
    matrix = stored.get("confusion_matrix") or []
    figures = stored.get("per_concept") or {}
    per_concept = [{"concept": c, **{k: (figures.get(c) or {}).get(k) for k in ("precision", "recall", "f1", "ap")},
                    "support": int(sum(matrix[i])) if i < len(matrix) else int(truth[:, i].sum())}
                   for i, c in enumerate(concepts)]
    return {"per_concept": per_concept, "confusion_matrix": {"concepts": concepts, "counts": matrix},
            "pr_curves": {c: _pr_curve(scores[:, i], truth[:, i]) for i, c in enumerate(concepts)},
            "mistakes": found}


def _iou(a: dict[str, float], b: dict[str, float]) -> float:
    h = min(a["bottom_row"], b["bottom_row"]) - max(a["top_row"], b["top_row"])
    w = min(a["right_col"], b["right_col"]) - max(a["left_col"], b["left_col"])
    inter = max(0.0, h) * max(0.0, w)
    area = lambda r: (r["bottom_row"] - r["top_row"]) * (r["right_col"] - r["left_col"])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(true: list[dict[str, Any]], predicted: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(missed true boxes, false-positive predictions) by index: predictions, best score first, each take the
    unmatched true box of their concept they overlap most, when at IoU >= 0.5."""
    free = set(range(len(true)))
    false_positives = []
    for j in sorted(range(len(predicted)), key=lambda k: -predicted[k]["score"]):
        p = predicted[j]
        same = (i for i in free if true[i]["concept"] == p["concept"])
        best = max(same, key=lambda i: _iou(true[i], p), default=None)
        if best is not None and _iou(true[best], p) >= IOU:
            free.discard(best)
        else:
            false_positives.append(j)
    return sorted(free), sorted(false_positives)


def _detection(version: dict[str, Any], rows: list[dict[str, Any]], outputs: dict[str, Any]) -> dict[str, Any]:
    concepts = version["concepts"]
    counts = {c: {"tp": 0, "fp": 0, "fn": 0} for c in concepts}
    found = []
    for row in (r for r in rows if r["input_id"] in outputs):
        predicted = [{**r["bounding_box"], "concept": r["concept"], "score": float(r["value"])}
                     for r in outputs[row["input_id"]]]
        missed, false_positives = match_boxes(row["boxes"], predicted)
        for i, box in enumerate(row["boxes"]):
            counts[box["concept"]]["fn" if i in missed else "tp"] += 1
        for j in false_positives:
            counts[predicted[j]["concept"]]["fp"] += 1
        if missed or false_positives:
            best: dict[str, float] = {}
            for p in predicted:
                best[p["concept"]] = max(best.get(p["concept"], 0.0), p["score"])
            found.append({"input_id": row["input_id"], "true": row["true"], "predicted": _top(best),
                          "boxes": {"true": row["boxes"], "predicted": predicted, "missed": missed,
                                    "false_positives": false_positives}})
    stored = (version.get("metrics") or {}).get("per_concept") or {}
    per_concept = [{"concept": c, **_prf(n["tp"], n["fp"], n["fn"]), "ap": (stored.get(c) or {}).get("ap"),
                    "support": n["tp"] + n["fn"]} for c, n in counts.items()]
    return {"per_concept": per_concept, "mistakes": found}


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    return {"precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None}


def _embedding(version: dict[str, Any], rows: list[dict[str, Any]], outputs: dict[str, Any]) -> dict[str, Any]:
    """Nearest-neighbour classification within the checked inputs: each input's concept (its first) against the
    concept of its nearest other input (cosine)."""
    concepts = version["concepts"]
    rows = [r for r in rows if r["input_id"] in outputs]
    found, counts = [], {c: {"tp": 0, "fp": 0, "fn": 0} for c in concepts}
    if len(rows) > 1:
        e = torch.nn.functional.normalize(torch.stack([outputs[r["input_id"]] for r in rows]), dim=1)
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        for i, row in enumerate(rows):
            order = sim[i].argsort(descending=True).tolist()[: len(rows) - 1]
            best: dict[str, float] = {}
            for j in order:
                best.setdefault(rows[j]["true"][0], float(sim[i, j]))
                if len(best) == TOP:
                    break
            true, nearest = row["true"][0], rows[order[0]]
            predicted = nearest["true"][0]
            counts[true]["tp" if predicted == true else "fn"] += 1
            if predicted != true:
                counts[predicted]["fp"] += 1
                found.append({"input_id": row["input_id"], "true": row["true"], "predicted": _top(best),
                              "nearest_input_id": nearest["input_id"]})
    per_concept = [{"concept": c, **_prf(n["tp"], n["fp"], n["fn"]), "ap": None, "support": n["tp"] + n["fn"]}
                   for c, n in counts.items()]
    return {"per_concept": per_concept, "mistakes": found}


TASKS = {"classification": _classification, "detection": _detection, "embedding": _embedding}


def compute(ctx: Context, version: dict[str, Any]) -> dict[str, Any]:
    """The details of a trained version (see the module's docstring), ready to cache as JSON."""
    loaded = load_model(ctx.storage, version["artifacts"])
    task = loaded.manifest["task"]
    rows = _test_rows(ctx, version, task)
    outputs = _outputs(ctx, version, loaded, [r["input_id"] for r in rows])
    found = TASKS[task](version, rows, outputs)
    stored = version.get("metrics") or {}
    scalars = {k: v for k, v in stored.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"task": task, "concepts": version["concepts"], "split": "test", "metrics": scalars,
            "per_concept": found["per_concept"],
            **{k: found[k] for k in ("confusion_matrix", "pr_curves") if k in found},
            "checked": sum(1 for r in rows if r["input_id"] in outputs), "max_checked": MAX_CHECKED,
            "num_mistakes": len(found["mistakes"]), "mistakes": found["mistakes"]}
