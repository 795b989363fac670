"""Fine-tuning from a pretrained base vs from scratch, same seed and budget (Fashion-MNIST, ResNext, 32 px).

  1. pretrain: ResNext from scratch on Fashion-MNIST classes 0-4 (T-shirt/top .. Coat), --pretrain-per-class
     training images each, --pretrain-epochs epochs;
  2. register its weights as this (throwaway) deployment's ``imagenet`` base for resnext50_32x4d with
     ``client.weights.add`` (what ``deeptrain weights add ResNext FILE`` does): checked by key names and
     shapes, the 5-way head dropped, stored once in object storage;
  3. fine-tune on classes 5-9 (Sandal .. Ankle boot), --finetune-per-class images each, --epochs epochs,
     twice with the same seed, data, batch, learning rate and epochs: ``init_from=imagenet`` (the base above,
     ``base_gradient_multiplier`` --multiplier) and ``init_from=scratch``.

Prints both test top-1s, wall times and the per-epoch validation top-1 / train loss curves, writes a PNG of
the curves (--png) and, with --json, one JSON document. Runs on a local Ray cluster started for it.

    python bench/finetune_bench.py [--pretrain-per-class 1000] [--pretrain-epochs 4] [--finetune-per-class 100]
                                   [--epochs 8] [--multiplier 0.1] [--scratch-lrates 0.02 0.01]
                                   [--png finetune_curves.png] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image  # noqa: E402

from deeptrain.config import Settings  # noqa: E402
from deeptrain.sample_data import FASHION_MNIST_CLASSES, class_folder_name, load_fashion_mnist  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402

IMAGE_SIZE = 32


def write_classes(out: Path, split: str, classes: range, per_class: int) -> int:
    """``out/<class>/<split>-<i>.png`` for the first ``per_class`` images of each class in ``classes``."""
    images, labels = load_fashion_mnist(split)
    taken = {c: 0 for c in classes}
    for i, (img, label) in enumerate(zip(images, labels)):
        label = int(label)
        if label in taken and taken[label] < per_class:
            folder = out / class_folder_name(FASHION_MNIST_CLASSES[label])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(folder / f"{split}-{i:05d}.png")
            taken[label] += 1
    return sum(taken.values())


def make_app(client: Client, app: str, root: Path, classes: range, train: int, test: int) -> None:
    write_classes(root / app / "train", "train", classes, train)
    write_classes(root / app / "test", "test", classes, test)
    client.create_app(app)
    client.import_inputs(app, root / app / "train", format="imagefolder", split="train")
    client.import_inputs(app, root / app / "test", format="imagefolder", split="test")


def curve(version: dict) -> list[dict]:
    return [{"epoch": h["epoch"], "train_loss": h.get("train_loss"),
             "val_top1": (h.get("metrics") or {}).get("top1")} for h in version["progress"]["history"]]


def train(client: Client, app: str, model: str, params: dict) -> dict:
    client.create_model(app, model, "classification", "ResNext", {"image_size": IMAGE_SIZE})
    start = time.perf_counter()
    v = client.train(app, model, params)
    wall = time.perf_counter() - start
    if v["status"] != "trained":
        raise SystemExit(f"{app}/{model} {v['status']}: {v['error']}")
    return {"model": model, "top1": v["metrics"]["top1"], "wall_s": round(wall, 1), "curve": curve(v),
            "init_from": v["params"]["init_from"], "artifacts": v["artifacts"]}


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        epochs = [p["epoch"] for p in run["curve"]]
        label = f"{run.get('label', run['model'])} (test top-1 {run['top1']:.3f})"
        top.plot(epochs, [p["val_top1"] for p in run["curve"]], marker="o", label=label)
        loss.plot(epochs, [p["train_loss"] for p in run["curve"]], marker="o", label=label)
    top.axhline(0.2, color="grey", linestyle=":", label="chance (5 classes)")
    top.set(xlabel="epoch", ylabel="validation top-1", ylim=(0, 1), title="fine-tuning on Fashion-MNIST classes 5-9")
    loss.set(xlabel="epoch", ylabel="train loss", ylim=(0, None), title="train loss")
    for ax in (top, loss):
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.legend(*top.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)


def run(args: argparse.Namespace, work: Path) -> dict:
    client = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(work / "home")}))
    budget = {"num_epochs": args.epochs, "batch_size": args.batch, "lrate": args.lrate, "seed": args.seed,
              "init_epochs": args.epochs, "num_workers": 1, "test_freq": 1}
    make_app(client, "pretrain", work, range(0, 5), args.pretrain_per_class, args.test_per_class)
    pre = train(client, "pretrain", "base", {**budget, "num_epochs": args.pretrain_epochs,
                                              "init_epochs": args.pretrain_epochs, "init_from": "scratch"})
    row = client.weights.add("ResNext", client.ctx.storage.uri_for(f"{pre.pop('artifacts')}/weights.safetensors"))
    make_app(client, "finetune", work, range(5, 10), args.finetune_per_class, args.test_per_class)
    tuned = train(client, "finetune", "from-base", {**budget, "init_from": "imagenet",
                                                    "base_gradient_multiplier": args.multiplier})
    tuned["label"] = f"from the base, multiplier {args.multiplier:g}, lrate {args.lrate:g}"
    # from scratch at each learning rate (the base's rate may not suit a random base): its best is the comparison
    scratches = [train(client, "finetune", f"from-scratch-lr{lr:g}".replace(".", "p"),  # ids have no dots
                       {**budget, "lrate": lr, "init_from": "scratch"})
                 for lr in dict.fromkeys([args.lrate, *args.scratch_lrates])]
    for r, lr in zip(scratches, dict.fromkeys([args.lrate, *args.scratch_lrates])):
        r["label"] = f"from scratch, lrate {lr:g}"
    scratch = max(scratches, key=lambda r: r["top1"])
    for r in (tuned, *scratches):
        r.pop("artifacts")
    plot([tuned, *scratches], Path(args.png))
    return {"pretrain": pre, "base_sha256": row["sha256"], "from_base": tuned, "from_scratch": scratch,
            "scratch_runs": scratches, "top1_ratio": tuned["top1"] / scratch["top1"], "png": str(args.png),
            "args": vars(args)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-per-class", type=int, default=1000, help="pretraining images per class (0-4)")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--finetune-per-class", type=int, default=100, help="fine-tuning images per class (5-9)")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (both runs)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--lrate", type=float, default=0.05)
    parser.add_argument("--multiplier", type=float, default=0.1, help="base_gradient_multiplier from the base")
    parser.add_argument("--scratch-lrates", type=float, nargs="*", default=[0.02, 0.01],
                        help="learning rates the from-scratch run also tries (besides --lrate); its best is compared")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="finetune_curves.png")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deeptrain-finetune-") as tmp:
        result = run(args, Path(tmp))
    if args.json:
        print(json.dumps(result))
        return
    print(f"pretrain (classes 0-4, {args.pretrain_per_class}/class, {args.pretrain_epochs} epochs): "
          f"top-1 {result['pretrain']['top1']:.3f} in {result['pretrain']['wall_s']} s; "
          f"registered sha256 {result['base_sha256'][:12]}…")
    for r in (result["from_base"], *result["scratch_runs"]):
        points = ", ".join(f"{p['epoch']}:{p['val_top1']:.3f}" for p in r["curve"] if p["val_top1"] is not None)
        print(f"{r['model']:>21}: test top-1 {r['top1']:.3f}, wall {r['wall_s']} s; validation top-1 by epoch {points}")
    print(f"from the base / best from scratch ({result['from_scratch']['model']}): top-1 ratio "
          f"{result['top1_ratio']:.2f}; curves: {args.png}")


if __name__ == "__main__":
    main()
