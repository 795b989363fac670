"""The GPU path end to end: train on the GPU in bf16 and fp16, evaluate, predict on the GPU; images/s against a
bare PyTorch loop on the same card, measured in the same run.

  bare train : the same model, image size and batch, forward+backward+SGD under the same autocast, on
               in-memory tensors already on the GPU (no data loading), steady state.
  train      : ``Client.train`` for real (Parquet in storage -> Ray Data -> one Ray Train worker with one GPU),
               ``use_gpu=true``, ``precision`` bf16 and fp16 (fp16 steps through a GradScaler); the last epoch's
               images/s and the version's test top-1.
  bare serve : the trained model's forward on preprocessed tensors on the GPU, batch ``--serve-batch``.
  serve      : ``deeptrain.inference.predict_bytes`` (what a Serve replica runs: PNG decode, resize,
               normalize, forward, ranking) with the model on the GPU, same batches.

    python bench/gpu_smoke.py [--per-class 500] [--image-size 64] [--batch 128] [--epochs 3] [--json]

Without a CUDA device it prints why and exits 0 (nothing to measure). ``--cpu`` runs the same steps on the CPU
(slowly; to check the script itself on a machine without a GPU; fp16 autocast on a CPU is very slow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

TEMPLATE = ("classification", "ResNext")
PRECISIONS = ("bf16", "fp16")


def no_gpu_reason() -> str | None:
    """Why there is no GPU to measure, or None when torch sees one."""
    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"no GPU: torch {torch.__version__} ({build}) sees no CUDA device; bench/gpu_smoke.py has nothing to measure"


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def bare_train(device: torch.device, precision: str, image_size: int, batch: int, steps: int) -> float:
    from deeptrain.params import resolve_params
    from deeptrain.templates import get_template
    from deeptrain.training.param_groups import make_optimizer

    template = get_template(*TEMPLATE)
    params = resolve_params(template, {"image_size": image_size, "batch_size": batch, "lrate": 0.05})
    torch.manual_seed(0)
    model = template.build(10, logreg=True).to(device).train()
    optimizer = make_optimizer(model, template.head_prefixes, params)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (batch,), device=device), 10).float()
    for i in range(steps + 3):
        if i == 3:  # kernels chosen, memory allocated
            _sync(device)
            start = time.perf_counter()
        with _autocast(device, precision):
            loss = model.compute_loss(x, y)["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def serve_rates(loaded, images: list[bytes], device: torch.device, batch: int) -> tuple[float, float]:
    """(bare forward images/s, predict_bytes images/s) with the model on ``device``."""
    from deeptrain.inference import model_input, predict_bytes, prepare

    loaded.model.to(device).eval()
    chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
    tensors = [model_input(loaded, [prepare(loaded, b) for b in chunk]).to(device) for chunk in chunks]
    with torch.no_grad():
        loaded.model.predict(tensors[0])  # warm-up
        _sync(device)
        start = time.perf_counter()
        for x in tensors:
            loaded.model.predict(x)
        _sync(device)
        bare = len(images) / (time.perf_counter() - start)
    predict_bytes(loaded, chunks[0])
    start = time.perf_counter()
    for chunk in chunks:
        predict_bytes(loaded, chunk)
    return bare, len(images) / (time.perf_counter() - start)


def run(args: argparse.Namespace, device: torch.device) -> dict:
    from deeptrain.config import Settings
    from deeptrain.sample_data import write_fashion_mnist_folder
    from deeptrain.sdk import Client

    work = Path(tempfile.mkdtemp(prefix="deeptrain-gpu-smoke-"))
    try:
        write_fashion_mnist_folder(work / "train", "train", per_class=args.per_class)
        write_fashion_mnist_folder(work / "test", "test", per_class=args.test_per_class)
        client = Client(Settings.from_env(env={**os.environ, "DEEPTRAIN_HOME": str(work / "home")}))
        client.create_app("gpu")
        client.import_inputs("gpu", work / "train", format="imagefolder", split="train")
        client.import_inputs("gpu", work / "test", format="imagefolder", split="test")
        test_images = [p.read_bytes() for p in sorted((work / "test").rglob("*.png"))]
        runs = []
        for precision in args.precisions:
            bare = bare_train(device, precision, args.image_size, args.batch, args.bare_steps)
            client.create_model("gpu", f"resnext-{precision}", *TEMPLATE, {"image_size": args.image_size})
            start = time.perf_counter()
            v = client.train("gpu", f"resnext-{precision}", {
                "num_epochs": args.epochs, "batch_size": args.batch, "lrate": 0.05, "test_freq": args.epochs,
                "use_gpu": device.type == "cuda", "precision": precision}, workers=1)
            wall = time.perf_counter() - start
            if v["status"] != "trained":
                raise SystemExit(f"{precision} training ended {v['status']}: {v['error']}")
            ours = v["progress"]["history"][-1]["images_per_s"]
            serve_bare, serve = serve_rates(client.load_version("gpu", f"resnext-{precision}"), test_images,
                                            device, args.serve_batch)
            runs.append({"precision": precision, "train_bare_images_per_s": bare, "train_images_per_s": ours,
                         "train_ratio": ours / bare, "train_wall_s": wall, "top1": v["metrics"]["top1"],
                         "serve_bare_images_per_s": serve_bare, "serve_images_per_s": serve,
                         "serve_ratio": serve / serve_bare})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {"device": name, "template": "/".join(TEMPLATE), "image_size": args.image_size, "batch": args.batch,
            "epochs": args.epochs, "train_images": 10 * args.per_class, "test_images": len(test_images),
            "runs": runs}


def show(result: dict) -> None:
    print(f"\n{result['template']} on {result['device']}: image_size {result['image_size']}, batch "
          f"{result['batch']}, {result['epochs']} epochs over {result['train_images']} Fashion-MNIST images, "
          f"top-1 on {result['test_images']} test images")
    print(f"{'precision':9} {'bare train':>11} {'train':>9} {'ratio':>6} {'top-1':>6} "
          f"{'bare serve':>11} {'serve':>9} {'ratio':>6}   (images/s)")
    for r in result["runs"]:
        print(f"{r['precision']:9} {r['train_bare_images_per_s']:11.0f} {r['train_images_per_s']:9.0f} "
              f"{r['train_ratio']:6.2f} {r['top1']:6.3f} {r['serve_bare_images_per_s']:11.0f} "
              f"{r['serve_images_per_s']:9.0f} {r['serve_ratio']:6.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=500, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bare-steps", type=int, default=30)
    parser.add_argument("--serve-batch", type=int, default=64)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (checks the script, measures no GPU)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    reason = None if args.cpu else no_gpu_reason()
    if reason:
        print(json.dumps({"skipped": reason}) if args.json else reason)
        return 0
    result = run(args, torch.device("cpu" if args.cpu else "cuda"))
    print(json.dumps(result)) if args.json else show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
