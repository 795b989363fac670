"""``make demo``: the main job end to end on the embedded default (local files, SQLite, local Ray).

Imports a real data set (a Fashion-MNIST subset from Debian's ``dataset-fashion-mnist``,
installed first when running as root and it is missing; otherwise a clearly announced
rendered-shapes set), snapshots a dataset version, trains a small ResNext classifier on
2 Ray Train workers, evaluates it, writes its report, then deploys the Ray Serve app and
predicts one image over HTTP. It lives in ``serve/`` because it uses everything.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
from rich.console import Console

from deeptrain.cli.follow import train_with_progress
from deeptrain.cli.output import progress
from deeptrain.config import Settings
from deeptrain.errors import Conflict
from deeptrain.sample_data import fashion_mnist_available, write_fashion_mnist_folder
from deeptrain.sdk import Client
from serve import app as serve_app

console = Console(stderr=True)
# DEEPTRAIN_DEMO_HOME, DEEPTRAIN_DEMO_PER_CLASS, DEEPTRAIN_DEMO_EPOCHS (Settings.demo_*)
_DEMO = Settings.from_env()
DEMO_HOME = _DEMO.demo_home.resolve()
PER_CLASS = _DEMO.demo_per_class
EPOCHS = _DEMO.demo_epochs


def _free_port(preferred: int) -> int:
    """``preferred`` when free, else any free loopback port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    from deeptrain.sample_data import write_shapes_folder

    console.print("[bold yellow]Fashion-MNIST is not installed and cannot be installed here: "
                  "using RENDERED SHAPES (synthetic) instead.")
    work = work.with_name("shapes")
    for split in ("train", "test"):
        if not (work / split).exists():
            write_shapes_folder(work / split, split, per_class=PER_CLASS if split == "train" else PER_CLASS // 3)
    return work, "imagefolder", "rendered shapes (synthetic, circle/square/triangle)"


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
    for split in ("train", "test"):
        with progress(f"import {split}", None) as advance:
            report = client.import_inputs(app, data_dir / split, format=fmt, split=split, on_progress=advance)
        console.print(f"{split}: imported {report['imported']}, duplicates {report['duplicates']}, "
                      f"rejected {len(report['rejected'])} ({report['images_per_s']} images/s)")
    console.rule("2. snapshot a dataset version")
    version = client.snapshot(app)
    console.print(f"dataset version [bold]{version['id']}[/]: {version['counts']['splits']} at {version['uri']}")

    console.rule("3. train a ResNext classifier on Ray Train (2 workers)")
    try:
        client.create_model(app, "fashion-resnext", "classification", "ResNext", {"image_size": 32})
    except Conflict:
        pass
    params = {"num_epochs": EPOCHS, "init_epochs": EPOCHS - 1, "step_epochs": 1, "batch_size": 64, "lrate": 0.05}
    console.print(f"params: {params} (everything else: the template's defaults)")
    trained = train_with_progress(client, app, "fashion-resnext", lambda on_version: client.train(
        app, "fashion-resnext", params, workers=2, dataset_version=version["id"], on_version=on_version))
    for h in trained["progress"]["history"]:
        console.print(f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}, lr {h['lr']:.3g}, "
                      f"{h['images_per_s']:.0f} images/s, validation top1 {h['metrics'].get('top1', float('nan')):.3f}")

    console.rule("4. evaluate on the test split")
    metrics = client.evaluate(app, "fashion-resnext", trained["id"])["metrics"]
    console.print(f"top1 {metrics['top1']:.3f}  top5 {metrics['top5']:.3f}  macro F1 {metrics['macro_f1']:.3f}  "
                  f"macro ROC AUC {metrics.get('macro_auc', float('nan')):.3f} on {metrics['num_test']} test images")
    report = client.report(app, "fashion-resnext", trained["id"])

    console.rule("5. serve it on Ray Serve and predict one image over HTTP")
    url = serve_app.start(settings, "127.0.0.1", _free_port(8000), predictor_cpus=0)
    sample = next((data_dir / "test").rglob("*.png"))
    endpoint = f"{url}/v2/apps/{app}/models/fashion-resnext/versions/{trained['id']}/outputs"
    body = {"inputs": [{"data": {"image": {"base64": base64.b64encode(sample.read_bytes()).decode()}}}],
            "model": {"output_info": {"output_config": {"max_concepts": 3}}}}
    key = client.create_key(app, ["predict"], "demo")["key"]
    response = httpx.post(endpoint, json=body, headers={"Authorization": f"Key {key}"}, timeout=120)
    if response.status_code != 200:
        serve_app.stop()
        response.raise_for_status()
    concepts = response.json()["outputs"][0]["data"]["concepts"]
    console.print(f"POST {endpoint}")
    console.print(f"{sample.parent.name}/{sample.name} -> " + ", ".join(f"{c['id']} {c['value']:.3f}" for c in concepts))
    console.rule("done")
    console.print(
        f"in {time.time() - start:.0f}s: imported {description}, snapshotted dataset version {version['id']}, "
        f"trained model version {trained['id']} on 2 Ray Train workers, evaluated it and served one prediction "
        f"over HTTP from Ray Serve.\n"
        f"Everything lives under {DEMO_HOME}:\n"
        f"  metadata   {settings.database_url}\n  storage    {settings.storage_uri}\n"
        f"  report     {report['path']} ({', '.join(report['plots'])})\n"
        f"Try: DEEPTRAIN_HOME={DEMO_HOME / 'home'} .venv/bin/deeptrain models show {app} fashion-resnext {trained['id']}")
    show_console(client, url)


def show_console(client: Client, url: str) -> None:
    """Print the web console's address and a user key to sign in with; keep serving until Ctrl-C when run
    from a terminal (a script or CI gets the address and the server stops)."""
    import sys

    user_key = client.create_user_key("demo console")["key"]
    console.rule("the web console")
    console.print(f"console  [bold]{url}/[/]\nkey      [bold]{user_key}[/] (a user key: paste it to sign in)")
    if not sys.stdin.isatty():
        console.print(f"(not a terminal: the server stops now; serve again with DEEPTRAIN_HOME={DEMO_HOME / 'home'} "
                      ".venv/bin/deeptrain serve, and sign in with the same key)")
        serve_app.stop()
        return
    console.print("serving until Ctrl-C …")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve_app.stop()


if __name__ == "__main__":
    main()
