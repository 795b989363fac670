"""weights commands: the ImageNet weights of each backbone, registered once for the whole cluster."""

from __future__ import annotations

from typing import Any

import typer

from deeptrain.cli.output import JsonOption, emit, stdout, table
from deeptrain.errors import InvalidInput
from deeptrain.sdk import Client

weights_app = typer.Typer(help="Pretrained backbone weights: what init_from=imagenet starts from.",
                          no_args_is_help=True)
NameOption = typer.Option("imagenet", "--name", help="The registry name (init_from=imagenet uses 'imagenet').")


def _registry() -> Any:
    weights = getattr(Client(), "weights", None)
    if weights is None:
        raise InvalidInput("deeptrain weights is not available over HTTP yet (DEEPTRAIN_API_URL is set): run it on "
                           "the server host, where it writes the deployment's object storage and database")
    return weights


def _added(row: dict[str, Any]) -> None:
    what = "already registered" if row.get("unchanged") else "registered"
    stdout.print(f"{row['architecture']} [bold]{row['name']}[/] {what}: sha256 {row['sha256']}, "
                 f"{row['num_tensors']} tensors, {row['size_bytes']:,} bytes at {row['uri']}")
    stdout.print(f"templates: {', '.join(row['templates'])}")


@weights_app.command("add")
def weights_add(target: str = typer.Argument(..., help="An architecture (resnext50_32x4d) or a template (ResNext)."),
                file: str = typer.Argument(..., help="A timm/torchvision/safetensors checkpoint: path or URI."),
                name: str = NameOption, json: bool = JsonOption):
    """Check a checkpoint's key names and shapes against the backbone, store it once in object storage."""
    emit(_registry().add(target, file, name), json, _added)


@weights_app.command("list", help="List the registered weights.")
def weights_list(json: bool = JsonOption):
    emit(_registry().list(), json, lambda rows: table(
        rows, ["architecture", "name", "sha256", "num_tensors", "size_bytes", "source", "created_at"], "weights"))


@weights_app.command("remove", help="Unregister weights (the stored file goes unless other weights use it).")
def weights_remove(target: str, name: str = NameOption, json: bool = JsonOption):
    emit(_registry().remove(target, name), json)


@weights_app.command("which")
def weights_which(target: str = typer.Argument(..., help="A template (ResNext, detection/InceptionV2) or an "
                                                         "architecture."), json: bool = JsonOption):
    """What init_from=imagenet would use, and from where: the registry, the hub cache or torchvision's."""
    def render(d: dict[str, Any]) -> None:
        if d["source"] == "none":
            stdout.print(f"{d['architecture']}: none. {d['fix']}")
        else:
            where = d.get("uri") or d.get("path")
            stdout.print(f"{d['architecture']}: {d['source']} {where}"
                         + (f" (sha256 {d['sha256']})" if d.get("sha256") else ""))

    emit(_registry().which(target), json, render)
