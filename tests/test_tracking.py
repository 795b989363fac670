"""Experiment tracking (``deeptrain.tracking``): TensorBoard event files under a version's artifacts and MLflow
runs, both read back with their own readers (tensorboard's ``EventAccumulator``, ``MlflowClient``) from a real
MLflow tracking store (SQLite backend, file artifact root).

The unit tests track synthetic versions (a 3-epoch history, report files in storage); the end-to-end ones train
one version for an epoch in this process (the Ray-free loop) and finish it as training does (``finish_version``,
and the failure path ``recording_failure``).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deeptrain.config import Settings
from deeptrain.services import models as model_service
from deeptrain.services import tune_runs
from deeptrain.services.context import Context
from deeptrain.storage import Storage
from deeptrain.tracking import track_version, tracking_tune_run
from deeptrain.tracking.scalars import epoch_scalars
from deeptrain.tracking.tensorboard import write_events

HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "lr": 0.1, "images_per_s": 50.0, "seconds": 1.5, "metrics": {}, "test": {}},
    {"epoch": 2, "train_loss": 1.5, "lr": 0.1, "images_per_s": 55.0, "seconds": 1.4,
     "metrics": {"epoch": 2, "top1": 0.5, "recall@1": 0.4, "per_concept": {"cat": {"ap": 0.25}},
                 "confusion_matrix": [[1, 2], [3, 4]]}, "test": {}},
    {"epoch": 3, "train_loss": 1.0, "lr": 0.01, "images_per_s": 60.0, "seconds": 1.3,
     "metrics": {"epoch": 3, "top1": 0.75, "recall@1": 0.6, "per_concept": {"cat": {"ap": 0.5}}},
     "test": {"epoch": 3, "top1": 0.7, "top5": 1.0, "ok": True}},
]
PARAMS = {"lrate": 0.1, "batch_size": 8, "image_size": 32, "schedule": {"kind": "step", "gamma": 0.1}, "seed": None}
REPORT = {"task": "classification", "metrics": {"top1": 0.7}}


def _read_events(folder: Path | str) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """A real MLflow tracking store (SQLite); experiments' artifacts under ``mlartifacts/`` beside it."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def quick_mlflow_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def _ctx(tmp_path: Path, uri: str | None, **env: str) -> Context:
    variables = {"DEEPTRAIN_HOME": str(tmp_path / "home"), **env}
    if uri:
        variables["DEEPTRAIN_MLFLOW_TRACKING_URI"] = uri
    return Context.from_settings(Settings.from_env(env=variables))


def _version(ctx: Context, status: str = "trained", history=HISTORY, **fields) -> dict:
    """A version record as the store gives it, with its report files in storage."""
    version_id = uuid.uuid4().hex[:10]
    prefix = f"apps/a/models/m/versions/{version_id}"
    ctx.storage.put_bytes(f"{prefix}/report.json", json.dumps(REPORT).encode())
    ctx.storage.put_bytes(f"{prefix}/manifest.json", b'{"version_id": "%s"}' % version_id.encode())
    ctx.storage.put_bytes(f"{prefix}/loss_lr.png", b"\x89PNG fake plot")
    ctx.storage.put_bytes(f"{prefix}/weights.safetensors", b"weights never go to MLflow")
    return {"id": version_id, "app_id": fields.pop("app_id", "a"), "model_id": fields.pop("model_id", "m"),
            "status": status, "params": PARAMS, "artifacts": prefix, "dataset_version_id": "dv1", "error": None,
            "tune_run": None, "progress": {"history": history}, **fields}


MODEL = {"task": "classification", "template": "ResNext"}


def _run_of(uri: str, version: dict):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"deeptrain/{version['app_id']}/{version['model_id']}")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.version = '{version['id']}'")
    assert len(runs) == 1, runs
    return client, runs[0]


# --- TensorBoard -------------------------------------------------------------------------


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path) -> Storage:
    """Empty object storage: a folder, or a bucket prefix on the session's S3 server (SeaweedFS)."""
    if request.param == "file":
        return Storage((tmp_path / "storage").as_uri())
    env = request.getfixturevalue("s3_env")
    request.getfixturevalue("monkeypatch").setenv("S3_ENDPOINT", env["AWS_ENDPOINT_URL"])  # tensorboard's S3 reader
    return Storage(f"s3://{request.getfixturevalue('s3_bucket')}/tb-{uuid.uuid4().hex[:8]}")


def test_tensorboard_events_in_storage_read_back_per_epoch(storage, tmp_path):
    """Every quantity of every epoch, at step = epoch, read back by tensorboard's reader (file:// and S3)."""
    keys = write_events(storage, "apps/a/models/m/versions/v1", HISTORY, PARAMS)
    assert keys and all(k.startswith("apps/a/models/m/versions/v1/tensorboard/events.out.tfevents.") for k in keys)
    scalars = _read_events(storage.uri_for("apps/a/models/m/versions/v1/tensorboard"))  # read in place, as
    # `tensorboard --logdir <that URI>` reads it
    assert scalars["train/loss"] == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert scalars["train/lr"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.1)), (3, pytest.approx(0.01))]
    assert scalars["validation/top1"] == [(2, 0.5), (3, 0.75)]
    assert scalars["validation/recall_at_1"] == [(2, pytest.approx(0.4)), (3, pytest.approx(0.6))]
    assert scalars["validation/per_concept/cat/ap"] == [(2, 0.25), (3, 0.5)]
    assert scalars["test/top1"] == [(3, pytest.approx(0.7))]
    assert not any("confusion" in tag or "epoch" in tag or tag == "test/ok" for tag in scalars)
    # finished again (a resumed version): one run's events, not two
    assert len(write_events(storage, "apps/a/models/m/versions/v1", HISTORY[:2])) == 1
    assert len(list(storage.list("apps/a/models/m/versions/v1/tensorboard"))) == 1


# --- MLflow --------------------------------------------------------------------------------


def test_mlflow_run_has_params_metrics_per_epoch_and_artifacts(tmp_path, mlflow_store):
    ctx = _ctx(tmp_path, mlflow_store)
    version = _version(ctx)
    assert track_version(ctx, version, MODEL) == []
    client, run = _run_of(mlflow_store, version)
    assert run.info.status == "FINISHED" and run.info.run_name == version["id"]
    assert run.data.params == {"lrate": "0.1", "batch_size": "8", "image_size": "32", "schedule.kind": "step",
                               "schedule.gamma": "0.1", "seed": "None"}
    assert {k: run.data.tags[k] for k in ("app", "model", "version", "task", "template", "kind")} == {
        "app": "a", "model": "m", "version": version["id"], "task": "classification", "template": "ResNext",
        "kind": "version"}
    for name in ("train/loss", "train/lr", "validation/top1", "validation/recall_at_1", "test/top1"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        expected = [(epoch, values[name]) for epoch, values in epoch_scalars(HISTORY) if name in values]
        assert history == expected and expected, name
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"report.json", "manifest.json", "loss_lr.png", "tensorboard"}  # no weights
    events = client.list_artifacts(run.info.run_id, "tensorboard")
    assert len(events) == 1 and events[0].path.startswith("tensorboard/events.out.tfevents.")
    downloaded = client.download_artifacts(run.info.run_id, "report.json", str(tmp_path))
    assert json.loads(Path(downloaded).read_text()) == REPORT
    tb = Path(client.download_artifacts(run.info.run_id, "tensorboard", str(tmp_path)))
    assert _read_events(tb)["train/loss"] == [(1, 2.0), (2, 1.5), (3, 1.0)]


@pytest.mark.parametrize(("status", "mlflow_status"), [("cancelled", "KILLED"), ("failed", "FAILED")])
def test_a_stopped_version_is_logged_with_what_it_had(tmp_path, mlflow_store, status, mlflow_status):
    ctx = _ctx(tmp_path, mlflow_store)
    version = _version(ctx, status, HISTORY[:2], error="worker died" if status == "failed" else None)
    assert track_version(ctx, version, MODEL) == []
    client, run = _run_of(mlflow_store, version)
    assert run.info.status == mlflow_status
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert run.data.tags.get("error") == version["error"]


def test_a_resumed_version_continues_its_run_without_logging_an_epoch_twice(tmp_path, mlflow_store):
    ctx = _ctx(tmp_path, mlflow_store)
    version = _version(ctx, "cancelled", HISTORY[:2])
    track_version(ctx, version, MODEL)
    track_version(ctx, {**version, "status": "trained", "progress": {"history": HISTORY}}, MODEL)
    client, run = _run_of(mlflow_store, version)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2, 3]


def test_a_search_is_a_parent_run_with_its_trials_versions_nested(tmp_path, mlflow_store):
    ctx = _ctx(tmp_path, mlflow_store)
    model_service.create_model(ctx, *_app(ctx, "tuned"), "classification", "ResNext")
    run = tune_runs.create_run(ctx, "tuned", "m", metric="top1", mode="max",
                               space={"lrate": "loguniform(0.001, 0.1)"}, params={"num_epochs": 3}, num_trials=2,
                               max_concurrent=1, num_workers=1, scheduler={"name": "fifo"}, dataset_version_id="dv1")
    ctx.storage.put_bytes(f"{run['artifacts']}/tune_report.json", b'{"best": null}')
    with tracking_tune_run(ctx, run):
        versions = [_version(ctx, app_id="tuned", tune_run=run["id"]) for _ in range(2)]
        for version in versions:
            assert track_version(ctx, version, MODEL) == []
        tune_runs.update_run(ctx, "tuned", "m", run["id"], status="finished", best_version=versions[1]["id"])
    client = MlflowClient(tracking_uri=mlflow_store)
    experiment = client.get_experiment_by_name("deeptrain/tuned/m").experiment_id
    [parent] = client.search_runs([experiment], filter_string="tags.kind = 'tune'")
    assert parent.info.run_name == run["id"] and parent.info.status == "FINISHED"
    assert parent.data.params["space.lrate"] == "loguniform(0.001, 0.1)"
    assert parent.data.params["params.num_epochs"] == "3"
    assert parent.data.tags["best_version"] == versions[1]["id"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"tune_report.json"}
    for version in versions:
        assert _run_of(mlflow_store, version)[1].data.tags["mlflow.parentRunId"] == parent.info.run_id
    with pytest.raises(KeyboardInterrupt), tracking_tune_run(ctx, run):  # resumed, then interrupted
        raise KeyboardInterrupt
    assert client.get_run(parent.info.run_id).info.status == "FAILED"
    assert len(client.search_runs([experiment], filter_string="tags.kind = 'tune'")) == 1


def _app(ctx: Context, app_id: str) -> tuple[str, str]:
    from deeptrain.services import apps

    apps.create_app(ctx, app_id)
    return app_id, "m"


def test_an_unreachable_mlflow_server_is_a_warning_not_an_error(tmp_path, quick_mlflow_http):
    ctx = _ctx(tmp_path, f"http://user:secret@127.0.0.1:{_closed_port()}")
    version = _version(ctx)
    started = time.monotonic()
    warnings = track_version(ctx, version, MODEL)
    assert time.monotonic() - started < 10
    assert len(warnings) == 1 and "MLflow" in warnings[0] and "unreachable" in warnings[0]
    assert "secret" not in warnings[0]
    assert list(ctx.storage.list(f"{version['artifacts']}/tensorboard"))  # TensorBoard still written


def test_tensorboard_can_be_turned_off(tmp_path):
    ctx = _ctx(tmp_path, None, DEEPTRAIN_TENSORBOARD="false")
    version = _version(ctx)
    assert track_version(ctx, version, MODEL) == []
    assert not list(ctx.storage.list(f"{version['artifacts']}/tensorboard"))


# --- end to end: a version trained in this process, finished as training finishes it ---------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_store):
    """App ``fm`` with 60 Fashion-MNIST images and one epoch's checkpoint state of a 32-px classifier."""
    import pyarrow.compute as pc

    from deeptrain.jobs.train import queue_version
    from deeptrain.sample_data import write_fashion_mnist_folder
    from deeptrain.sdk import Client
    from deeptrain.training.local import LocalData, LocalHost
    from deeptrain.training.loop import TrainSpec, run_training
    from deeptrain.training.preprocess import Preprocessor

    root = tmp_path_factory.mktemp("track-e2e")
    write_fashion_mnist_folder(root / "train", "train", per_class=4)
    write_fashion_mnist_folder(root / "test", "test", per_class=2)
    ctx = _ctx(root, mlflow_store)
    client = Client(ctx.settings)
    client.create_app("fm")
    client.import_inputs("fm", root / "train", format="imagefolder", split="train")
    client.import_inputs("fm", root / "test", format="imagefolder", split="test")
    dataset_id = client.snapshot("fm")["id"]
    client.create_model("fm", "m", "classification", "ResNext",
                        {"image_size": 32, "batch_size": 8, "num_epochs": 1, "lrate": 0.05})
    version, plan = queue_version(ctx, "fm", "m", dataset_version_id=dataset_id)
    columns = ["image", "width", "height", "concepts", "boxes"]
    table = client.open_dataset("fm", dataset_id).to_table(columns=[*columns, "split"])
    split = {s: table.filter(pc.field("split") == s).select(columns) for s in ("train", "validation", "test")}
    pre = Preprocessor(task="classification", image_size=32, canvas=plan.canvas, class_map=plan.class_map,
                       num_classes=len(plan.concepts), max_boxes=plan.max_boxes)
    data = LocalData(split["train"], split["test"], pre, batch_size=8, seed=plan.params.seed,
                     validation=split["validation"] if split["validation"].num_rows else None)
    host = LocalHost()
    run_training(TrainSpec(task="classification", template="ResNext", params=plan.params, concept_ids=plan.concepts,
                           steps_per_epoch=plan.steps_per_epoch), data, host)
    return SimpleNamespace(root=root, dataset_id=dataset_id, state=host.checkpoints[-1])


def _finish(trained, uri: str | None):
    from deeptrain.jobs.train import finish_version, queue_version

    ctx = _ctx(trained.root, uri)
    version, plan = queue_version(ctx, "fm", "m", dataset_version_id=trained.dataset_id)
    model_service.update_version(ctx, "fm", "m", version["id"], status="training")
    return ctx, finish_version(ctx, "fm", "m", version["id"], plan, trained.state, "trained")


def test_a_trained_version_has_tensorboard_files_and_an_mlflow_run(trained, mlflow_store, tmp_path):
    ctx, version = _finish(trained, mlflow_store)
    assert version["status"] == "trained" and "tracking_warnings" not in version["progress"]
    keys = list(ctx.storage.list(f"{version['artifacts']}/tensorboard"))
    assert len(keys) == 1
    folder = Path(ctx.storage.path(keys[0])).parent  # file storage: tensorboard --logdir reads it in place
    scalars = _read_events(folder)
    history = version["progress"]["history"]
    assert scalars["train/loss"] == [(1, pytest.approx(history[0]["train_loss"]))]
    assert scalars["validation/top1"] == [(1, pytest.approx(history[0]["metrics"]["top1"]))]
    client, run = _run_of(mlflow_store, version)
    assert run.info.status == "FINISHED" and run.data.params["image_size"] == "32"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/top1")] == [1]
    assert run.data.metrics["test/top1"] == pytest.approx(version["metrics"]["top1"])
    assert {"report.json", "manifest.json", "loss_lr.png", "confusion_matrix.png", "tensorboard"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}


def test_training_finishes_when_mlflow_is_unreachable(trained, quick_mlflow_http):
    ctx, version = _finish(trained, f"http://127.0.0.1:{_closed_port()}")
    assert version["status"] == "trained"
    assert model_service.get_version(ctx, "fm", "m", version["id"])["progress"]["tracking_warnings"][0].startswith(
        "logging to MLflow at http://127.0.0.1")
    assert list(ctx.storage.list(f"{version['artifacts']}/tensorboard"))


def test_a_failed_training_is_a_failed_mlflow_run(trained, mlflow_store):
    from deeptrain.jobs.train import queue_version, recording_failure

    ctx = _ctx(trained.root, mlflow_store)
    version, _ = queue_version(ctx, "fm", "m", dataset_version_id=trained.dataset_id)
    key = ("fm", "m", version["id"])
    with pytest.raises(RuntimeError, match="worker lost"), recording_failure(ctx, key):
        raise OSError("worker lost")
    assert model_service.get_version(ctx, *key)["status"] == "failed"
    _, run = _run_of(mlflow_store, version)
    assert run.info.status == "FAILED" and "worker lost" in run.data.tags["error"]
