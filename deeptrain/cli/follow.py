"""Run a training call in a thread and draw its live progress (read from the store).

Shared by ``deeptrain models train`` and ``make demo``. The bar shows what the run is doing
from its first second: the phases the CLI runs itself (snapshotting the dataset, starting
the cluster), then the ones the run records in its version's ``progress.phase`` (reading
data, warming up), then ``epoch k/n`` with loss, learning rate, images/s and ETA. Where
stderr is not a terminal (a log, a Ray job), each new phase is also printed as a line.
Ctrl-C asks whether to cancel; a cancelled run stops after its current epoch and is marked
``cancelled``. In remote mode (``DEEPTRAIN_API_URL``) the server trains the version on its cluster and
``follow_remote`` draws the same bar from the version's progress, polled over HTTP.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from deeptrain.cli.output import stderr
from deeptrain.results import Version
from deeptrain.sdk import Client

TrainCall = Callable[[Callable[[Version], None]], Version]
QUEUED = "queued on the server (waiting for its cluster)"


class TrainingBar:
    """A live bar on stderr whose label is the run's phase; use it as a context manager."""

    def __init__(self, console: Console = stderr):
        self.console = console
        self._bar = Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                             TimeElapsedColumn(), console=console)
        self._task = self._bar.add_task("train", total=None, phase="", stats="")
        self._phase = ""
        self._phases_seen = 0

    def __enter__(self) -> "TrainingBar":
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.stop()

    def phase(self, text: str, stats: str = "", **counts: Any) -> None:
        """Show ``text`` as the phase (and ``stats`` beside the bar; ``counts``: total/completed steps)."""
        self._bar.update(self._task, phase=text, stats=stats, **counts)
        if text != self._phase:
            self._phase = text
            if not self.console.is_terminal:  # no live redraw there: one line per phase
                self.console.print(f"training: {text}", soft_wrap=True, markup=False, highlight=False)

    def show(self, progress: dict[str, Any]) -> None:
        """Draw a version's progress record: the phases it passed since the last record (``phases``), then its
        phase, else its epoch and step."""
        p = progress
        passed = p.get("phases") or []
        for name in passed[self._phases_seen:]:
            self.phase(name)
        self._phases_seen = max(self._phases_seen, len(passed))
        if p.get("phase"):
            self.phase(p["phase"])
        elif p.get("steps_per_epoch"):
            self.phase(f"epoch {p['epoch']}/{p['num_epochs']}",
                       f"loss {p['loss']:.4f} lr {p['lr']:.3g} {p['images_per_s']:.0f} img/s ETA {p['eta_s']:.0f}s",
                       total=p["num_epochs"] * p["steps_per_epoch"],
                       completed=(p["epoch"] - 1) * p["steps_per_epoch"] + p["step"])


def _follow(client: Client, app: str, model: str, holder: dict[str, Any], worker: threading.Thread,
            bar: TrainingBar) -> None:
    """Draw the version's live progress (read from the store) until the training thread ends."""
    while worker.is_alive():
        worker.join(0.5)
        if "version" not in holder:
            continue
        try:
            progress = client.get_version(app, model, holder["version"]["id"]).get("progress") or {}
        except Exception:  # the store may be briefly busy; keep drawing
            continue
        bar.show(progress)


def train_with_progress(client: Client, app: str, model: str, call: TrainCall,
                        version: Version | None = None, bar: TrainingBar | None = None) -> Version:
    """Run ``call(on_version)`` in a thread, draw progress on ``bar`` (a new one if None), and return its
    result (or raise its error)."""
    if bar is None:
        with TrainingBar() as new_bar:
            return train_with_progress(client, app, model, call, version, new_bar)
    holder: dict[str, Any] = {"version": version} if version else {}

    def run() -> None:
        try:
            holder["result"] = call(lambda v: holder.__setitem__("version", v))
        except BaseException as exc:  # re-raised in the calling thread
            holder["error"] = exc

    # Connect (or start the embedded cluster) here, in the calling thread: Ray's local
    # processes die with the thread that started them (PR_SET_PDEATHSIG is per thread),
    # so starting them from the training thread would kill them when training ends.
    bar.phase("starting the cluster")
    client.connect_ray()
    worker = threading.Thread(target=run, name="train", daemon=True)
    worker.start()
    while worker.is_alive():
        try:
            _follow(client, app, model, holder, worker, bar)
        except KeyboardInterrupt:
            if "version" in holder and typer.confirm("\nCancel this training run?", default=False, err=True):
                client.cancel(app, model, holder["version"]["id"])
                stderr.print("cancel requested: stopping after the current epoch …")
    if "error" in holder:
        raise holder["error"]
    return holder["result"]


def follow_remote(client: Any, app: str, model: str, bar: TrainingBar, start: Callable[[], Version]) -> Version:
    """Remote mode: ``start()`` has the server queue a version (its Ray job trains it); draw its progress
    from polls until it is trained, failed (raised) or cancelled. Ctrl-C asks whether to cancel it."""
    bar.phase("sending to the server")
    version = start()

    def draw(v: Version) -> None:
        progress = v.get("progress") or {}
        if v["status"] == "queued" and not (progress.get("phase") or progress.get("phases")):
            bar.phase(QUEUED)
        bar.show(progress)

    while True:
        try:
            return client.wait_version(app, model, version["id"], on_version=draw)
        except KeyboardInterrupt:
            if typer.confirm("\nCancel this training run?", default=False, err=True):
                client.cancel(app, model, version["id"])
                stderr.print("cancel requested: stopping after the current epoch …")
