"""Faults during training: a killed Ray Train worker, a killed driver resumed with --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import import_fashion, wait_for_checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PARAMS = {"image_size": 32, "num_epochs": 3, "batch_size": 20, "lrate": 0.05, "init_epochs": 2, "step_epochs": 1}


def _wait_for_epoch(client, app, model, version_id, epoch: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = client.get_version(app, model, version_id).get("progress") or {}
        if p.get("epoch", 0) >= epoch:
            return
        time.sleep(0.5)
    raise AssertionError(f"training did not reach epoch {epoch} in {timeout}s")


def _train_worker_pids() -> list[int]:
    """Ray Train worker processes: Ray titles them ``ray::RayTrainWorker...`` (read from
    /proc; the session cluster runs without the dashboard, so the state API is not there)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::RayTrainWorker"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            pass
    return sorted(pids)


def test_killed_worker_recovers_from_checkpoint(local_client, ray_cluster, fashion_small):
    c = local_client
    import_fashion(c, fashion_small)
    c.create_model("fashion", "clf", "classification", "ResNext", PARAMS)
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(
        result=c.train("fashion", "clf", workers=2, on_version=lambda v: holder.update(version=v))))
    thread.start()
    while "version" not in holder:
        time.sleep(0.2)
    _wait_for_epoch(c, "fashion", "clf", holder["version"]["id"], 2)
    wait_for_checkpoint(c, "fashion", "clf", holder["version"]["id"])  # epoch 1's
    pids = _train_worker_pids()
    assert len(pids) == 2
    os.kill(pids[-1], signal.SIGKILL)
    thread.join(900)
    v = holder["result"]
    assert v["status"] == "trained", v["error"]
    assert [h["epoch"] for h in v["progress"]["history"]] == [1, 2, 3]
    assert len(v["progress"]["restores"]) == 1 and v["progress"]["restores"][0] >= 1  # resumed, not restarted
    assert "top1" in v["metrics"]
    assert pids[-1] not in _train_worker_pids()


def test_killed_driver_is_resumable_and_matches_an_uninterrupted_run(local_client, ray_cluster, fashion_small):
    """One worker, same seed: the resumed run ends with the same metrics as an uninterrupted one."""
    import ray

    c = local_client
    import_fashion(c, fashion_small)
    c.create_model("fashion", "clf", "classification", "ResNext", PARAMS)
    reference = c.train("fashion", "clf", workers=1)

    env = {**os.environ, **c.settings.as_env(), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, "-m", "deeptrain.cli.main", "models", "train", "fashion", "clf",
                             "--dataset-version", reference["dataset_version_id"], "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(c.list_versions("fashion", "clf")) < 2:
        time.sleep(0.2)
    version = c.list_versions("fashion", "clf")[-1]
    _wait_for_epoch(c, "fashion", "clf", version["id"], 2)
    wait_for_checkpoint(c, "fashion", "clf", version["id"])  # epoch 1's
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert c.get_version("fashion", "clf", version["id"])["status"] == "training"  # the driver died mid-run

    resumed = c.resume("fashion", "clf", version["id"])
    assert resumed["status"] == "trained"
    assert resumed["progress"]["restores"] and resumed["progress"]["restores"][0] >= 1
    # same data order (preserved order, seeded shuffle), same augmentation (seeded per step), same RNG state
    assert resumed["metrics"]["top1"] == pytest.approx(reference["metrics"]["top1"], abs=1e-6)
    losses = [h["train_loss"] for h in resumed["progress"]["history"]]
    assert losses == pytest.approx([h["train_loss"] for h in reference["progress"]["history"]], rel=1e-5)
