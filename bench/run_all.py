"""Run every benchmark in bench/ one after another (``make bench``).

Each benchmark measures its own bare baseline in the same run and prints the
ratio; they run in separate processes so that one's threads, Ray cluster or
caches do not skew the next. Extra arguments are passed to none of them: run a
single benchmark directly to change its settings.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = [
    ("import", ["import_bench.py", "--n", "2000"]),
    ("models", ["model_bench.py", "--quick"]),
    ("training", ["train_bench.py"]),
    ("tuning", ["tune_bench.py"]),
    ("serving", ["serve_bench.py"]),
    ("search", ["search_bench.py"]),
]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name, (script, *args) in BENCHES:
        print(f"\n=== {name}: {script} {' '.join(args)}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(here / script), *args])
        print(f"=== {name}: exit {rc} after {time.perf_counter() - start:.0f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
