"""models commands: create, train (with a live progress bar), versions, show, cancel, evaluate, report."""

from __future__ import annotations

from typing import Any, Optional

import typer

from deeptrain.cli.follow import train_with_progress
from deeptrain.cli.options import (CpusOption, DatasetVersionOption, GpusOption, ParamOption, PlacementOption,
                                   ResumeOption, WorkersOption, parse_params)
from deeptrain.cli.output import JsonOption, emit, print_json, stdout, table
from deeptrain.sdk import Client

models_app = typer.Typer(help="Define models, train versions, follow and evaluate them.", no_args_is_help=True)


@models_app.command("create")
def models_create(
    app: str, model: str,
    task: str = typer.Option(..., help="classification, detection or embedding."),
    template: str = typer.Option(..., help="A template of the task (see `deeptrain templates list`)."),
    param: Optional[list[str]] = ParamOption,
    concept: Optional[list[str]] = typer.Option(None, "--concept", help="Restrict to these concepts (repeatable)."),
    json: bool = JsonOption,
):
    emit(Client().create_model(app, model, task, template, parse_params(param), concept), json)


@models_app.command("list")
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
        stdout.print("metrics: " + ", ".join(f"{k}={x}" for k, x in scalars.items()))
    progress = v.get("progress") or {}
    if v["status"] == "training" and progress:
        stdout.print(f"progress: epoch {progress.get('epoch')}/{progress.get('num_epochs')}, "
                     f"loss {progress.get('loss'):.4f}, {progress.get('images_per_s', 0):.1f} images/s, "
                     f"ETA {progress.get('eta_s', 0):.0f}s")


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

    The version is planned and recorded (queued) first: bad input is refused before Ray starts."""
    params = parse_params(param)
    resources = None if resume else Client.worker_resources(cpus_per_worker, gpus_per_worker, placement)
    client = Client()
    if resume:
        version = client.get_version(app, model, resume)
    else:
        version = client.queue_train(app, model, params, workers=workers, dataset_version=dataset_version,
                                     resources=resources)
    result = train_with_progress(client, app, model, lambda _: client.resume(app, model, version.id), version)
    emit(result, json, _render_version)


@models_app.command("versions")
def models_versions(app: str, model: str, json: bool = JsonOption):
    def render(rows):
        rows = [{**r, "metric": next((f"{k}={r['metrics'][k]:.4f}" for k in ("top1", "map", "recall@1")
                                      if r.get("metrics") and k in r["metrics"]), "")} for r in rows]
        table(rows, ["id", "status", "dataset_version_id", "metric", "created_at"], f"versions of {model}")

    emit(Client().list_versions(app, model), json, render)


@models_app.command("show")
def models_show(app: str, model: str, version: str, json: bool = JsonOption):
    emit(Client().get_version(app, model, version), json, _render_version)


@models_app.command("cancel")
def models_cancel(app: str, model: str, version: str, json: bool = JsonOption):
    emit(Client().cancel(app, model, version), json, _render_version)


@models_app.command("evaluate")
def models_evaluate(app: str, model: str, version: str,
                    dataset_version: Optional[str] = typer.Option(None, help="Evaluate on this dataset version's test split."),
                    json: bool = JsonOption):
    emit(Client().evaluate(app, model, version, dataset_version), json)


@models_app.command("report")
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
                  format: str = typer.Option(..., "--format", "-f", help="onnx or torchscript."),
                  out: str = typer.Option(..., "--out", "-o", help="Output file."),
                  json: bool = JsonOption):
    """Export a trained version; prints the max abs difference to PyTorch on a test batch."""
    emit(Client().export(app, model, version, format, out), json)


def predict_command(
    app: str, model: str, images: list[str] = typer.Argument(..., help="Image files."),
    version: Optional[str] = typer.Option(None, help="Model version (default: the model's default/newest)."),
    threshold: Optional[float] = typer.Option(None, help="Detection score threshold (default: the version's)."),
    top_k: Optional[int] = typer.Option(None, min=1, help="Only the k best concepts."),
    json: bool = JsonOption,
):
    """Predict with a trained version: concepts, regions (detection) or embeddings."""
    results = Client().predict(app, model, images, version_id=version, threshold=threshold, top_k=top_k)
    out = [{"image": path, **r.model_dump(mode="json")} for path, r in zip(images, results)]

    def render(rows):
        for row in rows:
            if "concepts" in row:
                stdout.print(f"{row['image']}: " + ", ".join(f"{c['id']} {c['value']:.3f}" for c in row["concepts"][:5]))
            elif "regions" in row:
                stdout.print(f"{row['image']}: {len(row['regions'])} region(s)")
            else:
                stdout.print(f"{row['image']}: embedding of {len(row['embedding'])} dims")

    emit(out, json, render)
