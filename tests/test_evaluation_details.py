"""A trained version's evaluation for people and its mistakes (``GET …/versions/{id}/evaluation`` and
``…/mistakes``), computed from the trained weights over the test split and cached next to them.

Real data: Fashion-MNIST garments pasted at a varying place on a dark 56x56 canvas, each labelled with its
class as a whole-image concept and as a box, so one dataset version trains a classifier, a detector and an
embedder. The versions are trained in this process with the plain loop (``run_training``, no Ray) for one
epoch and written as training writes them (``finish_version``): barely trained models, so they make mistakes.
"""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deeptrain.config import Settings
from deeptrain.jobs.train import finish_version, queue_version
from deeptrain.services import datasets as dataset_service
from deeptrain.services import evaluation_details
from deeptrain.services import keys
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.training.local import LocalData, LocalHost
from deeptrain.training.loop import TrainSpec, run_training
from deeptrain.training.preprocess import Preprocessor
from deeptrain.wire import codes
from serve.v2.control import control_api
from serve.v2.state import Services

APP = "ev"
BASE = f"/v2/users/me/apps/{APP}"
CLASSES = (0, 1, 7)  # t-shirt, trouser, sneaker
PER_CLASS = {"train": 14, "test": 6}
CANVAS = 56
TASKS = {"classification": "ResNext", "embedding": "ResNext", "detection": "InceptionV2"}
PARAMS = {"classification": {"image_size": 32, "batch_size": 8, "num_epochs": 1, "lrate": 0.05},
          "embedding": {"image_size": 32, "batch_size": 8, "num_epochs": 1, "embedding_dim": 16},
          "detection": {"image_size": 96, "batch_size": 8, "num_epochs": 1}}


def _inputs() -> list[dict]:
    """Garments of CLASSES at a seeded place on a dark canvas: a concept and a box of the class each."""
    from deeptrain.sample_data import load_fashion_mnist

    rng = np.random.default_rng(0)
    items = []
    for split, per_class in PER_CLASS.items():
        images, labels = load_fashion_mnist(split if split == "test" else "train")
        for label in CLASSES:
            for k, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
                top, left = (int(v) for v in rng.integers(0, CANVAS - 28, 2))
                canvas = Image.new("L", (CANVAS, CANVAS), 0)
                canvas.paste(Image.fromarray(images[index]), (left, top))
                buf = io.BytesIO()
                canvas.convert("RGB").save(buf, format="PNG")
                box = {"top_row": top / CANVAS, "left_col": left / CANVAS, "bottom_row": (top + 28) / CANVAS,
                       "right_col": (left + 28) / CANVAS}
                concept = {"id": f"class-{label}", "value": 1.0}
                items.append({"id": f"{split}-{label}-{k:02d}", "split": split, "data": {
                    "image": {"base64": base64.b64encode(buf.getvalue()).decode()}, "concepts": [concept],
                    "regions": [{"region_info": {"bounding_box": box}, "data": {"concepts": [concept]}}]}})
    return items


def _train(ctx: Context, task: str, dataset_id: str) -> dict:
    """Train a version of the ``task`` model for one epoch in process and record it as training does."""
    model_id = task[:3]
    model_service.create_model(ctx, APP, model_id, task, TASKS[task], PARAMS[task])
    version, plan = queue_version(ctx, APP, model_id, dataset_version_id=dataset_id)
    columns = ["image", "width", "height", "concepts", "boxes"]
    table = dataset_service.open_dataset(ctx, APP, dataset_id).to_table(columns=[*columns, "split"])
    split = {s: table.filter(pc.field("split") == s).select(columns) for s in ("train", "validation", "test")}
    pre = Preprocessor(task=task, image_size=plan.params.image_size, canvas=plan.canvas, class_map=plan.class_map,
                       num_classes=len(plan.concepts), max_boxes=plan.max_boxes)
    data = LocalData(split["train"], split["test"], pre, batch_size=plan.params.batch_size, seed=plan.params.seed,
                     validation=split["validation"] if split["validation"].num_rows else None)
    spec = TrainSpec(task=task, template=TASKS[task], params=plan.params, concept_ids=plan.concepts,
                     steps_per_epoch=plan.steps_per_epoch)
    host = LocalHost()
    run_training(spec, data, host)
    model_service.update_version(ctx, APP, model_id, version["id"], status="training")
    return finish_version(ctx, APP, model_id, version["id"], plan, host.checkpoints[-1], "trained")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """App ``ev`` with the garments and a trained version per task; app ``other`` with a key of its own."""
    home = tmp_path_factory.mktemp("evaluation") / "home"
    ctx = Context.from_settings(Settings.from_env(env={"DEEPTRAIN_HOME": str(home)}))
    http = TestClient(control_api(Services(ctx)), raise_server_exceptions=False)
    user = {"Authorization": f"Key {keys.create_user_key(ctx)['key']}"}
    for app in (APP, "other"):
        assert http.post("/v2/apps", json={"apps": [{"id": app}]}, headers=user).status_code == 200
    r = http.post(f"{BASE}/inputs", json={"inputs": _inputs()}, headers=user)
    assert r.status_code == 200, r.text
    dataset_id = dataset_service.snapshot(ctx, APP)["id"]
    versions = {task: _train(ctx, task, dataset_id) for task in TASKS}
    other = {"Authorization": f"Key {keys.create_key(ctx, 'other', ('inputs', 'train', 'predict'))['key']}"}
    return SimpleNamespace(http=http, ctx=ctx, user=user, other=other, versions=versions, dataset_id=dataset_id)


def _path(world, task: str, what: str, version_id: str | None = None) -> str:
    return f"{BASE}/models/{task[:3]}/versions/{version_id or world.versions[task]['id']}/{what}"


def _evaluation(world, task: str) -> dict:
    r = world.http.get(_path(world, task, "evaluation"), headers=world.user)
    assert r.status_code == 200 and r.json()["status"]["code"] == codes.SUCCESS, r.text
    return r.json()["evaluation"]


def _all_mistakes(world, task: str) -> list[dict]:
    r = world.http.get(_path(world, task, "mistakes"), params={"per_page": 1000}, headers=world.user)
    assert r.status_code == 200, r.text
    return r.json()["mistakes"]


def _test_ids(world) -> list[str]:
    table = dataset_service.open_dataset(world.ctx, APP, world.dataset_id).to_table(
        columns=["input_id"], filter=pc.field("split") == "test")
    return sorted(table.column("input_id").to_pylist())


def test_classification_mistakes_are_the_misclassified_test_inputs_of_the_stored_confusion_matrix(world):
    found = _evaluation(world, "classification")
    stored = world.versions["classification"]["metrics"]
    matrix = np.array(stored["confusion_matrix"])
    assert found["checked"] == len(_test_ids(world)) == matrix.sum()  # the whole split checked
    assert found["confusion_matrix"] == {"concepts": world.versions["classification"]["concepts"],
                                         "counts": matrix.tolist()}
    mistakes = _all_mistakes(world, "classification")
    assert len(mistakes) == found["num_mistakes"] == matrix.sum() - np.trace(matrix)
    assert found["num_mistakes"] > 0  # one epoch: far from perfect, so the check below checks something
    for m in mistakes:
        assert len(m["true"]) == 1 and m["predicted"][0]["concept"] != m["true"][0]
        scores = [p["score"] for p in m["predicted"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert m["input_id"].startswith("test-") and m["true"][0] == f"class-{m['input_id'].split('-')[1]}"
    assert [m["input_id"] for m in mistakes] == sorted(m["input_id"] for m in mistakes)


def test_classification_per_concept_figures_and_pr_curves(world):
    found = _evaluation(world, "classification")
    stored = world.versions["classification"]["metrics"]
    assert found["metrics"]["top1"] == stored["top1"] and "per_concept" not in found["metrics"]
    assert [c["concept"] for c in found["per_concept"]] == found["concepts"]
    for i, row in enumerate(found["per_concept"]):
        assert row["support"] == sum(stored["confusion_matrix"][i]) == 6
        assert {k: row[k] for k in ("precision", "recall", "f1", "ap")} == {
            k: stored["per_concept"][row["concept"]][k] for k in ("precision", "recall", "f1", "ap")}
        curve = found["pr_curves"][row["concept"]]
        assert 0 < len(curve) <= 101 and all(0 <= r <= 1 and 0 <= p <= 1 for r, p in curve)
        recalls = [r for r, _ in curve]
        assert recalls == sorted(recalls) and recalls[-1] == 1.0


@pytest.mark.parametrize("task", ["detection", "embedding"])
def test_detection_and_embedding_mistakes_are_real_mistakes(world, task):
    found = _evaluation(world, task)
    mistakes = _all_mistakes(world, task)
    assert found["checked"] == len(_test_ids(world)) and len(mistakes) == found["num_mistakes"]
    assert [c["concept"] for c in found["per_concept"]] == found["concepts"]
    assert "confusion_matrix" not in found and "pr_curves" not in found
    for m in mistakes:
        if task == "embedding":  # the nearest other test input is of another concept
            assert m["predicted"][0]["concept"] != m["true"][0] and m["nearest_input_id"] != m["input_id"]
            assert m["nearest_input_id"].split("-")[1] != m["input_id"].split("-")[1]
            continue
        boxes = m["boxes"]
        assert boxes["missed"] or boxes["false_positives"]
        assert all(p["score"] > world.versions[task]["params"]["detection_score_threshold"]
                   for p in boxes["predicted"])
        for i in boxes["missed"]:  # one box per garment: a missed one no prediction of its concept overlaps enough
            assert not [p for p in boxes["predicted"] if p["concept"] == boxes["true"][i]["concept"]
                        and evaluation_details._iou(p, boxes["true"][i]) >= 0.5]
        for j in boxes["false_positives"]:
            assert 0 <= j < len(boxes["predicted"])
    if task == "detection":  # every true box is either matched or missed
        assert sum(c["support"] for c in found["per_concept"]) == found["checked"]


def test_at_most_max_checked_test_inputs_are_looked_at_the_first_in_id_order(world, monkeypatch):
    monkeypatch.setattr(evaluation_details, "MAX_CHECKED", 5)
    found = evaluation_details.compute(world.ctx, world.versions["classification"])
    assert (found["checked"], found["max_checked"]) == (5, 5)
    assert {m["input_id"] for m in found["mistakes"]} <= set(_test_ids(world)[:5])


@pytest.mark.parametrize("n", [1000, 101, 7])
def test_pr_curves_keep_at_most_101_points_from_the_top_threshold_to_full_recall(n):
    rng = np.random.default_rng(n)
    positive = rng.random(n) < 0.3
    positive[0] = True
    scores = np.where(positive, rng.random(n) + 0.3, rng.random(n)).astype(np.float32)
    curve = evaluation_details._pr_curve(scores, positive)
    assert 0 < len(curve) <= 101 and curve[-1] == [1.0, round(positive.mean(), 6)]
    top = np.argmax(scores)
    assert curve[0] == [round(float(positive[top]) / positive.sum(), 6), float(positive[top])]
    assert [r for r, _ in curve] == sorted(r for r, _ in curve)
    assert evaluation_details._pr_curve(scores, np.zeros(n, dtype=bool)) == []


@pytest.mark.parametrize("true,predicted,missed,false_positives", [
    ([("a", 0.1, 0.1, 0.5, 0.5)], [("a", 0.1, 0.1, 0.5, 0.5, 0.9)], [], []),
    ([("a", 0.1, 0.1, 0.5, 0.5)], [("b", 0.1, 0.1, 0.5, 0.5, 0.9)], [0], [0]),  # right place, wrong concept
    ([("a", 0.1, 0.1, 0.5, 0.5)], [("a", 0.3, 0.3, 0.7, 0.7, 0.9)], [0], [0]),  # IoU 1/7
    ([("a", 0.1, 0.1, 0.5, 0.5)], [("a", 0.1, 0.1, 0.5, 0.5, 0.6), ("a", 0.1, 0.1, 0.5, 0.52, 0.9)], [], [0]),
    ([], [("a", 0.1, 0.1, 0.5, 0.5, 0.9)], [], [0]),
    ([("a", 0.1, 0.1, 0.5, 0.5)], [], [0], []),
])
def test_box_matching_at_iou_half_and_same_concept(true, predicted, missed, false_positives):
    keys_ = ("concept", "top_row", "left_col", "bottom_row", "right_col", "score")
    result = evaluation_details.match_boxes([dict(zip(keys_, t)) for t in true],
                                            [dict(zip(keys_, p)) for p in predicted])
    assert result == (missed, false_positives)


@pytest.mark.parametrize("task", list(TASKS))
def test_the_second_ask_reads_the_cache(world, task):
    first = _evaluation(world, task)
    key = f"{world.versions[task]['artifacts']}/{evaluation_details.CACHE}"
    cached = world.ctx.storage.get_bytes(key)
    assert {k: v for k, v in json.loads(cached).items() if k != "mistakes"} == first
    marked = {**json.loads(cached), "checked": -1}  # a cache that says something computing would not
    world.ctx.storage.put_bytes(key, json.dumps(marked).encode())
    try:
        assert _evaluation(world, task)["checked"] == -1
    finally:
        world.ctx.storage.put_bytes(key, cached)
    assert _evaluation(world, task) == first


def test_mistakes_are_paged_in_input_id_order(world):
    everything = _all_mistakes(world, "classification")
    pages = []
    for page in range(1, len(everything) + 2):
        r = world.http.get(_path(world, "classification", "mistakes"), params={"page": page, "per_page": 1},
                           headers=world.user)
        body = r.json()
        assert body["num_mistakes"] == len(everything) and body["checked"] > 0
        pages.extend(body["mistakes"])
    assert pages == everything


@pytest.mark.parametrize("params", [{"page": 0}, {"per_page": 0}, {"per_page": 1001}, {"page": "x"}])
def test_bad_paging_answers_400(world, params):
    r = world.http.get(_path(world, "classification", "mistakes"), params=params, headers=world.user)
    assert r.status_code == 400 and set(r.json()) == {"status"}


@pytest.mark.parametrize("what", ["evaluation", "mistakes"])
def test_an_untrained_version_answers_the_not_trained_error(world, what):
    version = model_service.new_version(world.ctx, APP, "cla", {"image_size": 32}, world.dataset_id,
                                        world.versions["classification"]["concepts"])
    r = world.http.get(_path(world, "classification", what, version["id"]), headers=world.user)
    assert (r.status_code, r.json()["status"]["code"]) == (409, codes.MODEL_QUEUED_FOR_TRAINING)
    assert "no evaluation until it is trained" in r.json()["status"]["description"]


@pytest.mark.parametrize("what", ["evaluation", "mistakes"])
def test_another_apps_key_or_an_unknown_version_reveals_nothing(world, what):
    version_id = world.versions["classification"]["id"]
    for path in (_path(world, "classification", what), f"/v2/models/cla/versions/{version_id}/{what}"):
        r = world.http.get(path, headers=world.other)
        assert r.status_code in (403, 404) and set(r.json()) == {"status"}
        assert version_id not in r.text and "test-" not in r.text
    r = world.http.get(_path(world, "classification", what, "nope"), headers=world.user)
    assert r.status_code == 404
