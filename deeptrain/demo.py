"""``make demo``: the main job end to end on the embedded default (local files, SQLite, local Ray).

Imports a real data set (a Fashion-MNIST subset from Debian's ``dataset-fashion-mnist``,
installed first when running as root and it is missing; otherwise a clearly announced
rendered-shapes set), snapshots a dataset version, and — once training is available —
trains a small ResNext classifier on 2 workers, evaluates it and serves one prediction.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from rich.console import Console

from deeptrain.cli.output import progress
from deeptrain.config import Settings
from deeptrain.errors import Conflict
from deeptrain.sample_data import fashion_mnist_available, write_fashion_mnist_folder
from deeptrain.sdk import Client

console = Console(stderr=True)
DEMO_HOME = Path(os.environ.get("DEEPTRAIN_DEMO_HOME", ".demo")).resolve()
PER_CLASS = int(os.environ.get("DEEPTRAIN_DEMO_PER_CLASS", 300))


def ensure_fashion_mnist() -> bool:
    """Install Debian's dataset-fashion-mnist when root and missing; True when it is there."""
    if fashion_mnist_available():
        return True
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        console.print("[yellow]Fashion-MNIST is missing: installing Debian's dataset-fashion-mnist …")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=False)
    return fashion_mnist_available()


def prepare_images(work: Path) -> tuple[Path, str, str]:
    """(path, format, description) of the data set to import."""
    if ensure_fashion_mnist():
        for split in ("train", "test"):
            folder = work / split
            if not folder.exists():
                write_fashion_mnist_folder(folder, split, per_class=PER_CLASS if split == "train" else PER_CLASS // 3)
        return work, "imagefolder", f"Fashion-MNIST ({PER_CLASS} train + {PER_CLASS // 3} test images per class)"
    from deeptrain.sample_data import write_shapes_voc

    console.print("[bold yellow]Fashion-MNIST is not installed and cannot be installed here: "
                  "using RENDERED SHAPES (synthetic) instead.")
    folder = work / "shapes"
    if not folder.exists():
        write_shapes_voc(folder, n_images=300)
    return folder, "voc", "rendered shapes (synthetic)"


def main() -> None:
    start = time.time()
    settings = Settings.from_env(env={**os.environ, "DEEPTRAIN_HOME": str(DEMO_HOME / "home")})
    client = Client(settings)
    app = "demo-fashion"
    data_dir, fmt, description = prepare_images(DEMO_HOME / "images")
    try:
        client.create_app(app, "deeptrain demo")
    except Conflict:
        pass
    console.rule(f"1. import {description}")
    if fmt == "imagefolder":
        for split in ("train", "test"):
            with progress(f"import {split}", None) as advance:
                report = client.import_inputs(app, data_dir / split, format=fmt, split=split, on_progress=advance)
            console.print(f"{split}: imported {report['imported']}, duplicates {report['duplicates']}, "
                          f"rejected {len(report['rejected'])} ({report['images_per_s']} images/s)")
    else:
        report = client.import_inputs(app, data_dir, format=fmt)
        console.print(f"imported {report['imported']}, rejected {len(report['rejected'])}")
    console.rule("2. snapshot a dataset version")
    version = client.snapshot(app)
    console.print(f"dataset version [bold]{version['id']}[/]: {version['counts']['splits']} at {version['uri']}")

    console.rule("done")
    console.print(f"in {time.time() - start:.0f}s. Everything lives under {DEMO_HOME}:\n"
                  f"  metadata   {settings.database_url}\n  storage    {settings.storage_uri}\n"
                  f"Try: DEEPTRAIN_HOME={DEMO_HOME / 'home'} .venv/bin/deeptrain datasets show {app} {version['id']}")


if __name__ == "__main__":
    main()
