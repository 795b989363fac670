"""The benchmark scripts' own behaviour (their figures are measured by running them, never in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_smoke_without_a_gpu_says_so_and_exits_cleanly():
    """On a machine without CUDA the GPU smoke is not a failure: it prints why (text and --json) and exits 0."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_smoke
    finally:
        sys.path.remove(str(ROOT / "bench"))
    if torch.cuda.is_available():
        assert gpu_smoke.no_gpu_reason() is None
        return_codes = []
    else:
        text = subprocess.run([sys.executable, "bench/gpu_smoke.py"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        doc = subprocess.run([sys.executable, "bench/gpu_smoke.py", "--json"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert text.stdout.startswith("no GPU: torch ") and "sees no CUDA device" in text.stdout, text.stderr
        assert json.loads(doc.stdout)["skipped"].startswith("no GPU"), doc.stderr
        return_codes = [text.returncode, doc.returncode]
    assert all(rc == 0 for rc in return_codes)
