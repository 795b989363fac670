"""Three splits: train, validation, test. Importers keep split layouts, a snapshot carves validation from train
when none was imported (reproducibly, and says so), and the loop evaluates validation every test_freq epochs
and test once at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeptrain.errors import InvalidInput
from deeptrain.services.datasets import CARVED
from tests import imagegen

SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}
PER_SPLIT = {"train": 3, "val": 2, "test": 1}  # images per concept and split folder


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _png(n: int) -> bytes:
    return imagegen.png_bytes((n * 7 % 256, n * 13 % 256, n * 29 % 256), size=(24 + n % 5, 20))


def _splits(client, app: str) -> dict[str, str]:
    """Each input's split, by content hash."""
    return {i["sha256"]: i["split"] for i in client.list_inputs(app)}


def _assert_three_way(client, app: str, per_concept: dict[str, int]) -> dict:
    """Splits imported as given, and a snapshot that keeps them and counts them per split and concept."""
    v = client.snapshot(app)
    expected = {SPLIT_FOLDERS[f]: n * len(per_concept) for f, n in PER_SPLIT.items()}
    assert v["counts"]["splits"] == expected
    assert v["validation"] == {"source": "imported", "count": expected["validation"]}  # nothing carved
    for concept in v["concepts"]:
        counts = v["counts"]["concepts"][concept["id"]]
        assert {s: counts[s] for s in expected} == {SPLIT_FOLDERS[f]: n for f, n in PER_SPLIT.items()}
    table = client.open_dataset(app, v["id"]).to_table(columns=["input_id", "split"])
    stored = {i["id"]: i["split"] for i in client.list_inputs(app)}
    assert dict(zip(table.column("input_id").to_pylist(), table.column("split").to_pylist())) == stored
    return v


def test_imagefolder_split_folders_round_trip(client, tmp_path):
    root, n = tmp_path / "folder", 0
    for folder, count in PER_SPLIT.items():
        for concept in ("cat", "dog"):
            for _ in range(count):
                n += 1
                _write(root / folder / concept / f"{n}.png", _png(n))
    client.create_app("src")
    report = client.import_inputs("src", root, format="imagefolder")
    assert (report["imported"], report["rejected"]) == (n, [])
    _assert_three_way(client, "src", {"cat": 1, "dog": 1})

    client.export_inputs("src", tmp_path / "out", "imagefolder")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test", "train", "val"]
    client.create_app("dst")
    client.import_inputs("dst", tmp_path / "out", format="imagefolder")
    assert _splits(client, "dst") == _splits(client, "src")


def test_imagefolder_file_beside_the_split_folders_is_refused_with_the_layout(local_client, tmp_path):
    root = tmp_path / "folder"
    _write(root / "train" / "cat" / "a.png", _png(1))
    _write(root / "validation" / "cat" / "b.png", _png(2))
    _write(root / "train" / "stray.png", _png(3))
    local_client.create_app("a")
    report = local_client.import_inputs("a", root, format="imagefolder")
    assert report["imported"] == 2
    assert [r["reason"] for r in report["rejected"]] == [
        "not inside a concept folder: expected <root>/<split>/<concept>/<file>"]
    assert sorted(_splits(local_client, "a").values()) == ["train", "validation"]


def test_yolo_split_folders_round_trip(client, tmp_path):
    root, n = tmp_path / "yolo", 0
    (root).mkdir()
    (root / "classes.txt").write_text("car\ntree\n")
    for folder, count in PER_SPLIT.items():
        for cls in (0, 1):
            for _ in range(count):
                n += 1
                _write(root / "images" / folder / f"{n}.png", _png(n))
                _write(root / "labels" / folder / f"{n}.txt", f"{cls} 0.5 0.5 0.4 0.3\n".encode())
    client.create_app("src")
    report = client.import_inputs("src", root, format="yolo")
    assert (report["imported"], report["rejected"]) == (n, [])
    _assert_three_way(client, "src", {"car": 1, "tree": 1})

    client.export_inputs("src", tmp_path / "out", "yolo")
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["test", "train", "val"]
    client.create_app("dst")
    client.import_inputs("dst", tmp_path / "out", format="yolo")
    assert _splits(client, "dst") == _splits(client, "src")
    assert {i["sha256"]: len(i["regions"]) for i in client.list_inputs("dst")} == {
        i["sha256"]: 1 for i in client.list_inputs("src")}


def test_yolo_roboflow_split_layout_keeps_splits(local_client, tmp_path):
    root = tmp_path / "yolo"
    (root).mkdir()
    (root / "data.yaml").write_text("names: [car]\n")
    for n, folder in enumerate(("train", "valid", "test")):
        _write(root / folder / "images" / f"{n}.png", _png(n))
        _write(root / folder / "labels" / f"{n}.txt", b"0 0.5 0.5 0.2 0.2\n")
    local_client.create_app("rf")
    assert local_client.import_inputs("rf", root, format="yolo")["imported"] == 3
    inputs = local_client.list_inputs("rf")
    assert sorted(i["split"] for i in inputs) == ["test", "train", "validation"]
    assert all(len(i["regions"]) == 1 for i in inputs)


def test_csv_split_column_round_trip(client, tmp_path):
    root, lines, n = tmp_path / "tab", ["path,concepts,split"], 0
    for folder, count in PER_SPLIT.items():
        for concept in ("cat", "dog"):
            for _ in range(count):
                n += 1
                _write(root / f"{n}.png", _png(n))
                lines.append(f"{n}.png,{concept},{folder}")  # "val" is accepted and stored as "validation"
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    client.create_app("src")
    report = client.import_inputs("src", root / "labels.csv", format="csv")
    assert (report["imported"], report["rejected"]) == (n, [])
    _assert_three_way(client, "src", {"cat": 1, "dog": 1})

    client.export_inputs("src", tmp_path / "out", "csv")
    client.create_app("dst")
    client.import_inputs("dst", tmp_path / "out" / "labels.csv", format="csv")
    assert _splits(client, "dst") == _splits(client, "src")


def _train_only(client, app: str, n: int = 60) -> None:
    client.create_app(app)
    for i in range(n):
        client.add_input(app, _png(i), concepts=["even" if i % 2 == 0 else "odd"], split="train")
    client.add_input(app, _png(1000), concepts=["even"], split="test")


def test_validation_is_carved_from_train_by_content_hash_reproducibly(local_client, tmp_path):
    from deeptrain.config import Settings
    from deeptrain.sdk import Client

    _train_only(local_client, "a")
    v = local_client.snapshot("a", validation_fraction=0.25)
    carved = v["counts"]["splits"]["validation"]
    assert 0 < carved < 60 and v["counts"]["splits"]["train"] == 60 - carved
    assert v["validation"] == {"source": CARVED, "fraction": 0.25, "count": carved}
    assert local_client.get_dataset("a", v["id"])["validation"] == v["validation"]  # in the version's record
    table = local_client.open_dataset("a", v["id"]).to_table(columns=["input_id", "split"])
    chosen = {i for i, s in zip(table.column("input_id").to_pylist(), table.column("split").to_pylist())
              if s == "validation"}
    train = {i["id"]: i["sha256"] for i in local_client.list_inputs("a") if i["split"] == "train"}
    # every training input whose draw (hash digits the test draw does not read) is under the fraction
    assert chosen == {i for i, h in train.items() if int(h[8:16], 16) / 2**32 < 0.25}
    # the stored inputs keep their imported split; a snapshot is the same version again
    assert {i["split"] for i in local_client.list_inputs("a")} == {"train", "test"}
    assert local_client.snapshot("a", validation_fraction=0.25)["id"] == v["id"]

    other = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path / "other")}))
    _train_only(other, "a")
    assert other.snapshot("a", validation_fraction=0.25)["content_hash"] == v["content_hash"]
    assert local_client.snapshot("a", validation_fraction=0)["validation"]["count"] == 0


def test_carving_keeps_every_concept_trainable(local_client):
    local_client.create_app("few")
    for i in range(4):  # "rare" has one training input: it is never carved, however high the fraction
        local_client.add_input("few", _png(i), concepts=["rare" if i == 0 else "common"], split="train")
    v = local_client.snapshot("few", validation_fraction=0.99)
    counts = v["counts"]["concepts"]
    rare, common = (next(c["id"] for c in v["concepts"] if c["name"] == name) for name in ("rare", "common"))
    assert counts[rare]["train"] == 1 and counts[common]["train"] == 1
    assert v["counts"]["splits"]["validation"] == v["validation"]["count"] == 2


def test_split_names_are_checked(local_client):
    local_client.create_app("a")
    local_client.add_input("a", _png(1), concepts=["x"], split="VAL")
    assert [i["split"] for i in local_client.list_inputs("a")] == ["validation"]
    report = local_client.add_input("a", _png(2), concepts=["x"], split="dev")
    assert [r["reason"] for r in report["rejected"]] == ["split 'dev' is not one of train, validation, test (or val)"]
    with pytest.raises(InvalidInput, match="split 'dev' is not one of train, validation, test"):
        local_client.import_inputs("a", Path(__file__).parent, format="imagefolder", split="dev")
    with pytest.raises(InvalidInput, match="validation_fraction must be at least 0 and below 1"):
        local_client.snapshot("a", validation_fraction=1)


def test_tune_refuses_data_without_validation_inputs(local_client):
    from ray import tune

    _train_only(local_client, "a", n=8)
    local_client.create_model("a", "clf", "classification", "ResNext", {"image_size": 32, "num_epochs": 2, "batch_size": 4})
    v = local_client.snapshot("a", validation_fraction=0)
    with pytest.raises(InvalidInput, match="has no labelled validation inputs, and Tune chooses on validation"):
        local_client.check_tune("a", "clf", {"lrate": tune.choice([0.01, 0.1])}, trials=1, dataset_version=v["id"])


def test_loop_evaluates_validation_every_time_and_test_once():
    from deeptrain.training.local import LocalHost
    from deeptrain.training.loop import run_training, version_metrics
    from tests.test_training_loop import _rows, _setup

    spec, data = _setup(2)
    data.validation = _rows(10, 7)
    host = LocalHost()
    result = run_training(spec, data, host)
    history = result["history"]
    assert [h["metrics"].get("epoch") for h in history] == [1, 2]
    assert [h["test"].get("epoch") for h in history] == [None, 2]
    assert all(h["metrics"]["num_test"] == 10 for h in history)  # scored on the 10 validation rows
    assert result["metrics"]["num_test"] == 16  # the test split's 16 rows, once
    # what the scheduler sees is the validation evaluation
    assert host.reports[-1]["top1"] == result["validation"]["top1"] == history[-1]["metrics"]["top1"]
    assert "confusion_matrix" not in host.reports[-1]
    record = version_metrics(history)
    assert record["split"] == "test" and record["top1"] == result["metrics"]["top1"]
    assert record["validation"] == {k: v for k, v in result["validation"].items() if isinstance(v, (int, float))} | {
        "split": "validation"}


def test_tune_best_trial_is_chosen_on_validation_and_test_is_reported_beside_it(local_client):
    """From the trial records: the trial with the better validation metric wins although its test metric is
    the worse one, and each trial's test metric is reported separately."""
    from deeptrain.jobs.tune_scheduler import choose_scheduler
    from deeptrain.services import models as model_service
    from deeptrain.services import tune_runs
    from deeptrain.training.tune_report import write_tune_report

    ctx = local_client.ctx
    _train_only(local_client, "a", n=8)
    local_client.create_model("a", "clf", "classification", "ResNext", {"image_size": 32})
    dataset = local_client.snapshot("a")["id"]
    run = tune_runs.create_run(ctx, "a", "clf", metric="top1", mode="max", space={"lrate": "choice:0.01,0.1"},
                               params={}, num_trials=2, max_concurrent=1, num_workers=1,
                               scheduler=choose_scheduler("fifo", None, 2, test_freq=1, max_t=1),
                               dataset_version_id=dataset)
    figures = {"t0": (0.9, 0.5), "t1": (0.6, 0.8)}  # trial: (validation top1, test top1)
    versions = {}
    for trial, (val, test) in figures.items():
        v = model_service.new_version(ctx, "a", "clf", {"lrate": 0.01}, dataset, ["even", "odd"], tune_run=run["id"])
        tune_runs.add_trial(ctx, "a", "clf", run["id"], trial, v["id"])
        history = [{"epoch": 1, "metrics": {"epoch": 1, "top1": val}, "test": {"epoch": 1, "top1": test}}]
        model_service.update_version(ctx, "a", "clf", v["id"], status="trained", progress={"history": history},
                                     metrics={"epoch": 1, "top1": test, "split": "test",
                                              "validation": {"epoch": 1, "top1": val, "split": "validation"}})
        versions[trial] = v["id"]
    rows = tune_runs.trial_rows(ctx, run)
    assert [(r["metric"], r["test_metric"]) for r in rows] == list(figures.values())
    assert [r["curve"] for r in rows] == [[[1, 0.9]], [[1, 0.6]]]  # the per-epoch curve is validation too
    best = tune_runs.best_trial(run, rows)
    assert best["version_id"] == versions["t0"]
    run = tune_runs.update_run(ctx, "a", "clf", run["id"], status="finished", best_version=best["version_id"])
    report = write_tune_report(ctx.storage, run, tune_runs.trial_rows(ctx, run))
    assert report["chosen_on"] == "validation"
    assert (report["best"]["metric"], report["best"]["test_metric"]) == (0.9, 0.5)
    summary = local_client.get_tune_run("a", "clf", run["id"])
    assert (summary["best"]["metric"], summary["best"]["test_metric"]) == (0.9, 0.5)


def test_cli_snapshot_takes_a_validation_fraction_and_shows_the_validation_column(local_settings):
    import json

    from deeptrain.sdk import Client
    from tests.conftest import run_cli

    _train_only(Client(local_settings), "a", n=12)
    proc = run_cli(local_settings, "datasets", "snapshot", "a", "--validation-fraction", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    version = json.loads(proc.stdout)
    assert version["validation"]["source"] == CARVED and version["validation"]["fraction"] == 0.5
    shown = run_cli(local_settings, "datasets", "show", "a", version["id"], check=True).stdout
    assert f"validation: {version['validation']['count']} inputs {CARVED}" in shown
    assert "validation" in shown.split("per concept", 1)[1]  # the per-concept table's column
