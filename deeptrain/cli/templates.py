"""templates commands: what can be trained, and every hyperparameter of a template."""

from __future__ import annotations

from typing import Any

import typer

from deeptrain.cli.output import JsonOption, emit, stdout, table
from deeptrain.params import describe_params
from deeptrain.templates import all_templates, get_template

templates_app = typer.Typer(help="List templates and show their hyperparameters.", no_args_is_help=True)


@templates_app.command("list", help="List the templates of every task with their minimum image size.")
def templates_list(json: bool = JsonOption):
    rows = [{"task": t.task, "template": t.name, "min_image_size": t.min_image_size, "description": t.description}
            for t in all_templates()]
    emit(rows, json, lambda r: table(r, ["task", "template", "min_image_size", "description"], "templates"))


@templates_app.command("show")
def templates_show(task: str, name: str, json: bool = JsonOption):
    """Every parameter with type, default, valid range and meaning, plus the parameter count at 1000 classes."""
    from deeptrain.models.tasks import count_params, count_reference_params

    template = get_template(task, name)
    doc: dict[str, Any] = {
        "task": template.task, "template": template.name, "description": template.description,
        "reference": template.reference, "min_image_size": template.min_image_size,
        "mean": list(template.mean), "std": list(template.std), "head_prefixes": list(template.head_prefixes),
        "num_params": count_reference_params(template), "reference_num_params": template.reference_num_params,
        "task_model_num_params": count_params(template.build(1000)),
        "params": describe_params(template),
    }

    def render(d: dict[str, Any]) -> None:
        stdout.print(f"[bold]{d['task']} / {d['template']}[/]: {d['description']}")
        stdout.print(f"reference: {d['reference']}")
        stdout.print(f"parameters at 1000 classes: {d['num_params']:,} (published {d['reference_num_params']:,}); "
                     f"minimum image_size {d['min_image_size']}")
        stdout.print(f"the {d['task']} model as trained here, at 1000 concepts: {d['task_model_num_params']:,} parameters")
        table(d["params"], ["name", "type", "default", "range", "source", "description"], "hyperparameters")

    emit(doc, json, render)
