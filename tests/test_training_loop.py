"""The plain-PyTorch training loop, without Ray: learning, determinism, resume."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from deeptrain.params import resolve_params
from deeptrain.templates import get_template
from deeptrain.training.local import LocalData, LocalHost
from deeptrain.training.loop import TrainSpec, _Run, run_training
from deeptrain.training.preprocess import Preprocessor
from tests import imagegen


def _rows(n: int, seed: int) -> pa.Table:
    """Two visually distinct classes: dark and bright images with noise."""
    rng = np.random.default_rng(seed)
    images, concepts = [], []
    for i in range(n):
        label = i % 2
        base = 40 if label == 0 else 210
        color = tuple(int(v) for v in np.clip(base + rng.integers(-30, 30, 3), 0, 255))
        images.append(imagegen.png_bytes(color, size=(40, 32)))
        concepts.append([label])
    return pa.table({"image": images, "width": [40] * n, "height": [32] * n, "concepts": concepts,
                     "boxes": [[] for _ in range(n)]})


def _setup(epochs: int, **overrides):
    template = get_template("classification", "ResNext")
    params = resolve_params(template, {"image_size": 32, "batch_size": 8, "num_epochs": epochs, "init_epochs": 1,
                                       "step_epochs": 1, "lrate": 0.02, "seed": 3, **overrides})
    pre = Preprocessor(task="classification", image_size=32, canvas=48, class_map=[0, 1], num_classes=2)
    data = LocalData(_rows(32, 0), _rows(16, 1), pre, batch_size=8, seed=3)
    spec = TrainSpec(task="classification", template="ResNext", params=params,
                     concept_ids=["dark", "bright"], steps_per_epoch=4)
    return spec, data


def test_loop_learns_and_reports_each_epoch():
    spec, data = _setup(3)
    progress = []
    host = LocalHost(on_progress=progress.append)
    result = run_training(spec, data, host)
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["lr"] for h in history] == pytest.approx([0.02, 0.01, 0.005])  # init 1, step 1, factor 0.5
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for h in history:  # the epoch's time split: input wait + augment + model step fit in the epoch
        parts = (h["data_wait_s"], h["augment_s"], h["compute_s"])
        assert all(p > 0 for p in parts) and sum(parts) <= h["seconds"]
        assert h["compute_s"] > h["augment_s"]
    assert result["metrics"]["top1"] >= 0.9, result["metrics"]
    assert len(host.checkpoints) == 3 and len(progress) == 12
    assert set(progress[-1]) >= {"epoch", "step", "loss", "lr", "images_per_s", "eta_s"}


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run():
    """Same seed: stopping after epoch 1 and resuming gives bit-identical weights and metrics."""
    spec, data = _setup(3)
    full = LocalHost()
    uninterrupted = run_training(spec, data, full)

    spec, data = _setup(3)
    first = LocalHost(stop_after_epoch=1)
    assert run_training(spec, data, first)["stopped"]
    spec, data = _setup(3)
    second = LocalHost(resume_from=first.checkpoints[-1])
    resumed = run_training(spec, data, second)

    assert resumed["metrics"] == uninterrupted["metrics"]
    a, b = full.checkpoints[-1]["model"], second.checkpoints[-1]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in uninterrupted["history"]]


def test_warmup_ramps_the_lr_per_step_and_resumes_exactly():
    """warmup_steps=6 over 4 steps per epoch: the steps' lr rise linearly into the
    schedule (epoch 2 is already stepped down), and a run resumed after epoch 1
    continues the ramp where it stopped."""
    spec, data = _setup(3, warmup_steps=6)
    progress = []
    uninterrupted = run_training(spec, data, LocalHost(on_progress=progress.append))
    scheduled = [0.02] * 4 + [0.01] * 4 + [0.005] * 4
    ramp = [min(1.0, (k + 1) / 6) for k in range(12)]
    assert [p["lr"] for p in progress] == pytest.approx([s * r for s, r in zip(scheduled, ramp)])
    assert [h["lr"] for h in uninterrupted["history"]] == pytest.approx([0.02, 0.01, 0.005])

    spec, data = _setup(3, warmup_steps=6)
    first = LocalHost(stop_after_epoch=1)
    run_training(spec, data, first)
    spec, data = _setup(3, warmup_steps=6)
    resumed_progress = []
    resumed = run_training(spec, data, LocalHost(resume_from=first.checkpoints[-1],
                                                 on_progress=resumed_progress.append))
    assert [p["lr"] for p in resumed_progress] == pytest.approx([p["lr"] for p in progress[4:]])
    assert resumed["metrics"] == uninterrupted["metrics"]


def test_progress_carries_finished_epochs_and_the_loss_curve():
    """Every progress record carries ``history`` (the epochs finished so far) and ``curve``: a
    [global_step, loss, lr] point per step so far, so a page opened mid-run can draw the whole run."""
    spec, data = _setup(3)
    progress = []
    result = run_training(spec, data, LocalHost(on_progress=progress.append))
    for done, record in enumerate(progress, start=1):
        assert [p[0] for p in record["curve"]] == list(range(1, done + 1))
        assert record["curve"][-1][1:] == pytest.approx([record["loss"], record["lr"]])
        assert record["history"] == result["history"][: (done - 1) // spec.steps_per_epoch]
    assert [p[1:] for p in progress[-1]["curve"]] == [[p["loss"], p["lr"]] for p in progress]


@pytest.mark.parametrize("start_step,num_steps", [(1, 256), (1, 257), (1, 5000), (1201, 700)])
def test_loss_curve_stays_within_256_evenly_spaced_points_spanning_the_run(start_step, num_steps):
    """Past 256 points the curve keeps every other point and doubles its stride: never more than 256
    points, evenly spaced, reaching the newest sampled step (also when a resumed run starts mid-way)."""
    spec, _ = _setup(1)
    run = _Run.build(spec, LocalHost())
    for global_step in range(start_step, start_step + num_steps):
        run.sample_curve(global_step, 1.0 / global_step, 0.01)
        steps = [p[0] for p in run.curve]
        assert 0 < len(steps) <= 256 and steps[-1] <= global_step < steps[-1] + run.curve_stride
        assert all(b - a == run.curve_stride for a, b in zip(steps, steps[1:]))
    assert len(run.curve) >= 128 or run.curve_stride == 1  # thinning keeps at least half
    assert run.curve[0][0] < start_step + 2 * run.curve_stride  # still spans the run's start
    assert all(loss == pytest.approx(1.0 / step) for step, loss, _ in run.curve)


def test_non_finite_loss_is_a_clear_error():
    spec, data = _setup(1, lrate=1e9)
    with pytest.raises(FloatingPointError, match="lower lrate"):
        run_training(spec, data, LocalHost())


def _box_rows(n: int, seed: int) -> pa.Table:
    """One bright square per dark image, its box in Clarifai's normalized convention."""
    from PIL import Image, ImageDraw
    import io

    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for _ in range(n):
        img = Image.new("RGB", (96, 96), (20, 20, 20))
        x, y, w = int(rng.integers(0, 50)), int(rng.integers(0, 50)), int(rng.integers(24, 44))
        ImageDraw.Draw(img).rectangle((x, y, x + w, y + w), fill=(230, 230, 230))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        images.append(buf.getvalue())
        boxes.append([{"top_row": y / 96, "left_col": x / 96, "bottom_row": (y + w) / 96, "right_col": (x + w) / 96,
                       "concept": 0}])
    return pa.table({"image": images, "width": [96] * n, "height": [96] * n, "concepts": [[] for _ in range(n)],
                     "boxes": boxes})


@pytest.mark.parametrize("task,template_name", [("classification", "ResNext"), ("detection", "InceptionV2"),
                                                ("embedding", "ResNext")])
def test_every_task_trains_evaluates_and_writes_its_report(tmp_path, task, template_name):
    from deeptrain.storage import Storage
    from deeptrain.training.report import write_report

    size = 32 if task != "detection" else 96
    template = get_template(task, template_name)
    params = resolve_params(template, {"image_size": size, "batch_size": 4, "num_epochs": 1, "lrate": 0.01,
                                       "seed": 1})
    if task == "detection":
        concept_ids = ["square"]
        pre = Preprocessor(task=task, image_size=size, canvas=size, class_map=[0], num_classes=1, max_boxes=1)
        train, test = _box_rows(8, 0), _box_rows(4, 1)
    else:
        concept_ids = ["dark", "bright"]
        pre = Preprocessor(task=task, image_size=size, canvas=48, class_map=[0, 1], num_classes=2)
        train, test = _rows(8, 0), _rows(8, 1)
    spec = TrainSpec(task=task, template=template_name, params=params,
                     concept_ids=concept_ids, steps_per_epoch=2)
    host = LocalHost()
    result = run_training(spec, LocalData(train, test, pre, batch_size=4, seed=1), host)
    expected = {"classification": ("top1", ["confusion_matrix.png", "loss_lr.png", "pr_curves.png"]),
                "detection": ("ap50", ["ap_per_concept.png", "detection_samples.png", "loss_lr.png"]),
                "embedding": ("recall@1", ["loss_lr.png", "recall_at_k.png"])}[task]
    assert expected[0] in result["metrics"]
    storage = Storage(str(tmp_path / "storage"))
    report = write_report(storage, "v", task, concept_ids, result["history"], host.checkpoints[-1]["eval"])
    assert report["plots"] == expected[1]
    for name in expected[1]:
        assert storage.get_bytes(f"v/{name}").startswith(b"\x89PNG")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_steps_and_fp16_scales_its_loss(precision):
    """Mixed precision under CPU autocast (the GPU figures are bench/gpu_smoke.py's): three optimizer steps give
    finite losses and move the head; fp16 steps through a GradScaler (CPU fp16 is slow: steps, not epochs)."""
    spec, data = _setup(1, precision=precision)
    run = _Run.build(spec, LocalHost())
    assert (run.scaler is not None) == (precision == "fp16")
    head = run.model.fc.weight.detach().clone()
    batch = next(iter(data.train_batches(0)))
    losses = [run.step(batch, 0, step)[0] for step in range(3)]
    assert all(np.isfinite(losses)), losses
    assert not torch.equal(head, run.model.fc.weight.detach())
