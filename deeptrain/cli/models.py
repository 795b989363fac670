"""models commands: create, train (with a live progress bar), versions, show, cancel, evaluate, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from deeptrain.cli.follow import TrainingBar, follow_remote, train_with_progress
from deeptrain.cli.lifecycle import models_delete, versions_app
from deeptrain.cli.options import (CpusOption, DatasetVersionOption, GpusOption, ParamOption, PlacementOption,
                                   ResumeOption, WorkersOption, parse_params)
from deeptrain.cli.output import JsonOption, emit, metrics_tables, print_json, stdout, table, working
from deeptrain.errors import InvalidInput
from deeptrain.images import IMAGE_SUFFIXES
from deeptrain.sdk import Client

models_app = typer.Typer(help="Define models, train versions, follow and evaluate them.", no_args_is_help=True)


@models_app.command("create", help="Define a model: its task, template and default hyperparameters (and concepts).")
def models_create(
    app: str, model: str,
    task: str = typer.Option(..., help="classification, detection or embedding."),
    template: str = typer.Option(..., help="A template of the task (see `deeptrain templates list`)."),
    param: Optional[list[str]] = ParamOption,
    concept: Optional[list[str]] = typer.Option(None, "--concept", help="Restrict to these concepts (repeatable)."),
    json: bool = JsonOption,
):
    emit(Client().create_model(app, model, task, template, parse_params(param), concept), json)


@models_app.command("list", help="List the app's models with their template and default version.")
def models_list(app: str, json: bool = JsonOption):
    emit(Client().list_models(app), json,
         lambda rows: table(rows, ["id", "task", "template", "default_version", "created_at"], f"models of {app}"))


def _render_version(v: dict[str, Any]) -> None:
    stdout.print(f"[bold]{v['model_id']}/{v['id']}[/] status [bold]{v['status']}[/]"
                 + (f" — [red]{v['error']}[/]" if v.get("error") else ""))
    stdout.print(f"dataset version {v['dataset_version_id']}, concepts {', '.join(v['concepts'])}")
    params = v["params"]
    stdout.print("params: " + ", ".join(f"{k}={params[k]}" for k in sorted(params) if params[k] is not None))
    metrics = v.get("metrics") or {}
    scalars = {k: round(x, 4) if isinstance(x, float) else x for k, x in metrics.items()
               if isinstance(x, (int, float))}
    if scalars:
        stdout.print("test metrics: " + ", ".join(f"{k}={x}" for k, x in scalars.items()))
    validation = {k: round(x, 4) if isinstance(x, float) else x for k, x in (metrics.get("validation") or {}).items()}
    if validation:
        stdout.print(f"validation metrics (on the {validation.pop('split', 'validation')} split): "
                     + ", ".join(f"{k}={x}" for k, x in validation.items()))
    progress = v.get("progress") or {}
    _render_epochs(progress.get("history") or [])
    if v["status"] == "training" and progress.get("phase"):
        stdout.print(f"progress: {progress['phase']}")
    elif v["status"] == "training" and progress.get("steps_per_epoch"):
        stdout.print(f"progress: epoch {progress.get('epoch')}/{progress.get('num_epochs')}, "
                     f"loss {progress.get('loss'):.4f}, {progress.get('images_per_s', 0):.1f} images/s, "
                     f"ETA {progress.get('eta_s', 0):.0f}s")


EPOCH_COLUMNS = ["epoch", "loss", "images/s", "data wait s", "augment s", "compute s", "input-bound"]


def _render_epochs(history: list[dict[str, Any]]) -> None:
    """Per epoch, where the training steps spent their time: waiting for input, augmenting, the model."""
    rows = []
    for h in history:
        spent = h.get("data_wait_s", 0) + h.get("augment_s", 0) + h.get("compute_s", 0)
        rows.append({"epoch": h["epoch"], "loss": f"{h['train_loss']:.4f}", "images/s": f"{h['images_per_s']:.1f}",
                     "data wait s": f"{h.get('data_wait_s', 0):.1f}", "augment s": f"{h.get('augment_s', 0):.1f}",
                     "compute s": f"{h.get('compute_s', 0):.1f}",
                     "input-bound": f"{h.get('data_wait_s', 0) / spent:.0%}" if spent else ""})
    if rows:
        table(rows, EPOCH_COLUMNS, "epochs (time of the training steps: data wait, augment, compute)")


@models_app.command("train")
def models_train(
    app: str, model: str,
    param: Optional[list[str]] = ParamOption,
    workers: int = WorkersOption,
    dataset_version: Optional[str] = DatasetVersionOption,
    resume: Optional[str] = ResumeOption,
    cpus_per_worker: Optional[float] = CpusOption,
    gpus_per_worker: Optional[float] = GpusOption,
    placement: str = PlacementOption,
    json: bool = JsonOption,
):
    """Train a new version (or --resume one); waits and prints the finished version. Ctrl-C asks to cancel.

    The version is planned and recorded (queued) first: bad input is refused before Ray starts. With
    DEEPTRAIN_API_URL the server queues it and trains it on its cluster; its progress is drawn the same way."""
    params = parse_params(param)
    client = Client()
    resources = None if resume else client.worker_resources(cpus_per_worker, gpus_per_worker, placement)
    if getattr(client, "remote", False):  # DEEPTRAIN_API_URL: the server trains it on its cluster; followed here
        if resume:
            raise InvalidInput("--resume is not available with DEEPTRAIN_API_URL: resume a version on the server host")
        with TrainingBar() as bar:
            result = follow_remote(client, app, model, bar, lambda: client.start_training(
                app, model, params, workers=workers, dataset_version=dataset_version, resources=resources))
        emit(result, json, _render_version)
        return
    queued = client.check_resume(app, model, resume) if resume else None  # a trained one: refused before any bar
    with TrainingBar() as bar:
        if queued is None:
            bar.phase("checking the dataset" if dataset_version else "snapshotting the dataset")
            queued = client.queue_train(app, model, params, workers=workers, dataset_version=dataset_version,
                                        resources=resources)
        version = queued
        result = train_with_progress(client, app, model, lambda _: client.resume(app, model, version.id), version, bar)
    emit(result, json, _render_version)


@models_app.command("show", help="Show a version: status, params used (incl. derived lrate), dataset version, metrics.")
def models_show(app: str, model: str, version: str, json: bool = JsonOption):
    emit(Client().get_version(app, model, version), json, _render_version)


@models_app.command("cancel", help="Cancel a version: a running one stops after its current epoch.")
def models_cancel(app: str, model: str, version: str, json: bool = JsonOption):
    emit(Client().cancel(app, model, version), json, _render_version)


@models_app.command("evaluate")
def models_evaluate(app: str, model: str, version: str,
                    dataset_version: Optional[str] = typer.Option(None, help="Evaluate on this dataset version's split."),
                    split: str = typer.Option("test", help="The split to evaluate on: test, validation or val."),
                    json: bool = JsonOption):
    """Evaluate a trained version on its dataset version's test split (or another split, or another dataset
    version's) and print the metrics."""
    with working(f"evaluating {model}/{version}"):
        result = Client().evaluate(app, model, version, dataset_version, split=split)

    def render(r: dict[str, Any]) -> None:
        metrics_tables(r["metrics"], f"{r['model_id']}/{r['version_id']} on the {r['split']} split of dataset "
                       f"version {r['dataset_version_id']}")

    emit(result, json, render)


@models_app.command("report", help="Show a version's report (report.json and PNG plots) and where it is.")
def models_report(app: str, model: str, version: str,
                  open_: bool = typer.Option(False, "--open", help="Print the report's local path (to open it)."),
                  json: bool = JsonOption):
    report = Client().report(app, model, version)
    if json:
        print_json(report)
    elif open_:
        print(report["path"])
    else:
        emit({k: report[k] for k in ("path", "plots")}, False)


@models_app.command("export")
def models_export(app: str, model: str, version: str,
                  format: str = typer.Option(..., "--format", "-f",
                                             help="onnx (.onnx; needs the export extra) or "
                                                  "torch_export (.pt2); torchscript was replaced by torch_export."),
                  out: str = typer.Option(..., "--out", "-o", help="Output file (.onnx or .pt2)."),
                  images: Optional[Path] = typer.Option(None, "--images", help="Folder of images for the parity check "
                                              "(default: the version's test split)."),
                  max_images: int = typer.Option(32, "--max-images", help="At most this many parity images."),
                  threshold: Optional[float] = typer.Option(None, "--threshold", help="Detection: score threshold baked "
                                                  "into the graph (default the version's detection_score_threshold)."),
                  json: bool = JsonOption):
    """Export a trained version; prints its parity with the served model on real images (top-1
    agreement, cosine or boxes after NMS, max abs difference)."""
    files = None
    if images is not None:
        if not images.is_dir():
            raise InvalidInput(f"--images {images} is not a folder of images")
        files = sorted(p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    emit(Client().export(app, model, version, format, out, files, score_threshold=threshold,
                         max_images=max_images), json)


# after the commands above, so that they come first in the help
models_app.add_typer(versions_app, name="versions")
models_app.command("delete")(models_delete)
