"""The CLI contract, run as a real subprocess: --json prints exactly one JSON document."""

from __future__ import annotations

import json

from deeptrain.sample_data import deepforest_data_dir
from tests import imagegen
from tests.conftest import run_cli


def cli_json(settings, *args, code: int = 0):
    proc = run_cli(settings, *args, "--json")
    assert proc.returncode == code, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_cli_data_workflow(settings, tmp_path):
    folder = tmp_path / "folder"
    for i, concept in enumerate(["cat", "cat", "dog"]):
        (folder / concept).mkdir(parents=True, exist_ok=True)
        (folder / concept / f"{i}.png").write_bytes(imagegen.png_bytes((i, i, i)))
    (folder / "dog" / "bad.png").write_bytes(b"")

    assert cli_json(settings, "apps", "create", "pets")["id"] == "pets"
    assert [a["id"] for a in cli_json(settings, "apps", "list")] == ["pets"]
    report = cli_json(settings, "inputs", "import", "pets", str(folder), "--format", "imagefolder")
    assert (report["imported"], report["duplicates"]) == (3, 0)
    assert report["rejected"] == [{"file": str(folder / "dog" / "bad.png"), "reason": "empty file (0 bytes)"}]
    inputs = cli_json(settings, "inputs", "list", "pets")
    assert isinstance(inputs, list) and len(inputs) == 3
    assert cli_json(settings, "concepts", "create", "pets", "bird", "--name", "Bird")["name"] == "Bird"
    assert {c["id"] for c in cli_json(settings, "concepts", "list", "pets")} == {"cat", "dog", "bird"}
    assert cli_json(settings, "concepts", "delete", "pets", "bird")["deleted"]

    version = cli_json(settings, "datasets", "snapshot", "pets")
    plain = run_cli(settings, "datasets", "snapshot", "pets", check=True)
    assert plain.stdout.strip() == version["id"]
    shown = cli_json(settings, "datasets", "show", "pets", version["id"])
    assert shown["counts"]["inputs"] == 3
    assert [d["id"] for d in cli_json(settings, "datasets", "list", "pets")] == [version["id"]]

    exported = cli_json(settings, "inputs", "export", "pets", str(tmp_path / "out"), "--format", "jsonl")
    assert exported["exported"] == 3
    assert cli_json(settings, "apps", "delete", "pets")["deleted"]
    assert cli_json(settings, "apps", "list") == []


def test_cli_errors_are_json_and_exit_non_zero(local_settings, tmp_path):
    err = cli_json(local_settings, "apps", "create", "Bad App", code=2)
    assert err["error"]["code"] == "invalid_input" and "Bad App" in err["error"]["message"]
    err = cli_json(local_settings, "inputs", "list", "ghost", code=3)
    assert "app 'ghost' does not exist" in err["error"]["message"]
    cli_json(local_settings, "apps", "create", "a")
    assert cli_json(local_settings, "apps", "create", "a", code=4)["error"]["code"] == "conflict"
    err = cli_json(local_settings, "inputs", "import", "a", str(tmp_path / "nope"), "--format", "imagefolder", code=2)
    assert "does not exist" in err["error"]["message"]
    # nothing readable at all: a failed import, exit 1, report still printed
    (tmp_path / "junk" / "c").mkdir(parents=True)
    (tmp_path / "junk" / "c" / "x.png").write_bytes(b"junk")
    report = cli_json(local_settings, "inputs", "import", "a", str(tmp_path / "junk"), "--format", "imagefolder", code=1)
    assert report["imported"] == 0 and len(report["rejected"]) == 1
    plain = run_cli(local_settings, "apps", "create", "Bad App")
    assert plain.returncode == 2 and "invalid app id" in plain.stderr and plain.stdout == ""


def test_cli_import_voc_real_data(local_settings):
    cli_json(local_settings, "apps", "create", "trees")
    report = cli_json(local_settings, "inputs", "import", "trees", str(deepforest_data_dir()), "--format", "voc")
    assert report["imported"] == 4
    concepts = {c["id"]: c["num_boxes"] for c in cli_json(local_settings, "concepts", "list", "trees")}
    assert concepts["tree"] > 900


def test_cli_usage_errors_exit_2_without_traceback(local_settings):
    proc = run_cli(local_settings, "models", "train", "--workerz", "2", "a", "b")
    assert proc.returncode == 2, proc.stderr
    assert "No such option: --workerz" in proc.stderr and "--workers" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli(local_settings, "models", "train", "a", "b", "--workers", "two")
    assert proc.returncode == 2 and "Invalid value for '--workers'" in proc.stderr, proc.stderr
