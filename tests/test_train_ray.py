"""Training on Ray Train end to end (real local Ray cluster, real Fashion-MNIST images)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from deeptrain.config import DEFAULT_CPU_PER_WORKER
from deeptrain.errors import InvalidInput, NotFound
from deeptrain.sdk import Client
from tests import imagegen
from tests.conftest import import_fashion, run_cli

pytestmark = pytest.mark.ray

TINY = {"image_size": 32, "num_epochs": 1, "batch_size": 20, "lrate": 0.05}
LOSS_CURVE_TOLERANCE = 0.066  # train loss, absolute, per epoch (see the 1 vs 2 workers test)


def test_train_two_workers_artifacts_predict_evaluate(client, ray_cluster, fashion_small):
    import_fashion(client, fashion_small)
    client.create_model("fashion", "clf", "classification", "ResNext", {"image_size": 32})
    seen = []
    v = client.train("fashion", "clf", {k: v for k, v in TINY.items() if k != "image_size"}, workers=2,
                     on_version=seen.append)
    assert seen and seen[0]["status"] == "queued"
    assert v["status"] == "trained", v["error"]
    assert v["params"]["lrate"] == 0.05 and v["params"]["num_workers"] == 2
    assert len(v["concepts"]) == 10
    for key in ("top1", "top5", "macro_f1", "confusion_matrix"):
        assert key in v["metrics"]
    assert v["progress"]["history"][0]["epoch"] == 1

    files = set(client.ctx.storage.list(v["artifacts"]))
    for name in ("weights.safetensors", "manifest.json", "report.json", "loss_lr.png", "confusion_matrix.png",
                 "pr_curves.png"):
        assert f"{v['artifacts']}/{name}" in files
    manifest = json.loads(client.ctx.storage.get_bytes(f"{v['artifacts']}/manifest.json"))
    assert manifest["concepts"] == v["concepts"] and manifest["dataset_version"]["id"] == v["dataset_version_id"]

    image = next((fashion_small / "test").rglob("*.png")).read_bytes()
    [pred] = client.predict("fashion", "clf", [image], top_k=3)
    assert len(pred["concepts"]) == 3 and pred["concepts"][0]["value"] >= pred["concepts"][1]["value"]

    evaluated = client.evaluate("fashion", "clf", v["id"])
    assert evaluated["metrics"]["top1"] == pytest.approx(v["metrics"]["top1"], abs=1e-6)
    # the version's metrics are the test split's; the epochs evaluated the validation split carved from train
    num_val = client.get_dataset("fashion", v["dataset_version_id"])["counts"]["splits"]["validation"]
    validation = v["metrics"]["validation"]
    assert v["metrics"]["split"] == "test" and v["metrics"]["num_test"] == 50
    assert (validation["split"], validation["epoch"], validation["num_test"]) == ("validation", 1, num_val) and num_val
    on_val = client.evaluate("fashion", "clf", v["id"], split="val")
    assert on_val["split"] == "validation" and on_val["metrics"]["top1"] == pytest.approx(validation["top1"], abs=1e-6)
    assert client.report("fashion", "clf", v["id"])["plots"]
    # the run's controller is let go once fit returns (Ray Train's Ctrl-C handler would otherwise hold it, and
    # with it its dataset manager, for as long as this process runs)
    assert _live_actors_named({"TrainController", "DatasetManager", "SplitCoordinator"}, within_s=30) == []


def _live_actors_named(names: set[str], within_s: float) -> list[str]:
    """The live actors of these classes, after waiting up to ``within_s`` for them to go."""
    from ray._private import state

    deadline = time.monotonic() + within_s
    while True:
        live = sorted(a["ActorClassName"] for a in state.actors().values()
                      if a["State"] != "DEAD" and a["ActorClassName"] in names)
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.5)


def test_bad_training_requests_are_refused_before_any_worker(local_client, fashion_small):
    c = local_client
    c.create_app("empty")
    c.add_input("empty", imagegen.png_bytes())
    c.create_model("empty", "m", "classification", "ResNext", {"image_size": 32})
    with pytest.raises(InvalidInput, match="no labelled training inputs"):
        c.train("empty", "m")
    import_fashion(c, fashion_small)
    c.create_model("fashion", "m", "classification", "ResNext", TINY)
    with pytest.raises(NotFound, match="dataset version 'nope' does not exist"):
        c.train("fashion", "m", dataset_version="nope")
    with pytest.raises(InvalidInput, match="batch_size"):
        c.train("fashion", "m", {"batch_size": 5000})
    with pytest.raises(InvalidInput, match="lrat"):
        c.train("fashion", "m", {"lrat": 0.1})
    c.add_input("fashion", imagegen.png_bytes((1, 2, 3)), concepts=["Bag", "Dress"], split="train", input_id="multi")
    with pytest.raises(InvalidInput, match="exactly one concept per input.*multi"):
        c.train("fashion", "m", {"logreg": False})
    c.create_concept("fashion", "hat")
    c.create_model("fashion", "with-hat", "classification", "ResNext", TINY, concepts=["bag", "hat"])
    with pytest.raises(InvalidInput, match="hat have no training inputs"):
        c.train("fashion", "with-hat")
    assert all(c.list_versions("fashion", m) == [] for m in ("m", "with-hat"))


TRAINING_PHASES = ["snapshotting the dataset", "starting the cluster", "reading data", "warming up", "epoch 1/1"]


def test_cli_train_json_and_versions(local_settings, fashion_small, tmp_path):
    """The CLI end to end on a real run: train (its bar names each phase, in order), versions, show, a
    refused --resume of the trained version, evaluate (a table), predict a file and a folder (--save)."""
    def cli(*args):
        proc = run_cli(local_settings, *args, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        cli.stderr = proc.stderr
        return json.loads(proc.stdout)

    cli("apps", "create", "fashion")
    cli("inputs", "import", "fashion", str(fashion_small / "train"), "--format", "imagefolder", "--split", "train")
    cli("inputs", "import", "fashion", str(fashion_small / "test"), "--format", "imagefolder", "--split", "test")
    cli("models", "create", "fashion", "clf", "--task", "classification", "--template", "ResNext",
        "--param", "image_size=32")
    v = cli("models", "train", "fashion", "clf", "--param", "num_epochs=1", "--param", "batch_size=20",
            "--param", "per_128_lrate=0.2", "--workers", "1")
    assert v["status"] == "trained" and v["params"]["lrate"] == pytest.approx(0.2 * 20 / 128)
    assert {"top1", "top5"} <= set(v["metrics"])
    # stderr is no terminal here: the bar prints each phase as it starts ("training: PHASE")
    phases = [line.removeprefix("training: ") for line in cli.stderr.splitlines() if line.startswith("training: ")]
    assert [p for p in phases if p in TRAINING_PHASES] == TRAINING_PHASES, cli.stderr
    assert [x["id"] for x in cli("models", "versions", "fashion", "clf")] == [v["id"]]
    shown = cli("models", "show", "fashion", "clf", v["id"])
    assert shown["dataset_version_id"] == v["dataset_version_id"]
    image = str(next((fashion_small / "test").rglob("*.png")))
    [pred] = cli("predict", "fashion", "clf", image)
    assert len(pred["concepts"]) == 10
    path = run_cli(local_settings, "models", "report", "fashion", "clf", v["id"], "--open", check=True).stdout.strip()
    assert (Path(path) / "report.json").is_file()

    resumed = run_cli(local_settings, "models", "train", "fashion", "clf", "--resume", v["id"])
    assert resumed.returncode == 2 and "is already trained: nothing to resume" in resumed.stderr, resumed.stderr
    assert "training:" not in resumed.stderr  # refused before any bar (and before Ray)

    evaluated = run_cli(local_settings, "models", "evaluate", "fashion", "clf", v["id"], check=True).stdout
    top1 = next(line for line in evaluated.splitlines() if "│ top1 " in line)
    assert f"{v['metrics']['top1']:.4f}" in top1 and "per concept" in evaluated, evaluated

    folder = tmp_path / "to-predict"
    for k, image in enumerate(sorted((fashion_small / "test").rglob("*.png"))[:3]):
        (folder / f"sub{k % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"sub{k % 2}" / image.name).write_bytes(image.read_bytes())
    images = sorted(folder.rglob("*.png"))
    (folder / "broken.png").write_bytes(b"not an image")  # reported; the others are still predicted
    predicted = run_cli(local_settings, "predict", "fashion", "clf", str(folder), "--top-k", "2", "--save",
                        str(tmp_path / "annotated"), check=True)
    out = predicted.stdout
    assert f"{folder / 'broken.png'}: " in predicted.stderr and not (tmp_path / "annotated" / "broken.png").exists()
    for image in images:  # one line per image: its top concepts
        line = next(line for line in out.splitlines() if line.startswith(f"{image}: "))
        assert len(line.split(", ")) == 2 and line.split(": ")[1].split()[0] in v["concepts"], line
        saved = tmp_path / "annotated" / image.relative_to(folder)
        with Image.open(saved) as drawn, Image.open(image) as original:  # a caption band under the image
            assert drawn.width >= original.width and drawn.height > original.height
    assert f"annotated images written to {tmp_path / 'annotated'}" in out


def _unsynchronized_ray_train_loop(config):
    """Ray Train's worker loop with a host that does not wrap the model in DDP: each worker steps on its own
    shard's gradients, nothing all-reduced (the losses are still averaged across workers for the report)."""
    from deeptrain.jobs import worker

    worker.RayHost.prepare_model = lambda self, model: model  # in this worker process only
    worker.ray_train_loop(config)


@pytest.mark.slow
def test_one_and_two_workers_give_matching_loss_curves(local_client, ray_cluster, fashion_small, monkeypatch):
    """Data-parallel correctness: same seed, same global batch, 1 vs 2 workers.

    The curves cannot be identical: with 2 workers each BatchNorm normalizes over its
    worker's half batch (no SyncBatchNorm on CPU), and the split hands samples to
    workers in a different order within an epoch. The tolerance is twice the spread
    between 1-worker runs that differ only in their seed (measured with these params
    on seeds 7, 8, 9: at most 0.033 per epoch; 1 vs 2 workers measured 0.043).

    The loss curves alone cannot show that gradients are synchronized: a 2-worker run with
    NO all-reduce (each worker trains its own copy on its half of every batch) stays as
    close to the 1-worker curve (measured 0.038 per epoch at most) as the synchronized run
    (0.047). What tells them apart is the workers' weights: each epoch's record says whether
    every worker held the same weights (``replicas_in_sync``). The negative control runs here:
    the unsynchronized run must be caught by that check.
    """
    c = local_client
    import_fashion(c, fashion_small)
    params = {**TINY, "lrate": 0.02, "num_epochs": 4, "init_epochs": 4, "test_freq": 4, "seed": 7}
    c.create_model("fashion", "clf", "classification", "ResNext", params)
    one = c.train("fashion", "clf", workers=1)
    two = c.train("fashion", "clf", workers=2, dataset_version=one["dataset_version_id"])
    # the fault cannot be caused through the product: the workers run a loop whose host skips DDP
    monkeypatch.setattr("deeptrain.jobs.worker.ray_train_loop", _unsynchronized_ray_train_loop)
    unsynced = c.train("fashion", "clf", workers=2, dataset_version=one["dataset_version_id"])
    assert unsynced["status"] == "trained", unsynced["error"]
    curves = [[h["train_loss"] for h in v["progress"]["history"]] for v in (one, two, unsynced)]
    print(f"train loss per epoch: 1 worker {curves[0]}, 2 workers {curves[1]}, 2 unsynchronized {curves[2]}")
    assert curves[1] == pytest.approx(curves[0], abs=LOSS_CURVE_TOLERANCE)
    assert curves[0][-1] < curves[0][0] and curves[1][-1] < curves[1][0]
    in_sync = [[h["replicas_in_sync"] for h in v["progress"]["history"]] for v in (one, two, unsynced)]
    print(f"replicas in sync per epoch: 1 worker {in_sync[0]}, 2 workers {in_sync[1]}, unsynchronized {in_sync[2]}")
    assert in_sync[0] == [None] * 4 and in_sync[1] == [True] * 4
    assert in_sync[2] == [False] * 4  # the control is caught


def test_cached_and_streamed_input_train_alike(local_client, ray_cluster, fashion_small):
    """Small splits are kept in the object store after one decode; a run that streams them from storage
    every epoch (what larger data sets do) sees the same rows in the same order: same losses, same metrics."""
    c = local_client
    import_fashion(c, fashion_small)
    c.create_model("fashion", "clf", "classification", "ResNext", {**TINY, "num_epochs": 2, "seed": 3})
    cached = c.train("fashion", "clf", workers=1)
    streaming = Client(c.settings.replace(data_cache_fraction=0.0))  # DEEPTRAIN_DATA_CACHE_FRACTION=0: always stream
    streamed = streaming.train("fashion", "clf", workers=1, dataset_version=cached["dataset_version_id"])
    runs = {"cached": cached, "streamed": streamed}
    for mode, v in runs.items():
        assert v["status"] == "trained", v["error"]
        assert v["progress"]["input"]["mode"] == mode
        assert v["progress"]["input"]["bytes"] == 250 * (32 * 32 * 3 + 8 + 4 * 10)
    print({mode: [round(h["data_wait_s"], 2) for h in v["progress"]["history"]] for mode, v in runs.items()})
    assert [h["train_loss"] for h in streamed["progress"]["history"]] == \
        pytest.approx([h["train_loss"] for h in cached["progress"]["history"]], rel=1e-6)
    assert streamed["metrics"]["top1"] == pytest.approx(cached["metrics"]["top1"], abs=1e-9)


def test_use_gpu_is_decided_from_the_cluster(ray_cluster):
    from deeptrain.jobs.train import cluster_use_gpu

    assert ray_cluster.cluster_resources().get("GPU", 0) == 0
    assert cluster_use_gpu(None) is False and cluster_use_gpu(False) is False
    with pytest.raises(InvalidInput, match="use_gpu is true but the Ray cluster has no GPUs"):
        cluster_use_gpu(True)


def test_scaling_config_follows_worker_resources(ray_cluster):
    from deeptrain.jobs.plan import WorkerResources
    from deeptrain.jobs.train import scaling_config
    from deeptrain.params import HyperParams

    params = HyperParams(num_workers=2)
    scaling = scaling_config(params, WorkerResources(cpus=0.25, placement="STRICT_SPREAD"))
    assert (scaling.num_workers, scaling.use_gpu, scaling.placement_strategy) == (2, False, "STRICT_SPREAD")
    assert scaling.resources_per_worker == {"CPU": 0.25}
    assert scaling_config(params, WorkerResources(gpus=0)).resources_per_worker == {"CPU": DEFAULT_CPU_PER_WORKER}
    with pytest.raises(InvalidInput, match="use_gpu is true but the Ray cluster has no GPUs"):
        scaling_config(params, WorkerResources(gpus=0.5))  # GPUs asked for explicitly
    with pytest.raises(InvalidInput, match="contradicts use_gpu=false"):
        scaling_config(HyperParams(use_gpu=False), WorkerResources(gpus=1))
