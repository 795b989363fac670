"""The data lifecycle: relabelling (by re-import and by hand), deleting models and versions with their
objects, checkpoint retention, and garbage collection of what no record refers to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deeptrain.errors import Conflict, InvalidInput, NotFound
from deeptrain.sdk import Client
from tests import imagegen
from tests.conftest import import_fashion, run_cli


def _cli_json(settings, *args, code: int = 0, env: dict | None = None) -> dict:
    proc = run_cli(settings, *args, "--json", env=env)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _folder(root: Path) -> Path:
    for name, color, concept in (("a.png", (10, 20, 30), "cat"), ("b.png", (40, 50, 60), "cat"),
                                 ("c.png", (70, 80, 90), "dog")):
        (root / concept).mkdir(parents=True, exist_ok=True)
        (root / concept / name).write_bytes(imagegen.png_bytes(color))
    return root


def _labels(client: Client, app: str) -> dict[str, list[str]]:
    return {Path(i["source"]).name: i["concepts"] for i in client.list_inputs(app)}


# --- relabelling ------------------------------------------------------------------------------------------


def test_reimport_after_moving_a_file_relabels_only_with_update_labels(local_settings, tmp_path):
    root = _folder(tmp_path / "images")
    client = Client(local_settings)
    client.create_app("pets")
    first = _cli_json(local_settings, "inputs", "import", "pets", str(root), "--format", "imagefolder")
    assert (first["imported"], first["updated"], first["differing_labels"]) == (3, 0, 0)
    shutil.move(root / "cat" / "a.png", root / "dog" / "a.png")

    kept = _cli_json(local_settings, "inputs", "import", "pets", str(root), "--format", "imagefolder")
    assert (kept["imported"], kept["duplicates"], kept["updated"], kept["differing_labels"]) == (0, 3, 0, 1)
    assert _labels(client, "pets")["a.png"] == ["cat"]
    summary = run_cli(local_settings, "inputs", "import", "pets", str(root), "--format", "imagefolder", check=True)
    assert "1 duplicate has other labels" in summary.stdout and "--update-labels" in summary.stdout

    updated = _cli_json(local_settings, "inputs", "import", "pets", str(root), "--format", "imagefolder",
                        "--update-labels")
    assert (updated["imported"], updated["duplicates"], updated["updated"], updated["differing_labels"]) == (0, 3, 1, 0)
    assert _labels(client, "pets") == {"a.png": ["dog"], "b.png": ["cat"], "c.png": ["dog"]}
    again = _cli_json(local_settings, "inputs", "import", "pets", str(root), "--format", "imagefolder",
                      "--update-labels")
    assert again["updated"] == 0  # labels equal to the import's are left alone
    assert {c["id"] for c in client.list_concepts("pets")} == {"cat", "dog"}


def test_reimport_with_update_labels_replaces_boxes_and_negatives(local_client, tmp_path):
    (tmp_path / "a.png").write_bytes(imagegen.png_bytes((1, 2, 3), size=(64, 64)))
    box = {"concept": "tree", "top_row": 0.1, "left_col": 0.1, "bottom_row": 0.5, "right_col": 0.5}
    rows = tmp_path / "labels.jsonl"
    rows.write_text(json.dumps({"path": "a.png", "negatives": ["car"], "regions": [box]}) + "\n")
    local_client.create_app("trees")
    assert local_client.import_inputs("trees", rows, "jsonl")["imported"] == 1
    moved = {**box, "top_row": 0.3, "bottom_row": 0.9}
    rows.write_text(json.dumps({"path": "a.png", "concepts": ["forest"], "regions": [moved]}) + "\n")
    kept = local_client.import_inputs("trees", rows, "jsonl")
    assert (kept.differing_labels, kept.updated) == (1, 0)
    assert local_client.import_inputs("trees", rows, "jsonl", update_labels=True).updated == 1
    [inp] = local_client.list_inputs("trees")
    assert inp["concepts"] == ["forest"] and inp["negatives"] == []
    assert [(r["concept"], r["top_row"], r["bottom_row"]) for r in inp["regions"]] == [("tree", 0.3, 0.9)]


def test_inputs_label_and_unlabel_by_sdk_and_cli(local_settings, tmp_path):
    client = Client(local_settings)
    client.create_app("pets")
    input_id = client.add_input("pets", imagegen.png_bytes((5, 5, 5)), concepts=["cat"], input_id="p1")
    assert input_id.imported == 1
    labelled = client.label_input("pets", "p1", ["Big Dog"])  # a new concept, created as an import would
    assert labelled.concepts == ["cat", "big-dog"] and "big-dog" in {c["id"] for c in client.list_concepts("pets")}
    flipped = client.label_input("pets", "p1", ["cat"], negative=True)  # the positive label becomes a negative
    assert flipped.concepts == ["big-dog"] and flipped.negatives == ["cat"]
    assert client.unlabel_input("pets", "p1", ["cat"]).negatives == []

    shown = _cli_json(local_settings, "inputs", "label", "pets", "p1", "cat", "bird")
    assert shown["concepts"] == ["big-dog", "cat", "bird"]
    shown = _cli_json(local_settings, "inputs", "unlabel", "pets", "p1", "big-dog", "bird")
    assert shown["concepts"] == ["cat"]
    error = _cli_json(local_settings, "inputs", "unlabel", "pets", "p1", "horse", code=3)
    assert error["error"]["message"] == "concept 'horse' does not exist in app 'pets'"


def test_labelling_another_apps_input_is_refused_like_a_missing_one(local_settings):
    client = Client(local_settings)
    for app in ("alpha", "beta"):
        client.create_app(app)
    client.add_input("alpha", imagegen.png_bytes((9, 9, 9)), concepts=["cat"], input_id="secret")
    for call in (lambda i: client.label_input("beta", i, ["dog"]), lambda i: client.unlabel_input("beta", i, ["cat"])):
        with pytest.raises(NotFound) as other:
            call("secret")
        with pytest.raises(NotFound) as missing:
            call("nothing")
        assert str(other.value) == str(missing.value).replace("'nothing'", "'secret'")
    error = _cli_json(local_settings, "inputs", "label", "beta", "secret", "dog", code=3)
    assert error["error"]["message"] == "input 'secret' does not exist in app 'beta'"
    assert client.list_inputs("alpha")[0]["concepts"] == ["cat"]


# --- deleting models and versions -------------------------------------------------------------------------


def _queued(client: Client, fashion_small: Path) -> dict:
    """A model with a queued version (planned and recorded, its plan stored; no training)."""
    if not client.list_models("fashion"):
        client.create_model("fashion", "clf", "classification", "ResNext", {"image_size": 32})
    return client.queue_train("fashion", "clf", {"num_epochs": 1})


def test_versions_and_models_delete_refusals_and_storage(local_settings, fashion_small):
    client = Client(local_settings)
    import_fashion(client, fashion_small)
    v = _queued(client, fashion_small)
    assert list(client.ctx.storage.list(v["artifacts"]))  # its plan
    refused = _cli_json(local_settings, "models", "versions", "delete", "fashion", "clf", v["id"], "--yes", code=4)
    assert "queued or training" in refused["error"]["message"] and "--force" in refused["error"]["message"]
    client.cancel("fashion", "clf", v["id"])
    gone = _cli_json(local_settings, "models", "versions", "delete", "fashion", "clf", v["id"], "--yes")
    assert gone["deleted"] and gone["objects_deleted"] >= 1 and gone["bytes_deleted"] > 0
    assert not list(client.ctx.storage.list(v["artifacts"]))
    with pytest.raises(NotFound):
        client.get_version("fashion", "clf", v["id"])
    assert _cli_json(local_settings, "models", "versions", "fashion", "clf") == []  # the short form still lists
    not_asked = run_cli(local_settings, "models", "versions", "delete", "fashion", "clf", "nope", input="")
    assert not_asked.returncode == 3  # an unknown version fails before the question

    busy = _queued(client, fashion_small)
    with pytest.raises(Conflict, match="queued or training"):
        client.delete_model("fashion", "clf")
    aborted = run_cli(local_settings, "models", "delete", "fashion", "clf", "--force", input="n\n")
    assert aborted.returncode != 0 and client.get_model("fashion", "clf")["id"] == "clf"
    deleted = _cli_json(local_settings, "models", "delete", "fashion", "clf", "--force", "--yes")
    assert deleted["versions_deleted"] == 1 and deleted["objects_deleted"] >= 1
    assert not list(client.ctx.storage.list("apps/fashion/models")) and not client.list_models("fashion")
    with pytest.raises(NotFound):
        client.get_version("fashion", "clf", busy["id"])


@pytest.mark.ray
def test_trained_version_keeps_weights_not_checkpoints_and_deletes_with_its_objects(local_settings, ray_cluster,
                                                                                   fashion_small):
    client = Client(local_settings)
    import_fashion(client, fashion_small)
    client.create_model("fashion", "clf", "classification", "ResNext", {"image_size": 32})
    v = client.train("fashion", "clf", {"num_epochs": 1, "batch_size": 20, "lrate": 0.05})
    assert v["status"] == "trained", v["error"]
    keys = list(client.ctx.storage.list(v["artifacts"]))
    assert not [k for k in keys if "/ray/" in k]  # DEEPTRAIN_KEEP_CHECKPOINTS=0: no checkpoint left
    assert f"{v['artifacts']}/weights.safetensors" in keys
    image = next((fashion_small / "test").rglob("*.png")).read_bytes()
    assert len(client.predict("fashion", "clf", [image])[0]["concepts"]) == 10  # what serving runs
    assert client.evaluate("fashion", "clf", v["id"])["metrics"]["top1"] == pytest.approx(v["metrics"]["top1"])
    with pytest.raises(InvalidInput, match="already trained"):  # so nothing needs its checkpoints
        client.resume("fashion", "clf", v["id"])

    workflow = client.create_workflow("fashion", "wf", [f"classify:clf:{v['id']}"])
    with pytest.raises(Conflict, match="pinned by workflow"):
        client.delete_version("fashion", "clf", v["id"])
    client.delete_workflow("fashion", workflow["id"])
    gone = client.delete_version("fashion", "clf", v["id"])
    assert gone.objects_deleted == len(keys) and gone.bytes_deleted > 1_000_000
    assert not list(client.ctx.storage.list(v["artifacts"]))


# --- garbage collection -----------------------------------------------------------------------------------


def test_gc_removes_only_what_no_record_refers_to(client, tmp_path):
    client.create_app("pets")
    client.import_inputs("pets", _folder(tmp_path / "images"), "imagefolder")
    version = client.snapshot("pets")
    storage = client.ctx.storage
    live = sorted(storage.list("apps/pets"))
    gone_key = "apps/pets/inputs/ab/" + "ab" * 32 + ".png"  # bytes an import stored before it was killed
    orphans = {
        gone_key: "input",
        "apps/pets/datasets/0123abcd/part-00000.parquet": "dataset",
        "apps/pets/models/clf/0a1b2c3d4e5f/weights.safetensors": "model_version",
        "apps/pets/models/clf/tune/9f8e7d6c5b4a/ray/state.json": "tune_run",
        "apps/pets/search/emb/0a1b2c3d4e5f/index-00001.faiss": "search_index",
        "apps/ghost/inputs/ab/" + "ab" * 32 + ".png": "app",
        ".tmp/0123-weights.safetensors": "temporary",
    }
    for key in orphans:
        storage.put_bytes(key, b"x" * 10)

    recent = client.gc()  # everything is younger than the grace period
    assert recent.garbage == [] and recent.skipped_recent == len(orphans)
    planned = client.gc(dry_run=True, grace_s=0)
    unit = {"apps/pets/datasets/0123abcd": "dataset", "apps/pets/models/clf/0a1b2c3d4e5f": "model_version",
            "apps/pets/models/clf/tune/9f8e7d6c5b4a": "tune_run", "apps/pets/search/emb/0a1b2c3d4e5f": "search_index",
            "apps/ghost": "app", gone_key: "input", ".tmp/0123-weights.safetensors": "temporary"}
    assert {i.key: i.kind for i in planned.garbage} == unit
    assert all(storage.exists(k) for k in orphans)  # a dry run removes nothing
    removed = client.gc(grace_s=0)
    assert {i.key for i in removed.garbage} == set(unit) and removed.objects == len(orphans)
    assert not any(storage.exists(k) for k in orphans)
    assert sorted(storage.list("apps/pets")) == live  # every object a record refers to stays
    assert client.open_dataset("pets", version["id"]).count_rows() == 3
    assert len(client.list_inputs("pets")) == 3 and client.gc(grace_s=0).garbage == []


def test_gc_cli_dry_run_then_yes(local_settings):
    client = Client(local_settings)
    client.create_app("pets")
    client.ctx.storage.put_bytes("apps/pets/datasets/dead/part-00000.parquet", b"x")
    env = {"DEEPTRAIN_GC_GRACE_S": "0"}
    planned = _cli_json(local_settings, "gc", "pets", "--dry-run", env=env)
    assert [i["key"] for i in planned["garbage"]] == ["apps/pets/datasets/dead"] and planned["dry_run"]
    assert client.ctx.storage.exists("apps/pets/datasets/dead/part-00000.parquet")
    done = _cli_json(local_settings, "gc", "pets", "--yes", env=env)
    assert done["objects"] == 1 and not client.ctx.storage.exists("apps/pets/datasets/dead/part-00000.parquet")
