"""models commands: create, train (with a live progress bar), versions, show, cancel, evaluate, report."""

from __future__ import annotations

from typing import Any, Optional

import typer

from deeptrain.cli.follow import train_with_progress
from deeptrain.cli.output import JsonOption, emit, print_json, stdout, table
from deeptrain.params import parse_cli_params
from deeptrain.sdk import Client

models_app = typer.Typer(help="Define models, train versions, follow and evaluate them.", no_args_is_help=True)

ParamOption = typer.Option(None, "--param", "-p", help="Hyperparameter as name=value (repeatable).")
WorkersOption = typer.Option(1, min=1, help="Ray Train workers (data-parallel).")
DatasetVersionOption = typer.Option(None, help="Dataset version id (default: snapshot now).")
ResumeOption = typer.Option(None, help="Run this queued version, or continue this interrupted one from its last "
                                       "checkpoint (with the resources it was planned with).")
CpusOption = typer.Option(None, "--cpus-per-worker", min=0,
                          help="CPUs each worker reserves (default: $DEEPTRAIN_CPU_PER_WORKER or 0.5).")
GpusOption = typer.Option(None, "--gpus-per-worker", min=0,
                          help="GPUs each worker reserves; 0 = none (default: 1 when use_gpu, auto = the cluster has GPUs).")
PlacementOption = typer.Option("PACK", "--placement",
                               help="How workers spread over nodes: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD (one per node).")


def _params(values: Optional[list[str]]) -> dict[str, Any]:
    return parse_cli_params(values or [])


def worker_resources(cpus: Optional[float], gpus: Optional[float], placement: str):
    from deeptrain.jobs.train import CPU_PER_WORKER, WorkerResources

    return WorkerResources(cpus=CPU_PER_WORKER if cpus is None else cpus, gpus=gpus, placement=placement.upper())


@models_app.command("create")
def models_create(
    app: str, model: str,
    task: str = typer.Option(..., help="classification, detection or embedding."),
    template: str = typer.Option(..., help="A template of the task (see `deeptrain templates list`)."),
    param: Optional[list[str]] = ParamOption,
    concept: Optional[list[str]] = typer.Option(None, "--concept", help="Restrict to these concepts (repeatable)."),
    json: bool = JsonOption,
):
    emit(Client().create_model(app, model, task, template, _params(param), concept), json)


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
    """Train a new version (or --resume one); waits and prints the finished version. Ctrl-C asks to cancel."""
    client = Client()
    if resume:
        result = train_with_progress(client, app, model, lambda _: client.resume(app, model, resume),
                                     client.get_version(app, model, resume))
    else:
        resources = worker_resources(cpus_per_worker, gpus_per_worker, placement)
        result = train_with_progress(client, app, model, lambda on_version: client.train(
            app, model, _params(param), workers=workers, dataset_version=dataset_version, on_version=on_version,
            resources=resources))
    emit(result, json, _render_version)


@models_app.command("versions")
def models_versions(app: str, model: str, json: bool = JsonOption):
    def render(rows):
        for r in rows:
            r["metric"] = next((f"{k}={r['metrics'][k]:.4f}" for k in ("top1", "map", "recall@1")
                                if r.get("metrics") and k in r["metrics"]), "")
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
    out = [{"image": path, **r} for path, r in zip(images, results)]

    def render(rows):
        for row in rows:
            if "concepts" in row:
                stdout.print(f"{row['image']}: " + ", ".join(f"{c['id']} {c['value']:.3f}" for c in row["concepts"][:5]))
            elif "regions" in row:
                stdout.print(f"{row['image']}: {len(row['regions'])} region(s)")
            else:
                stdout.print(f"{row['image']}: embedding of {len(row['embedding'])} dims")

    emit(out, json, render)
