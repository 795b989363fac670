"""The SDK's typed results: checked by pydantic, read as attributes, and still the dicts scripts expect."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
from pydantic import BaseModel, ValidationError

from deeptrain.results import App, ImportResult, Key, Rejected, TuneRun, Version, dump

VERSION = {"id": "v1", "app_id": "a", "model_id": "m", "status": "trained", "params": {"lrate": 0.1},
           "dataset_version_id": "d", "concepts": ["cat", "dog"], "metrics": {"top1": 0.9, "epoch": 3},
           "progress": None, "artifacts": "apps/a/models/m/v1", "error": None, "job_id": None, "tune_run": None,
           "created_at": "2024-01-01T00:00:00+00:00", "started_at": None, "finished_at": None,
           "not_declared": [1, 2]}


def test_a_result_is_the_service_dict_with_typed_attributes():
    v = Version(VERSION)
    assert v == VERSION and dict(v) == VERSION and {**v} == VERSION and list(v) == list(VERSION)
    assert v.status == v["status"] == "trained" and v.metrics["top1"] == v["metrics"]["top1"] == 0.9
    assert v.not_declared == [1, 2] and "not_declared" in v and v.get("nope") is None
    assert json.dumps(v) == json.dumps(VERSION)  # key order and values as the service gave them
    assert v.model_dump(mode="json") == VERSION and type(v.model_dump()) is dict
    assert pickle.loads(pickle.dumps(v)) == v and isinstance(copy.deepcopy(v), Version)
    with pytest.raises(AttributeError):
        v.nope
    with pytest.raises(AttributeError):
        v.status = "failed"


def test_nested_records_are_typed_and_compare_as_dicts():
    report = ImportResult(imported=1, duplicates=0, rejected=[{"file": "x.png", "reason": "empty"}], seconds=0.5,
                          images_per_s=2.0)
    assert isinstance(report.rejected[0], Rejected) and report.rejected[0].reason == "empty"
    assert report["rejected"] == [{"file": "x.png", "reason": "empty"}]
    assert json.loads(json.dumps(report)) == dump(report) == report
    assert type(dump(report)["rejected"][0]) is dict


def test_optional_fields_left_out_stay_out():
    app = App(id="a", name="A", created_at="t")
    assert app.num_inputs is None and "num_inputs" not in app and app.model_dump() == {"id": "a", "name": "A",
                                                                                         "created_at": "t"}
    key = Key(id="k", app_id="a", name="k", scopes=["predict"], created_at="t", revoked_at=None)
    assert key.key is None and "key" not in key


def test_values_are_kept_as_given_and_checked():
    run = TuneRun(id="r", app_id="a", model_id="m", status="finished", metric="top1", mode="max", space={},
                  params={}, num_trials=1, max_concurrent=1, num_workers=1, dataset_version_id="d",
                  best_version=None, artifacts="p", error=None, created_at="t", finished_at=None,
                  scheduler={"name": "fifo", "time_attr": "epoch", "max_t": 1, "grace_period": 1,
                             "reduction_factor": 2, "note": "ASHA needs more epochs (1) than its grace period (1)"})
    assert run.scheduler.name == "fifo" and run.scheduler.note.startswith("ASHA") and run.trials is None
    assert ImportResult(imported=1, duplicates=0, rejected=[], seconds=1, images_per_s=2)["seconds"] == 1
    assert json.dumps(ImportResult(imported=1, duplicates=0, rejected=[], seconds=1, images_per_s=2)).count(".") == 0
    with pytest.raises(ValidationError, match="id"):
        App(id=1, name="A", created_at="t")
    with pytest.raises(ValidationError, match="status"):
        Version({k: v for k, v in VERSION.items() if k != "status"})


def test_results_are_pydantic_types():
    class Page(BaseModel):
        versions: list[Version]

    page = Page.model_validate({"versions": [VERSION]})
    assert isinstance(page.versions[0], Version) and page.model_dump()["versions"] == [VERSION]
    assert json.loads(page.model_dump_json())["versions"][0]["metrics"] == {"top1": 0.9, "epoch": 3}
    assert "status" in Version.model_json_schema()["required"]
    assert Version.model_validate(VERSION) == Version.model_validate(Version(VERSION)) == VERSION
