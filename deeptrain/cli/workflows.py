"""workflows commands: define chains of models (detect -> classify/embed each region), run them offline."""

from __future__ import annotations

from typing import Optional

import typer

from deeptrain.cli.output import JsonOption, emit, stdout, table
from deeptrain.sdk import Client

workflows_app = typer.Typer(help="Workflows: a detector's regions cropped and classified/embedded in one call.",
                            no_args_is_help=True)


def _steps_text(steps: list[dict]) -> str:
    return " -> ".join(f"{s['kind']}:{s['model_id']}" + (f":{s['version_id']}" if s["version_id"] else "")
                       for s in steps)


@workflows_app.command("create")
def workflows_create(
    app: str, name: str,
    step: list[str] = typer.Option(..., "--step", help="KIND:MODEL[:VERSION], KIND one of detect, classify, embed; "
                                                       "repeat in order (detect only first)."),
    json: bool = JsonOption,
):
    """Define a workflow; without :VERSION a step runs the model's default (else newest trained) version."""
    emit(Client().create_workflow(app, name, step), json,
         lambda w: stdout.print(f"workflow [bold]{w['id']}[/] of {w['app_id']}: {_steps_text(w['steps'])}"))


@workflows_app.command("list", help="List the app's workflows and their steps.")
def workflows_list(app: str, json: bool = JsonOption):
    emit(Client().list_workflows(app), json,
         lambda rows: table([{**w, "steps": _steps_text(w["steps"])} for w in rows], ["id", "steps", "created_at"],
                            f"workflows of {app}"))


@workflows_app.command("show", help="Show a workflow's steps.")
def workflows_show(app: str, name: str, json: bool = JsonOption):
    emit(Client().get_workflow(app, name), json)


@workflows_app.command("delete", help="Delete a workflow (its models stay).")
def workflows_delete(app: str, name: str, json: bool = JsonOption):
    emit(Client().delete_workflow(app, name), json)


@workflows_app.command("run")
def workflows_run(
    app: str, name: str, images: list[str] = typer.Argument(..., help="Image files."),
    threshold: Optional[float] = typer.Option(None, help="Detection score threshold (default: the detector's)."),
    top_k: Optional[int] = typer.Option(None, min=1, help="Only the k best concepts."),
    json: bool = JsonOption,
):
    """Run a workflow here (no server): the same results as POST /v2/apps/APP/workflows/NAME/results."""
    results = Client().run_workflow(app, name, images, threshold=threshold, top_k=top_k)
    out = [{"image": path, **r} for path, r in zip(images, results)]

    def render(rows):
        for row in rows:
            first, *rest = row["outputs"]
            if "regions" not in first:
                stdout.print(f"{row['image']}: " + "; ".join(_summary(o) for o in row["outputs"]))
                continue
            stdout.print(f"{row['image']}: {len(first['regions'])} region(s) from {first['model_id']}")
            for k, r in enumerate(first["regions"]):
                b = r["bounding_box"]
                found = "; ".join(_summary({"model_id": o["model_id"], **o["regions"][k]}) for o in rest)
                stdout.print(f"  [{b['top_row']:.3f} {b['left_col']:.3f} {b['bottom_row']:.3f} {b['right_col']:.3f}]"
                             f" {r['concept']} {r['value']:.3f}  {found}")

    emit(out, json, render)


def _summary(out: dict) -> str:
    if "concepts" in out:
        return f"{out['model_id']}: " + ", ".join(f"{c['id']} {c['value']:.3f}" for c in out["concepts"][:3])
    return f"{out['model_id']}: embedding of {len(out['embedding'])} dims"
