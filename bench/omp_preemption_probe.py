"""How much another process's CPU slows a multi-threaded forward pass: the cost Ray Serve's own processes put on
the model beside them (issue #23, the 256 px forward in the replica).

ResNext-50 32x4d (timm, random weights: the cost does not depend on them), ``--batch`` images of ``--image-size``
pixels (2: one image and its horizontal flip, as served with ``average_horizontal_flips``), ``--threads`` torch
threads, channels-last. For each ``--duty`` a child process spins for that share of one core in 10 ms periods
(sleeping the rest) while the forward is timed (median of ``--rounds``); the first level, 0, is the bare forward
measured in the same run. No deeptrain code is involved.

    python bench/omp_preemption_probe.py [--duty 0 0.075 0.15 0.3] [--threads 2] [--image-size 256] [--json]

Measured on the 2-core machine, 2 threads, 256 px: 78.7 ms alone, 89.2 / 96.1 / 107.2 ms beside a process
taking 7.5 / 15 / 30 % of one core: an OpenMP team waits at every barrier for the thread that was preempted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SPIN = """
import sys, time
duty = float(sys.argv[1])
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < 0.01 * duty:
        pass
    time.sleep(0.01 * (1 - duty))
"""


def forward_ms(model, x, rounds: int) -> float:
    import torch

    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duty", type=float, nargs="+", default=[0.075, 0.15, 0.3],
                        help="shares of one core the background process takes (0 is always measured first)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    import timm
    import torch

    torch.set_num_threads(args.threads)
    model = timm.create_model("resnext50_32x4d", pretrained=False, num_classes=10).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size).to(memory_format=torch.channels_last)
    rows = []
    for duty in [0.0, *[d for d in args.duty if d > 0]]:
        spinner = subprocess.Popen([sys.executable, "-c", SPIN, str(duty)]) if duty else None
        try:
            time.sleep(0.3)
            rows.append({"duty": duty, "forward_ms": forward_ms(model, x, args.rounds)})
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
    bare = rows[0]["forward_ms"]
    for row in rows:
        row["slowdown"] = row["forward_ms"] / bare
    if args.json:
        print(json.dumps({"threads": args.threads, "image_size": args.image_size, "batch": args.batch, "rows": rows}))
        return
    print(f"ResNext-50, {args.batch} x {args.image_size} px, {args.threads} torch thread(s)")
    for row in rows:
        print(f"  beside a process taking {100 * row['duty']:5.1f} % of one core: {row['forward_ms']:6.1f} ms "
              f"({row['slowdown']:.2f} x)")


if __name__ == "__main__":
    main()
