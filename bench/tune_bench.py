"""Tuning overhead: N trials through Ray Tune vs the same N trainings run back to back, in one run.

  tune   : ``client.tune`` with N trials (FIFO scheduler: no early stopping, so both sides
           train exactly the same epochs), once one trial at a time and once as many at
           once as the cluster fits (when that is more than one).
  direct : ``client.train`` once per trial, one after another, with the params each
           trial used (read back from its model version), on the same Ray cluster.

The ratio tune (one at a time) / direct is what Tune adds per search (trial actors,
experiment state, report, the driver function around each TorchTrainer); concurrent
trials can bring it below 1 where the cluster has CPUs to spare.

    python bench/tune_bench.py [--trials 3] [--images 500] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from deeptrain.config import Settings  # noqa: E402
from deeptrain.cluster import ensure_ray  # noqa: E402
from deeptrain.jobs.train import cluster_use_gpu  # noqa: E402
from deeptrain.jobs.trial_resources import fit_concurrency  # noqa: E402
from deeptrain.sample_data import write_fashion_mnist_folder  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402
from deeptrain.tune_space import parse_space  # noqa: E402

SPACE = ["lrate=loguniform:1e-3:1e-1", "batch_size=choice:16,32"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--images", type=int, default=500, help="training images (Fashion-MNIST)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deeptrain-tune-bench-"))
    try:
        write_fashion_mnist_folder(work / "train", "train", per_class=args.images // 10)
        write_fashion_mnist_folder(work / "test", "test", per_class=10)
        client = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(work / "home")}))
        client.create_app("bench")
        client.import_inputs("bench", work / "train", format="imagefolder", split="train")
        client.import_inputs("bench", work / "test", format="imagefolder", split="test")
        client.create_model("bench", "clf", "classification", "ResNext",
                            {"image_size": 32, "num_epochs": args.epochs, "init_epochs": args.epochs})
        dataset = client.snapshot("bench")["id"]
        ensure_ray()
        # untimed: the first training on a fresh cluster pays for starting Ray's worker pool and
        # the first imports from disk, which would otherwise be charged to whichever side runs first
        assert client.train("bench", "clf", {}, dataset_version=dataset)["status"] == "trained"

        tuned = {}  # trials at once -> (run, wall s)
        # what client.tune runs at once by default (the model leaves use_gpu to the cluster)
        fits = fit_concurrency(1, cluster_use_gpu(None), None, args.trials, client.settings.cpu_per_worker)
        for concurrency in sorted({1, fits}):
            start = time.perf_counter()
            run = client.tune("bench", "clf", parse_space(SPACE), trials=args.trials, scheduler="fifo",
                              dataset_version=dataset, max_concurrent=concurrency)
            assert run["status"] == "finished" and run["max_concurrent"] == concurrency, run
            tuned[concurrency] = (run, time.perf_counter() - start)
        run = tuned[1][0]
        configs = [{k: client.get_version("bench", "clf", t["version_id"])["params"][k] for k in ("lrate", "batch_size")}
                   for t in run["trials"]]

        start = time.perf_counter()
        direct = [client.train("bench", "clf", config, dataset_version=dataset) for config in configs]
        direct_s = time.perf_counter() - start
        assert all(v["status"] == "trained" for v in direct)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = args.trials
    print(f"\n{n} trials of ResNext at image_size 32, {args.epochs} epochs on {args.images} Fashion-MNIST images, "
          f"{os.cpu_count()} CPUs")
    print(f"{'run':48} {'wall s':>8} {'per trial':>10} {'ratio':>7}")
    print(f"{'direct: client.train back to back':48} {direct_s:8.1f} {direct_s / n:10.1f} {'1.00':>7}")
    for concurrency, (_, tune_s) in sorted(tuned.items()):
        name = f"tune: client.tune (FIFO), {concurrency} trial(s) at once"
        print(f"{name:48} {tune_s:8.1f} {tune_s / n:10.1f} {tune_s / direct_s:7.2f}")
    print(f"Tune overhead, one trial at a time: {(tuned[1][1] - direct_s) / n:+.1f} s per trial")


if __name__ == "__main__":
    main()
