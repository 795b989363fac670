"""The control plane's datasets, models, model versions, tuning runs and jobs in Clarifai's shapes: every answer
parses with the official client's protobuf classes, bad training params are refused with 21202 before anything
is recorded, and each version status renders as Clarifai's code.

In process over ASGI (``serve.v2.control.control_api``, no Ray), versions made through
``deeptrain.services.models`` directly; the one test that submits a real Ray job is marked ``ray``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_pb2
from fastapi.testclient import TestClient
from google.protobuf import json_format

from deeptrain.services import keys as key_service
from deeptrain.services import models as model_service
from deeptrain.services import tune_runs
from deeptrain.services.context import Context
from deeptrain.wire import codes
from serve.v2.bodies_models import TrainOptions
from serve.v2.control import control_api
from serve.v2.state import Services
from tests import imagegen

APP = "a"
BASE = f"/v2/users/me/apps/{APP}"
CLASSIFIER = {"id": "clf", "model_type_id": "visual-classifier", "output_info": {"data": {"concepts": [
    {"id": "even", "value": 1.0}, {"id": "odd", "value": 1.0}]}}, "metadata": {"params": {"image_size": 32.0}}}


def _png(n: int) -> bytes:
    return imagegen.png_bytes((n * 7 % 256, n * 13 % 256, n * 29 % 256), size=(24 + n % 5, 20))


def parsed(response, message):
    """The answer as the official client reads it (a wrong JSON type for a known field raises)."""
    return json_format.ParseDict(response.json(), message(), ignore_unknown_fields=True)


@pytest.fixture
def world(local_settings):
    from deeptrain.sdk import Client

    client = Client(local_settings)
    client.create_app(APP)
    for i in range(12):
        client.add_input(APP, _png(i), concepts=["even" if i % 2 == 0 else "odd"], split="test" if i >= 10 else "train")
    ctx = Context.from_settings(local_settings)
    http = TestClient(control_api(Services(ctx)), raise_server_exceptions=False)
    http.headers["Authorization"] = f"Key {key_service.create_user_key(ctx)['key']}"
    return http, ctx


def _status(r) -> tuple[int, int]:
    return r.status_code, r.json()["status"]["code"]


def _no_storage_paths(r, ctx: Context) -> None:
    assert str(ctx.settings.home) not in r.text and "file:" not in r.text


# --- datasets ------------------------------------------------------------------------------------------------

def test_dataset_versions_snapshot_list_and_get_in_clarifai_shapes(world):
    http, ctx = world
    r = http.post(f"{BASE}/datasets", json={"datasets": [{"id": "mine", "description": "d"}],
                                            "user_app_id": {"user_id": "me", "app_id": APP}})
    assert parsed(r, service_pb2.MultiDatasetResponse).datasets[0].id == "mine"
    r = http.post(f"{BASE}/datasets/mine/versions",
                  json={"dataset_versions": [{"description": "first", "metadata": {"test_fraction": 0.2}}]})
    first = parsed(r, service_pb2.MultiDatasetVersionResponse).dataset_versions[0]
    assert (first.status.code, first.dataset_id, first.metrics["/"].inputs_count.value) == (codes.DATASET_VERSION_READY,
                                                                                            "mine", 12)
    assert first.metrics["/splits/test"].inputs_count.value == 2
    assert r.json()["dataset_versions"][0]["metadata"]["deeptrain"]["existing"] is False
    _no_storage_paths(r, ctx)
    again = http.post(f"{BASE}/datasets/mine/versions", json={})
    assert again.json()["dataset_versions"][0]["id"] == first.id  # the same data: the same version
    assert again.json()["dataset_versions"][0]["metadata"]["deeptrain"]["existing"] is True
    listed = parsed(http.get(f"{BASE}/datasets/mine/versions"), service_pb2.MultiDatasetVersionResponse)
    assert [v.id for v in listed.dataset_versions] == [first.id]
    got = http.get(f"{BASE}/datasets/mine/versions/{first.id}")
    version = parsed(got, service_pb2.SingleDatasetVersionResponse).dataset_version
    assert version.metrics["/"].positive_input_tags_count.value == 12
    assert got.json()["dataset_version"]["metadata"]["deeptrain"]["counts"]["concepts"]["even"]["train"] == 5
    _no_storage_paths(got, ctx)
    dataset = parsed(http.get(f"{BASE}/datasets/mine"), service_pb2.SingleDatasetResponse).dataset
    assert (dataset.id, dataset.version.id) == ("mine", first.id)
    assert [d.id for d in parsed(http.get(f"{BASE}/datasets"), service_pb2.MultiDatasetResponse).datasets] == ["default"]
    assert parsed(http.get("/v2/users/me/datasets"), service_pb2.MultiDatasetResponse).datasets[0].app_id == APP
    assert _status(http.get(f"{BASE}/datasets/mine/versions/nope")) == (404, codes.CONN_DOES_NOT_EXIST)


# --- models --------------------------------------------------------------------------------------------------

def test_models_create_list_get_delete_and_types(world):
    http, _ = world
    r = http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    model = parsed(r, service_pb2.SingleModelResponse).model
    assert (model.id, model.model_type_id, [c.id for c in model.output_info.data.concepts]) == (
        "clf", "visual-classifier", ["even", "odd"])
    native = r.json()["model"]["metadata"]["deeptrain"]
    assert (native["task"], native["template"], native["params"]) == ("classification", "ResNext", {"image_size": 32})
    r = http.post(f"{BASE}/models", json={"models": [
        {"id": "det", "model_type_id": "visual-detector"},
        {"id": "emb", "model_type_id": "visual-embedder",
         "model_version": {"train_info": {"params": {"template": "InceptionBatchNorm"}}}}]})
    assert [m["metadata"]["deeptrain"]["template"] for m in r.json()["models"]] == ["InceptionV2", "InceptionBatchNorm"]
    listed = parsed(http.get(f"{BASE}/models"), service_pb2.MultiModelResponse)
    assert [m.id for m in listed.models] == ["clf", "det", "emb"]
    only = parsed(http.get(f"{BASE}/models", params={"model_type_id": "visual-embedder"}), service_pb2.MultiModelResponse)
    assert [m.id for m in only.models] == ["emb"]
    types = parsed(http.get(f"{BASE}/models/types"), service_pb2.MultiModelTypeResponse).model_types
    assert [t.id for t in types] == ["visual-classifier", "visual-detector", "visual-embedder"]
    assert parsed(http.get(f"{BASE}/models/types/visual-detector"), service_pb2.SingleModelTypeResponse
                  ).model_type.trainable
    got = parsed(http.get(f"{BASE}/models/clf"), service_pb2.SingleModelResponse).model
    assert got.id == "clf" and not got.model_version.id  # no version yet
    assert _status(http.post(f"{BASE}/models", json={"model": CLASSIFIER})) == (409, codes.MODEL_INVALID_ARGUMENT)
    assert _status(http.delete(f"{BASE}/models/det")) == (200, codes.SUCCESS)
    assert _status(http.get(f"{BASE}/models/det")) == (404, codes.MODEL_DOES_NOT_EXIST)


@pytest.mark.parametrize(("body", "words"), [
    ({"model": {"id": "m", "model_type_id": "visual-segmenter"}},
     ["visual-classifier", "visual-detector", "visual-embedder"]),
    ({"model": {"id": "m", "model_type_id": "visual-classifier", "metadata": {"template": "Nope"}}}, ["ResNext"]),
    ({"model": {"id": "m", "model_type_id": "visual-classifier", "metadata": {"params": {"image_size": 32.5}}}},
     ["image_size", "integer"]),
    ({"model": {"id": "m", "model_type_id": "visual-classifier", "output_info": {"data": {"concepts": [
        {"id": "cat"}]}}}}, ["cat"]),
    ({}, ["model"]),
], ids=["type", "template", "fractional-int", "concept", "empty"])
def test_bad_models_are_refused_with_21202(world, body, words):
    http, ctx = world
    r = http.post(f"{BASE}/models", json=body)
    assert _status(r) == (400, codes.MODEL_INVALID_ARGUMENT)
    assert all(w in r.json()["status"]["description"] for w in words), r.text
    assert model_service.list_models(ctx, APP) == []


@pytest.mark.parametrize(("params", "words"), [
    ({"image_size": 32.5}, ["image_size", "integer"]),
    ({"imagesize": 32}, ["unknown parameter 'imagesize'", "image_size", "num_epochs", "template"]),
    ({"template": "InceptionV2"}, ["ResNext", "InceptionV2"]),
    ({"workers": 1.5}, ["workers"]),
    ({"num_epochs": "two"}, ["num_epochs"]),
    ({"batch_size": 3, "workers": 2}, ["divisible"]),
], ids=["fractional-int", "unknown-name", "other-template", "fractional-workers", "string-int", "batch-workers"])
def test_bad_training_params_are_refused_before_anything_is_recorded(world, params, words):
    http, ctx = world
    http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    r = http.post(f"{BASE}/models/clf/versions", json={"model_versions": [{"train_info": {"params": params}}]})
    assert _status(r) == (400, codes.MODEL_INVALID_ARGUMENT)
    assert all(w in r.json()["status"]["description"] for w in words), r.text
    assert model_service.list_versions(ctx, APP, "clf") == []


def test_integral_floats_from_the_struct_are_ints_and_reach_the_cluster_step(world):
    """32.0 (how a Struct carries 32) passes validation; without a Ray cluster the answer says so (503)."""
    options = TrainOptions.from_struct({"image_size": 32.0, "num_epochs": 2.0, "lrate": 0.5, "num_workers": 2.0,
                                        "dataset_version_id": "d1"})
    assert (options.overrides, options.workers, options.dataset_version_id) == (
        {"image_size": 32, "num_epochs": 2, "lrate": 0.5}, 2, "d1")
    assert isinstance(options.overrides["image_size"], int) and isinstance(options.overrides["lrate"], float)
    http, ctx = world
    http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    r = http.post(f"{BASE}/models/clf/versions", json={"model_versions": [{"train_info": {"params": {
        "image_size": 32.0, "num_epochs": 1.0}}}], "user_app_id": {"user_id": "me", "app_id": APP}})
    assert _status(r) == (503, codes.CLUSTER_INTERNAL_FAILURE), r.text
    assert "no Ray cluster" in r.json()["status"]["description"]
    assert model_service.list_versions(ctx, APP, "clf") == []


# --- versions ------------------------------------------------------------------------------------------------

HISTORY = [{"epoch": 1, "metrics": {"epoch": 1, "top1": 0.5}, "test": {"epoch": 1, "top1": 0.75}}]
STATES = {
    "queued": ({}, codes.MODEL_QUEUED_FOR_TRAINING, None),
    "training": ({"progress": {"epoch": 2, "num_epochs": 4, "step": 5, "steps_per_epoch": 10, "loss": 0.25,
                               "eta_s": 12.7}}, codes.MODEL_TRAINING, 37),
    "trained": ({"metrics": {"top1": 0.75, "top5": 1.0, "macro_f1": 0.7, "macro_auc": None, "num_test": 2,
                             "split": "test", "validation": {"top1": 0.5}}, "progress": {"history": HISTORY}},
                codes.MODEL_TRAINED, 100),
    "failed": ({"error": "RuntimeError: out of memory"}, codes.MODEL_TRAINING_FAILED, None),
    "cancelled": ({"error": "Ray job j was stopped"}, codes.JOB_CANCELLED, None),
}


def _version(ctx: Context, status: str, **fields) -> dict:
    from deeptrain.services import datasets as dataset_service

    dataset = dataset_service.snapshot(ctx, APP)["id"]
    v = model_service.new_version(ctx, APP, "clf", {"image_size": 32, "num_epochs": 4}, dataset, ["even", "odd"])
    if status != "queued":
        model_service.update_version(ctx, APP, "clf", v["id"], status="training")
        if status != "training":
            model_service.update_version(ctx, APP, "clf", v["id"], status=status)
    return model_service.update_version(ctx, APP, "clf", v["id"], **fields) if fields else v


def _other_apps_trained_version(ctx: Context) -> str:
    """A trained version of app ``b`` (its weights are ``b``'s, whatever a key of ``a`` asks)."""
    from deeptrain.sdk import Client
    from deeptrain.services import datasets as dataset_service

    client = Client(ctx.settings)
    client.create_app("b")
    client.add_input("b", _png(2), concepts=["even"], split="train")
    client.create_model("b", "clf", "classification", "ResNext", {"image_size": 32})
    v = model_service.new_version(ctx, "b", "clf", {"image_size": 32}, dataset_service.snapshot(ctx, "b")["id"],
                                  ["even"])
    model_service.update_version(ctx, "b", "clf", v["id"], status="training")
    model_service.update_version(ctx, "b", "clf", v["id"], status="trained")
    return v["id"]


@pytest.mark.parametrize("where", ["models", "versions", "tune_runs"])
def test_init_from_over_http_names_no_file_uri_or_other_apps_version(world, where):
    """A key of app a cannot make the server read a path, a URI or app b's weights through init_from: each is
    refused with one message (no "no such file" / "not readable" oracle), nothing recorded; imagenet passes."""
    http, ctx = world
    other = _other_apps_trained_version(ctx)
    http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    hostile = ["/etc/passwd", "file:///etc/hostname", f"{ctx.settings.storage_uri}/apps", "s3://bucket/w.pt",
               "../../deeptrain.db", "deeptrain.db", "no-such-version", other, 7]
    answers = []
    for value in hostile:
        if where == "models":
            body = {"model": {**CLASSIFIER, "id": "m2", "metadata": {"params": {"init_from": value}}}}
            r = http.post(f"{BASE}/models", json=body)
        elif where == "versions":
            r = http.post(f"{BASE}/models/clf/versions",
                          json={"model_versions": [{"train_info": {"params": {"init_from": value}}}]})
        else:
            r = http.post(f"{BASE}/models/clf/tune_runs", json={"space": {"lrate": "choice:0.01,0.1"}, "trials": 1,
                                                                "params": {"init_from": value}})
        assert _status(r) == (400, codes.MODEL_INVALID_ARGUMENT), (value, r.text)
        answers.append(r.json()["status"]["description"])
        _no_storage_paths(r, ctx)
    strings = set(answers[:-1])  # a number is refused as one whichever check sees it first
    assert len(strings) == 1 and "deeptrain weights add" in strings.pop()
    assert [m["id"] for m in model_service.list_models(ctx, APP)] == ["clf"]
    assert model_service.list_versions(ctx, APP, "clf") == [] and tune_runs.list_runs(ctx, APP, "clf") == []
    if where == "models":  # the symbolic values pass the same check
        r = http.post(f"{BASE}/models", json={"model": {**CLASSIFIER, "id": "m3",
                                                        "metadata": {"params": {"init_from": "imagenet"}}}})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("status", list(STATES))
def test_each_version_status_renders_as_clarifais_code(world, status):
    http, ctx = world
    http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    fields, code, percent = STATES[status]
    v = _version(ctx, status, **fields)
    r = http.get(f"{BASE}/models/clf/versions/{v['id']}")
    version = parsed(r, service_pb2.SingleModelVersionResponse).model_version
    assert (version.id, version.status.code, version.status.percent_completed) == (v["id"], code, percent or 0)
    assert version.train_info.params["image_size"] == 32 and version.train_info.dataset.version.id
    assert r.json()["model_version"]["metadata"]["deeptrain"]["status"] == status
    if status == "training":
        assert version.status.details == "epoch 2/4, step 5/10, loss 0.25" and version.status.time_remaining == 12
    if status in ("failed", "cancelled"):
        assert version.status.details == fields["error"]
    if status == "trained":
        assert (version.metrics.status.code, round(version.metrics.summary.top1_accuracy, 4)) == (21300, 0.75)
        assert version.completed_at.seconds > 0
    listed = parsed(http.get(f"{BASE}/models/clf/versions"), service_pb2.MultiModelVersionResponse)
    assert [x.status.code for x in listed.model_versions] == [code]
    shown = parsed(http.get(f"{BASE}/models/clf"), service_pb2.SingleModelResponse).model.model_version
    assert shown.id == v["id"]  # no default and no trained version: the newest is shown
    trained_only = http.get(f"{BASE}/models/clf/versions", params={"trained_only": "True"}).json()["model_versions"]
    assert len(trained_only) == (status == "trained")


def test_cancel_a_queued_version_then_delete_it(world):
    http, ctx = world
    http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    v = _version(ctx, "queued")
    assert _status(http.delete(f"{BASE}/models/clf/versions/{v['id']}")) == (409, codes.MODEL_INVALID_ARGUMENT)
    r = http.post(f"{BASE}/models/clf/versions/{v['id']}/cancel")
    assert parsed(r, service_pb2.SingleModelVersionResponse).model_version.status.code == codes.JOB_CANCELLED
    assert _status(http.post(f"{BASE}/models/clf/versions/{v['id']}/cancel")) == (409, codes.MODEL_INVALID_ARGUMENT)
    r = http.delete(f"{BASE}/models/clf/versions/{v['id']}")
    assert parsed(r, status_pb2.BaseResponse).status.code == codes.SUCCESS
    assert _status(http.get(f"{BASE}/models/clf/versions/{v['id']}")) == (404, codes.MODEL_DOES_NOT_EXIST)


def test_metrics_of_a_trained_version_and_refusal_of_an_untrained_one(world):
    http, ctx = world
    http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    trained = _version(ctx, "trained", **STATES["trained"][0])
    for call in (http.get, http.post):
        r = call(f"{BASE}/models/clf/versions/{trained['id']}/metrics")
        metrics = parsed(r, service_pb2.SingleModelVersionResponse).model_version.metrics
        assert (metrics.status.code, round(metrics.summary.top5_accuracy, 4)) == (21300, 1.0)
        assert round(metrics.summary.macro_avg_f1_score, 4) == 0.7
        assert r.json()["model_version"]["metadata"]["deeptrain"]["metrics"]["validation"] == {"top1": 0.5}
    queued = _version(ctx, "failed", error="boom")
    r = http.get(f"{BASE}/models/clf/versions/{queued['id']}/metrics")
    assert _status(r) == (409, codes.MODEL_TRAINING_FAILED)
    model_service.set_default_version(ctx, APP, "clf", trained["id"])
    shown = parsed(http.get(f"{BASE}/models/clf"), service_pb2.SingleModelResponse).model.model_version
    assert shown.id == trained["id"]  # the default version, though another is newer


# --- tuning runs and jobs ------------------------------------------------------------------------------------

def test_tune_runs_list_get_promote_and_bad_searches(world):
    from deeptrain.jobs.tune_scheduler import choose_scheduler

    http, ctx = world
    http.post(f"{BASE}/models", json={"model": CLASSIFIER})
    trained = _version(ctx, "trained", **STATES["trained"][0])
    run = tune_runs.create_run(ctx, APP, "clf", metric="top1", mode="max", space={"lrate": "choice:0.01,0.1"},
                               params={}, num_trials=1, max_concurrent=1, num_workers=1,
                               scheduler=choose_scheduler("fifo", None, 2, test_freq=1, max_t=1),
                               dataset_version_id=trained["dataset_version_id"])
    listed = http.get(f"{BASE}/models/clf/tune_runs")
    assert parsed(listed, status_pb2.BaseResponse).status.code == codes.SUCCESS
    assert [r["id"] for r in listed.json()["tune_runs"]] == [run["id"]]
    got = http.get(f"{BASE}/models/clf/tune_runs/{run['id']}").json()["tune_run"]
    assert got["metadata"]["deeptrain"]["trials"] == [] and got["created_at"].endswith("Z")
    assert _status(http.post(f"{BASE}/models/clf/tune_runs/{run['id']}/promote")) == (409, codes.MODEL_INVALID_ARGUMENT)
    tune_runs.update_run(ctx, APP, "clf", run["id"], status="finished", best_version=trained["id"])
    r = http.post(f"{BASE}/models/clf/tune_runs/{run['id']}/promote")
    assert parsed(r, service_pb2.SingleModelResponse).model.metadata["deeptrain"]["default_version"] == trained["id"]
    assert _status(http.get(f"{BASE}/models/clf/tune_runs/nope")) == (404, codes.CONN_DOES_NOT_EXIST)
    bad = http.post(f"{BASE}/models/clf/tune_runs", json={"space": {"lrat": "loguniform:1e-4:1e-1"}, "trials": 2})
    assert _status(bad) == (400, codes.MODEL_INVALID_ARGUMENT) and "lrate" in bad.json()["status"]["description"]
    no_ray = http.post(f"{BASE}/models/clf/tune_runs", json={"space": ["lrate=loguniform:1e-4:1e-1"], "trials": 2})
    assert _status(no_ray) == (503, codes.CLUSTER_INTERNAL_FAILURE)
    assert _status(http.get(f"{BASE}/jobs/deeptrain-x")) == (503, codes.CLUSTER_INTERNAL_FAILURE)


# --- the real Ray job a route submits: tests/test_clarifai_client.py (a real server on S3 + PostgreSQL) ---------

def test_a_server_submits_to_ray_api_server_address_else_its_own_cluster(monkeypatch):
    import ray

    from deeptrain.errors import ClusterError
    from deeptrain.jobs import submit

    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head.example:8265")
    assert submit.serving_address() == "http://head.example:8265"
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if not ray.is_initialized():  # (a session Ray cluster may run: then it is the answer, see the ray test)
        with pytest.raises(ClusterError, match="RAY_API_SERVER_ADDRESS"):
            submit.serving_address()
    assert submit.serving_env()["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # the job's python
