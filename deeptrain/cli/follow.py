"""Run a training call in a thread and draw its live progress (read from the store).

Shared by ``deeptrain models train`` and ``make demo``. Ctrl-C asks whether to cancel;
a cancelled run stops after its current epoch and is marked ``cancelled``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from deeptrain.cli.output import stderr
from deeptrain.results import Version
from deeptrain.sdk import Client

TrainCall = Callable[[Callable[[Version], None]], Version]


def _follow(client: Client, app: str, model: str, holder: dict[str, Any], worker: threading.Thread) -> None:
    """Draw the version's live progress (read from the store) until the training thread ends."""
    columns = (TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
               TextColumn("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[rate]} img/s ETA {task.fields[eta]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=stderr) as bar:
        task = bar.add_task("train", total=None, epoch="-", loss="-", lr="-", rate="-", eta="-")
        while worker.is_alive():
            worker.join(0.5)
            if "version" not in holder:
                continue
            try:
                p = client.get_version(app, model, holder["version"]["id"]).get("progress") or {}
            except Exception:  # the store may be briefly busy; keep drawing
                continue
            if p.get("steps_per_epoch"):
                total = p["num_epochs"] * p["steps_per_epoch"]
                done = (p["epoch"] - 1) * p["steps_per_epoch"] + p["step"]
                bar.update(task, total=total, completed=done, epoch=f"{p['epoch']}/{p['num_epochs']}",
                           loss=f"{p['loss']:.4f}", lr=f"{p['lr']:.3g}", rate=f"{p['images_per_s']:.0f}",
                           eta=f"{p['eta_s']:.0f}s")


def train_with_progress(client: Client, app: str, model: str, call: TrainCall,
                        version: Version | None = None) -> Version:
    """Run ``call(on_version)`` in a thread, draw progress, and return its result (or raise its error)."""
    holder: dict[str, Any] = {"version": version} if version else {}

    def run() -> None:
        try:
            holder["result"] = call(lambda v: holder.__setitem__("version", v))
        except BaseException as exc:  # re-raised in the calling thread
            holder["error"] = exc

    # Connect (or start the embedded cluster) here, in the calling thread: Ray's local
    # processes die with the thread that started them (PR_SET_PDEATHSIG is per thread),
    # so starting them from the training thread would kill them when training ends.
    client.connect_ray()
    worker = threading.Thread(target=run, name="train", daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            _follow(client, app, model, holder, worker)
        except KeyboardInterrupt:
            if "version" in holder and typer.confirm("\nCancel this training run?", default=False, err=True):
                client.cancel(app, model, holder["version"]["id"])
                stderr.print("cancel requested: stopping after the current epoch …")
    if "error" in holder:
        raise holder["error"]
    return holder["result"]
