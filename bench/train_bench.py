"""Training throughput: the full pipeline vs a bare PyTorch loop, measured in one run.

  bare     : the same model, image size and batch, forward+backward+SGD step on
             pre-decoded in-memory tensors (no data loading at all), as many torch
             threads as one Ray Train worker gets here.
  pipeline : ``deeptrain models train`` for real: Parquet in storage -> Ray Data
             (read, filter, decode/resize in map_batches) -> Ray Train worker(s) ->
             crop/flip/normalize -> the same step. Steady-state images/s of the last
             epoch (the first includes start-up), with where that epoch's time went
             (rank 0): waiting for Ray Data batches, crop/flip/normalize, the model
             step, and the rest (progress reports, all-reduce of the loss, DDP).
             These splits fit the object-store cache (decoded once per run); the
             1-worker run is repeated with the cache off (streamed: decoded again
             every epoch and evaluation), and both runs' whole wall times compared.

    python bench/train_bench.py [--images 2000] [--image-size 64] [--batch 32] [--epochs 2]
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

import torch  # noqa: E402

from deeptrain.config import Settings  # noqa: E402
from deeptrain.jobs.worker import worker_torch_threads  # noqa: E402
from deeptrain.params import resolve_params  # noqa: E402
from deeptrain.sample_data import write_fashion_mnist_folder  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402
from deeptrain.templates import get_template  # noqa: E402
from deeptrain.training.param_groups import make_optimizer  # noqa: E402

TEMPLATE = ("classification", "ResNext")


def bare_loop(image_size: int, batch: int, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    template = get_template(*TEMPLATE)
    params = resolve_params(template, {"image_size": image_size, "batch_size": batch, "lrate": 0.05})
    torch.manual_seed(0)
    model = template.build(10, logreg=True)
    optimizer = make_optimizer(model, template.head_prefixes, params)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (batch,)), 10).float()
    model.train()
    for i in range(steps + 3):
        if i == 3:  # warm-up done
            start = time.perf_counter()
        loss = model.compute_loss(x, y)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def pipeline(client: Client, workers: int, image_size: int, batch: int, epochs: int, cache: bool = True) -> dict:
    """The last epoch's record of a real training run, with the run's wall time (``wall_s``)."""
    model = f"bench-{workers}w-{'cached' if cache else 'streamed'}"
    client.create_model("bench", model, *TEMPLATE, {"image_size": image_size})
    runner = client if cache else Client(client.settings.replace(data_cache_fraction=0.0))  # 0: always stream
    start = time.perf_counter()
    v = runner.train("bench", model, {"num_epochs": epochs, "batch_size": batch, "lrate": 0.05,
                                      "test_freq": epochs}, workers=workers)
    wall = time.perf_counter() - start
    assert v["status"] == "trained", v["error"]
    assert v["progress"]["input"]["mode"] == ("cached" if cache else "streamed"), v["progress"]["input"]
    return {**v["progress"]["history"][-1], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="training images (Fashion-MNIST)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deeptrain-train-bench-"))
    try:
        write_fashion_mnist_folder(work / "train", "train", per_class=args.images // 10)
        write_fashion_mnist_folder(work / "test", "test", per_class=20)
        client = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(work / "home")}))
        client.create_app("bench")
        client.import_inputs("bench", work / "train", format="imagefolder", split="train")
        client.import_inputs("bench", work / "test", format="imagefolder", split="test")
        steps = max(5, args.images // args.batch // 2)
        bare_1 = bare_loop(args.image_size, args.batch, steps, worker_torch_threads(1))
        one_epoch = pipeline(client, 1, args.image_size, args.batch, args.epochs)
        streamed = pipeline(client, 1, args.image_size, args.batch, args.epochs, cache=False)
        bare_2 = bare_loop(args.image_size, args.batch // 2, steps, worker_torch_threads(2))
        two_epoch = pipeline(client, 2, args.image_size, args.batch, args.epochs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, two = one_epoch["images_per_s"], two_epoch["images_per_s"]
    print(f"\n{TEMPLATE[1]} at image_size {args.image_size}, global batch {args.batch}, "
          f"{args.images} Fashion-MNIST images, {os.cpu_count()} CPUs")
    print(f"{'run':44} {'images/s':>9} {'ratio':>7}")
    print(f"{'bare loop, in-memory tensors (1 worker threads)':44} {bare_1:9.1f} {'1.00':>7}")
    print(f"{'pipeline, 1 Ray Train worker':44} {one:9.1f} {one / bare_1:7.2f}")
    print(f"{'pipeline, 1 worker, input streamed':44} {streamed['images_per_s']:9.1f} "
          f"{streamed['images_per_s'] / bare_1:7.2f}")
    print(f"{'bare loop, half batch (1 of 2 workers threads)':44} {bare_2:9.1f}")
    print(f"{'pipeline, 2 Ray Train workers':44} {two:9.1f} {two / one:7.2f}  (2 workers / 1 worker)")
    print("\nwhere the last epoch's time went (rank 0):")
    print(f"{'run':32} {'epoch s':>8} {'data wait':>10} {'augment':>8} {'model':>8} {'other':>8}")
    for name, e in (("pipeline, 1 worker", one_epoch), ("pipeline, 1 worker, streamed", streamed),
                    ("pipeline, 2 workers", two_epoch)):
        parts = [e["data_wait_s"], e["augment_s"], e["compute_s"]]
        shares = [f"{100 * x / e['seconds']:7.1f}%" for x in [*parts, e["seconds"] - sum(parts)]]
        print(f"{name:32} {e['seconds']:8.1f} {shares[0]:>10} {shares[1]:>8} {shares[2]:>8} {shares[3]:>8}")
    print(f"\nwhole 1-worker run ({args.epochs} epochs, start-up and evaluation included): input cached "
          f"{one_epoch['wall_s']:.1f} s, streamed {streamed['wall_s']:.1f} s "
          f"(cached / streamed {one_epoch['wall_s'] / streamed['wall_s']:.2f})")


if __name__ == "__main__":
    main()
