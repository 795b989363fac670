"""apps / concepts / inputs / datasets commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from deeptrain.cli.output import JsonOption, emit, print_json, progress, stderr, stdout, table
from deeptrain.formats import FORMATS
from deeptrain.sdk import Client

apps_app = typer.Typer(help="Create, list and delete apps.", no_args_is_help=True)
concepts_app = typer.Typer(help="Manage an app's concepts (labels).", no_args_is_help=True)
inputs_app = typer.Typer(help="Import, list and export an app's images and labels.", no_args_is_help=True)
datasets_app = typer.Typer(help="Snapshot immutable Parquet dataset versions.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of an app for the HTTP API (shown once, stored hashed).", no_args_is_help=True)

FORMAT_HELP = f"One of: {', '.join(FORMATS)}."


@apps_app.command("create")
def apps_create(app: str, name: Optional[str] = typer.Option(None, help="Display name."), json: bool = JsonOption):
    emit(Client().create_app(app, name), json)


@apps_app.command("list")
def apps_list(json: bool = JsonOption):
    emit(Client().list_apps(), json, lambda rows: table(rows, ["id", "name", "num_inputs", "created_at"], "apps"))


@apps_app.command("show")
def apps_show(app: str, json: bool = JsonOption):
    emit(Client().get_app(app), json)


@apps_app.command("delete")
def apps_delete(app: str, json: bool = JsonOption):
    """Delete an app with all its inputs, labels, datasets and stored objects."""
    emit(Client().delete_app(app), json)


@concepts_app.command("create")
def concepts_create(app: str, concept: str, name: Optional[str] = typer.Option(None, help="Display name."),
                    json: bool = JsonOption):
    emit(Client().create_concept(app, concept, name), json)


@concepts_app.command("list")
def concepts_list(app: str, json: bool = JsonOption):
    emit(Client().list_concepts(app), json,
         lambda rows: table(rows, ["id", "name", "num_labels", "num_boxes"], f"concepts of {app}"))


@concepts_app.command("delete")
def concepts_delete(app: str, concept: str,
                    force: bool = typer.Option(False, "--force", help="Also delete the labels that use it."),
                    json: bool = JsonOption):
    emit(Client().delete_concept(app, concept, force), json)


def _render_report(report: dict[str, Any]) -> None:
    stdout.print(
        f"[green]imported {report['imported']}[/], duplicates {report['duplicates']}, "
        f"[red]rejected {len(report['rejected'])}[/] in {report['seconds']:.1f}s ({report['images_per_s']} images/s)"
    )
    if report["rejected"]:
        table(report["rejected"][:50], ["file", "reason"], "rejected")
        if len(report["rejected"]) > 50:
            stdout.print(f"... and {len(report['rejected']) - 50} more (use --json for all)")


@inputs_app.command("import")
def inputs_import(
    app: str,
    path: Path,
    format: str = typer.Option(..., "--format", "-f", help=FORMAT_HELP),
    split: Optional[str] = typer.Option(None, help="Put every imported input in this split: train or test."),
    json: bool = JsonOption,
):
    """Import images and labels. A partial import exits 0; nothing imported at all exits 1."""
    client = Client()
    with progress(f"importing {path.name}", client.count_import_candidates(path, format)) as advance:
        report = client.import_inputs(app, path, format, split=split, on_progress=advance)
    emit(report, json, _render_report)
    if not (report["imported"] or report["duplicates"]) and report["rejected"]:
        raise typer.Exit(1)


@inputs_app.command("list")
def inputs_list(app: str, limit: Optional[int] = typer.Option(None, min=1), offset: int = typer.Option(0, min=0),
                json: bool = JsonOption):
    emit(Client().list_inputs(app, limit, offset), json,
         lambda rows: table(rows, ["id", "width", "height", "split", "concepts", "negatives"], f"inputs of {app}"))


@inputs_app.command("delete")
def inputs_delete(app: str, input_id: str, json: bool = JsonOption):
    emit(Client().delete_input(app, input_id), json)


@inputs_app.command("export")
def inputs_export(app: str, out_dir: Path, format: str = typer.Option(..., "--format", "-f", help=FORMAT_HELP),
                  json: bool = JsonOption):
    emit(Client().export_inputs(app, out_dir, format), json)


@datasets_app.command("snapshot")
def datasets_snapshot(
    app: str,
    test_fraction: float = typer.Option(0.1, help="Share of inputs without a split that go to test."),
    json: bool = JsonOption,
):
    """Write an immutable dataset version; prints its id (the same data gives the same id)."""
    client = Client()
    total = client.get_app(app)["num_inputs"]
    with progress("snapshot", total) as advance:
        version = client.snapshot(app, test_fraction, on_progress=advance)
    if json:
        print_json(version)
    else:
        stderr.print(("existing" if version["existing"] else "new") + f" dataset version at {version['uri']}")
        print(version["id"])


def _render_dataset(d: dict[str, Any]) -> None:
    counts = d["counts"]
    stdout.print(f"[bold]{d['id']}[/] {counts['inputs']} inputs ({counts['labelled']} labelled), "
                 f"splits {counts['splits']}, at {d['uri']}")
    rows = [{"concept": c["id"], "name": c["name"], **counts["concepts"][c["id"]]} for c in d["concepts"]]
    table(rows, ["concept", "name", "train", "test", "negatives", "boxes"], "per concept")


@datasets_app.command("list")
def datasets_list(app: str, json: bool = JsonOption):
    emit(Client().list_datasets(app), json,
         lambda rows: table(rows, ["id", "num_inputs", "splits", "num_concepts", "created_at"], f"datasets of {app}"))


@datasets_app.command("show")
def datasets_show(app: str, version: str, json: bool = JsonOption):
    emit(Client().get_dataset(app, version), json, _render_dataset)


@keys_app.command("create")
def keys_create(app: str,
                scope: list[str] = typer.Option(["predict"], help="predict, search, read or write; repeatable."),
                name: str = typer.Option("", help="A label for listings."), json: bool = JsonOption):
    """Create a key; it is printed only now: store it, send it as 'Authorization: Key <key>'."""
    key = Client().create_key(app, scope, name)
    emit(key, json, lambda k: stdout.print(f"key {k['id']} ({', '.join(k['scopes'])}) for app {k['app_id']}:\n"
                                           f"{k['key']}\nshown only now; store it safely"))


@keys_app.command("list")
def keys_list(app: str, json: bool = JsonOption):
    emit(Client().list_keys(app), json,
         lambda rows: table(rows, ["id", "name", "scopes", "created_at", "revoked_at"], f"API keys of {app}"))


@keys_app.command("revoke")
def keys_revoke(app: str, key_id: str, json: bool = JsonOption):
    emit(Client().revoke_key(app, key_id), json)
