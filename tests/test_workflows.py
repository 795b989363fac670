"""Workflow definitions: step rules and model checks (SDK and CLI), on both backends.

Running workflows (offline and over HTTP, on trained models) is in tests/test_serve.py.
"""

from __future__ import annotations

import json

import pytest

from deeptrain.errors import Conflict, InvalidInput, NotFound
from deeptrain.services import models as model_service
from tests.conftest import run_cli


def _model_with_version(client, model_id: str, task: str, template: str, status: str = "trained") -> str:
    client.create_model("app", model_id, task, template, {"image_size": 96 if task == "detection" else 32})
    version = model_service.new_version(client.ctx, "app", model_id, {}, "ds", ["a", "b"])
    model_service.update_version(client.ctx, "app", model_id, version["id"], status=status)
    return version["id"]


@pytest.fixture
def models(client):
    """An app with a trained detector, classifier and embedder, and a classifier still training."""
    client.create_app("app")
    versions = {
        "det": _model_with_version(client, "det", "detection", "InceptionV2"),
        "clf": _model_with_version(client, "clf", "classification", "ResNext"),
        "emb": _model_with_version(client, "emb", "embedding", "InceptionBatchNorm"),
        "busy": _model_with_version(client, "busy", "classification", "ResNext", status="training"),
    }
    return client, versions


def test_create_list_show_delete(models):
    client, versions = models
    w = client.create_workflow("app", "trees", ["detect:det", f"classify:clf:{versions['clf']}", "embed:emb"])
    assert w["steps"] == [{"kind": "detect", "model_id": "det", "version_id": None},
                          {"kind": "classify", "model_id": "clf", "version_id": versions["clf"]},
                          {"kind": "embed", "model_id": "emb", "version_id": None}]
    whole = client.create_workflow("app", "whole", [{"kind": "classify", "model_id": "clf"}])
    assert [x["id"] for x in client.list_workflows("app")] == ["trees", "whole"]
    assert client.get_workflow("app", "whole")["steps"] == whole["steps"]
    with pytest.raises(Conflict, match="workflow\\(s\\) trees"):
        client.delete_model("app", "det")
    assert client.delete_workflow("app", "trees") == {"id": "trees", "deleted": True}
    with pytest.raises(NotFound, match="workflow 'trees'"):
        client.get_workflow("app", "trees")
    client.delete_model("app", "det")  # no workflow uses it any more


@pytest.mark.parametrize("steps,error,fragment", [
    ([], InvalidInput, "1 to 8 steps, got 0"),
    (["classify:clf", "detect:det"], InvalidInput, "step 2: detect can only be the first step"),
    (["detect:det", "classify:clf", "classify:clf"], InvalidInput, "model 'clf' is already a step"),
    (["segment:clf"], InvalidInput, "unknown kind 'segment'"),
    (["classify"], InvalidInput, "invalid step 'classify'"),
    (["classify:clf:v:x"], InvalidInput, "KIND:MODEL:VERSION"),
    (["detect:clf"], InvalidInput, "detect needs a detection model, but 'clf' is a classification model"),
    (["detect:det", "classify:emb"], InvalidInput, "'emb' is an embedding model"),
    (["detect:det", "classify:nope"], NotFound, "model 'nope'"),
    (["detect:det", "classify:clf:v404"], NotFound, "version 'v404'"),
    (["detect:det", "classify:busy"], Conflict, "model 'busy' has no trained version"),
    ([{"kind": "classify"}], InvalidInput, "must have kind and model_id"),
], ids=["empty", "detect-later", "twice", "kind", "no-model", "too-many-parts", "task", "task-2", "no-model-404",
        "no-version", "untrained", "dict-missing"])
def test_step_rules(models, steps, error, fragment):
    client, _ = models
    with pytest.raises(error) as info:
        client.create_workflow("app", "w", steps)
    assert fragment in str(info.value)
    assert client.list_workflows("app") == []


def test_pinned_version_must_be_trained(models):
    client, versions = models
    with pytest.raises(Conflict, match=f"version '{versions['busy']}' of model 'busy' is training, not trained"):
        client.create_workflow("app", "w", [f"classify:busy:{versions['busy']}"])


def test_cli(local_client):
    client = local_client
    client.create_app("app")
    _model_with_version(client, "det", "detection", "InceptionV2")
    _model_with_version(client, "clf", "classification", "ResNext")
    settings = client.settings
    created = json.loads(run_cli(settings, "workflows", "create", "app", "trees", "--step", "detect:det",
                                 "--step", "classify:clf", "--json", check=True).stdout)
    assert [s["kind"] for s in created["steps"]] == ["detect", "classify"]
    listed = json.loads(run_cli(settings, "workflows", "list", "app", "--json", check=True).stdout)
    assert [w["id"] for w in listed] == ["trees"]
    assert "detect:det -> classify:clf" in run_cli(settings, "workflows", "list", "app", check=True).stdout
    for args, code, fragment in [
        (("workflows", "create", "app", "w2", "--step", "classify:clf", "--step", "detect:det"), 2,
         "detect can only be the first step"),
        (("workflows", "create", "app", "trees", "--step", "classify:clf"), 4, "already exists"),
        (("workflows", "create", "app", "Bad Name", "--step", "classify:clf"), 2, "invalid workflow id"),
        (("workflows", "show", "app", "nope"), 3, "workflow 'nope'"),
        (("workflows", "delete", "nope", "trees"), 3, "app 'nope'"),
    ]:
        proc = run_cli(settings, *args, "--json")
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert fragment in json.loads(proc.stdout)["error"]["message"]
    assert json.loads(run_cli(settings, "workflows", "delete", "app", "trees", "--json", check=True).stdout)["deleted"]
