"""Training throughput of every template beside timm's own model of the same architecture.

For each registered template: forward + loss + backward images/s at image_size 128 (or
the template's minimum if larger), batch 16, on CPU (or --device), next to the
reference measured in the same run and interleaved with it round by round (best round
reported, as other load on the machine only ever slows a round down):

* classification (timm architectures): timm.create_model(<name>) with the same loss;
  ratio ~1.0 expected (our models subclass timm's classes);
* embedding ResNext: timm resnext50_32x4d classifier;
* detection: the bare timm backbone (its stride-8/16/32 features, summed), so the ratio
  is the cost of the FPN + RetinaNet head + loss;
* BN-Inception (written here): no reference, stands alone.

Usage: python bench/model_bench.py [--quick] [--size 128] [--batch 16] [--rounds N] [--threads N]

On a machine shared with other busy processes, oversubscribed intra-op threads make
rounds erratic; ``--threads 1`` gives steady ratios there (about 80 s for a full run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from deeptrain.templates import Template, all_templates  # noqa: E402

NUM_CLASSES = 10

# template builder -> timm model measured beside it (None: stands alone)
REFERENCES: dict[str, str | None] = {
    "deeptrain.models.inception_v2:build_classifier": "inception_v3",
    "deeptrain.models.bn_inception:build_classifier": None,
    "deeptrain.models.inception_resnet_v2:build_classifier": "inception_resnet_v2",
    "deeptrain.models.resnext:build_classifier": "resnext50_32x4d",
    "deeptrain.models.detection:build_inception_v2_detector": "inception_v3",
    "deeptrain.models.detection:build_inception_v4_detector": "inception_v4",
    "deeptrain.models.bn_inception:build_embedding": None,
    "deeptrain.models.resnext:build_embedding": "resnext50_32x4d",
}


def make_targets(task: str, batch: int, size: int):
    g = torch.Generator().manual_seed(0)
    if task == "classification":
        return (torch.rand(batch, NUM_CLASSES, generator=g) < 0.2).float()
    if task == "embedding":
        return torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * size * 0.5
        wh = torch.rand(3, 2, generator=g) * size * 0.5 + 8
        targets.append(
            {"boxes": torch.cat([xy, (xy + wh).clamp(max=size)], 1), "labels": torch.randint(0, NUM_CLASSES, (3,), generator=g)}
        )
    return targets


def ours_step(template: Template, batch: int, size: int, device: torch.device) -> Callable[[], None]:
    model = template.build(NUM_CLASSES).to(device).train()
    images = torch.randn(batch, 3, size, size, device=device)
    targets = make_targets(template.task, batch, size)
    if template.task == "detection":
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    else:
        targets = targets.to(device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.compute_loss(images, targets)["loss"].backward()

    return step


def reference_step(template: Template, timm_name: str, batch: int, size: int, device: torch.device) -> Callable[[], None]:
    images = torch.randn(batch, 3, size, size, device=device)
    if template.task == "detection":
        model = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=(2, 3, 4))
        model = model.to(device).train()

        def step() -> None:
            model.zero_grad(set_to_none=True)
            sum(f.float().mean() for f in model(images)).backward()

        return step

    model = timm.create_model(timm_name, pretrained=False, num_classes=NUM_CLASSES).to(device).train()
    targets = make_targets(template.task, batch, size).to(device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        logits = model(images)
        if template.task == "classification":
            loss = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            loss = F.cross_entropy(logits, targets)
        loss.backward()

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two timed rounds instead of six")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per model (default 6, quick 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 6)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(
        f"# torch {torch.__version__}, timm {timm.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"batch {args.batch}, best of {rounds} interleaved timed rounds after 1 warm-up, forward+loss+backward"
    )
    header = f"{'task':<15} {'template':<19} {'size':>4} {'ours img/s':>10}  {'reference':<34} {'ref img/s':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    t_start = time.perf_counter()
    for template in all_templates():
        size = max(args.size, template.min_image_size)
        timm_name = REFERENCES.get(template.builder)
        torch.manual_seed(0)
        ours = ours_step(template, args.batch, size, device)
        ref = None
        ref_label = "-"
        if timm_name is not None:
            ref = reference_step(template, timm_name, args.batch, size, device)
            ref_label = f"timm {timm_name}" + (" backbone" if template.task == "detection" else "")
        ours()  # warm-up
        if ref is not None:
            ref()
        ours_t, ref_t = [], []
        for r in range(rounds):  # interleaved, alternating who goes first
            if ref is not None and r % 2:
                ref_t.append(timed(ref, device))
            ours_t.append(timed(ours, device))
            if ref is not None and not r % 2:
                ref_t.append(timed(ref, device))
        ours_ips = args.batch / min(ours_t)  # best round: least disturbed by other load
        if ref is not None:
            ref_ips = args.batch / min(ref_t)
            ref_col, ratio_col = f"{ref_ips:>9.1f}", f"{ours_ips / ref_ips:>6.2f}"
        else:
            ref_col, ratio_col = f"{'-':>9}", f"{'-':>6}"
        print(
            f"{template.task:<15} {template.name:<19} {size:>4} {ours_ips:>10.1f}  {ref_label:<34} {ref_col} {ratio_col}",
            flush=True,
        )
        del ours, ref
    print(f"# total {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
