"""apps / concepts / inputs / datasets commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from deeptrain.cli.output import JsonOption, emit, print_json, progress, stderr, stdout, table
from deeptrain.errors import InvalidInput
from deeptrain.formats import FORMATS
from deeptrain.sdk import Client

apps_app = typer.Typer(help="Create, list and delete apps.", no_args_is_help=True)
concepts_app = typer.Typer(help="Manage an app's concepts (labels).", no_args_is_help=True)
inputs_app = typer.Typer(help="Import, list and export an app's images and labels.", no_args_is_help=True)
datasets_app = typer.Typer(help="Snapshot immutable Parquet dataset versions.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for the HTTP API: an app's, or a user key (shown once, stored hashed).",
                       no_args_is_help=True)

FORMAT_HELP = f"One of: {', '.join(FORMATS)}."


@apps_app.command("create", help="Create an app: the container of inputs, concepts, datasets and models.")
def apps_create(app: str, name: Optional[str] = typer.Option(None, help="Display name."), json: bool = JsonOption):
    emit(Client().create_app(app, name), json)


@apps_app.command("list", help="List the apps with their number of inputs.")
def apps_list(json: bool = JsonOption):
    emit(Client().list_apps(), json, lambda rows: table(rows, ["id", "name", "num_inputs", "created_at"], "apps"))


@apps_app.command("show", help="Show an app: its name, number of inputs and creation time.")
def apps_show(app: str, json: bool = JsonOption):
    emit(Client().get_app(app), json)


@apps_app.command("delete")
def apps_delete(app: str, json: bool = JsonOption):
    """Delete an app with all its inputs, labels, datasets and stored objects."""
    emit(Client().delete_app(app), json)


@concepts_app.command("create", help="Create a concept (a label for whole images or boxes).")
def concepts_create(app: str, concept: str, name: Optional[str] = typer.Option(None, help="Display name."),
                    json: bool = JsonOption):
    emit(Client().create_concept(app, concept, name), json)


@concepts_app.command("list", help="List the app's concepts with how many labels and boxes use each.")
def concepts_list(app: str, json: bool = JsonOption):
    emit(Client().list_concepts(app), json,
         lambda rows: table(rows, ["id", "name", "num_labels", "num_boxes"], f"concepts of {app}"))


@concepts_app.command("delete", help="Delete a concept; refused while labels use it unless --force.")
def concepts_delete(app: str, concept: str,
                    force: bool = typer.Option(False, "--force", help="Also delete the labels that use it."),
                    json: bool = JsonOption):
    emit(Client().delete_concept(app, concept, force), json)


def _render_report(report: dict[str, Any]) -> None:
    stdout.print(
        f"[green]imported {report['imported']}[/], duplicates {report['duplicates']}"
        + (f" (labels updated on {report['updated']})" if report.get("updated") else "")
        + f", [red]rejected {len(report['rejected'])}[/] in {report['seconds']:.1f}s ({report['images_per_s']} images/s)"
    )
    if report.get("differing_labels"):
        n = report["differing_labels"]
        stdout.print(f"[yellow]{n} duplicate{'s have' if n > 1 else ' has'} other labels in the app than in this "
                     "import (kept); run the import again with --update-labels to replace them[/]")
    if report["rejected"]:
        table(report["rejected"][:50], ["file", "reason"], "rejected")
        if len(report["rejected"]) > 50:
            stdout.print(f"... and {len(report['rejected']) - 50} more (use --json for all)")


@inputs_app.command("import")
def inputs_import(
    app: str,
    path: Path,
    format: str = typer.Option(..., "--format", "-f", help=FORMAT_HELP),
    split: Optional[str] = typer.Option(None, help="Put every imported input in this split: train, val "
                                        "(validation) or test."),
    update_labels: bool = typer.Option(False, "--update-labels", help=(
        "An image the app already has (same bytes) gets this import's labels: its concepts, negatives and boxes "
        "are replaced (split and id stay). Without it, its labels are kept and the summary counts those that "
        "differ.")),
    json: bool = JsonOption,
):
    """Import images and labels. A partial import exits 0; nothing imported at all exits 1.

    Images are known by their bytes: one the app already has is a duplicate, not imported again; to relabel,
    move it to another concept folder (or change its labels in the file) and import with --update-labels."""
    client = Client()
    with progress(f"importing {path.name}", client.count_import_candidates(path, format)) as advance:
        report = client.import_inputs(app, path, format, split=split, on_progress=advance,
                                      update_labels=update_labels)
    emit(report, json, _render_report)
    if not (report["imported"] or report["duplicates"]) and report["rejected"]:
        raise typer.Exit(1)


@inputs_app.command("list", help="List the app's inputs (id, size, concepts, split), oldest first.")
def inputs_list(app: str, limit: Optional[int] = typer.Option(None, min=1), offset: int = typer.Option(0, min=0),
                json: bool = JsonOption):
    emit(Client().list_inputs(app, limit, offset), json,
         lambda rows: table(rows, ["id", "width", "height", "split", "concepts", "negatives"], f"inputs of {app}"))


def _render_input(inp: dict[str, Any]) -> None:
    stdout.print(f"[bold]{inp['id']}[/] concepts: {', '.join(inp['concepts']) or '-'}; "
                 f"negatives: {', '.join(inp['negatives']) or '-'}; boxes: {len(inp['regions'])}")


@inputs_app.command("label")
def inputs_label(app: str, input_id: str,
                 concepts: list[str] = typer.Argument(..., help="Concept names or ids; a new one is created."),
                 negative: bool = typer.Option(False, "--negative", help="Label as negatives (the image is not it)."),
                 json: bool = JsonOption):
    """Add whole-image labels to an input (its opposite label of a concept is replaced)."""
    emit(Client().label_input(app, input_id, concepts, negative), json, _render_input)


@inputs_app.command("unlabel")
def inputs_unlabel(app: str, input_id: str,
                   concepts: list[str] = typer.Argument(..., help="Concept names or ids."),
                   json: bool = JsonOption):
    """Remove an input's whole-image labels (positive or negative) of these concepts; boxes stay."""
    emit(Client().unlabel_input(app, input_id, concepts), json, _render_input)


@inputs_app.command("delete", help="Delete an input: its image, labels and boxes.")
def inputs_delete(app: str, input_id: str, json: bool = JsonOption):
    emit(Client().delete_input(app, input_id), json)


@inputs_app.command("export", help="Export the app's inputs and labels to a folder in an import format.")
def inputs_export(app: str, out_dir: Path, format: str = typer.Option(..., "--format", "-f", help=FORMAT_HELP),
                  json: bool = JsonOption):
    emit(Client().export_inputs(app, out_dir, format), json)


@datasets_app.command("snapshot")
def datasets_snapshot(
    app: str,
    test_fraction: float = typer.Option(0.1, help="Share of inputs without a split that go to test."),
    validation_fraction: float = typer.Option(
        0.1, help="Without imported validation inputs: share of the training inputs carved into validation "
        "(by content hash; 0: none)."),
    json: bool = JsonOption,
):
    """Write an immutable dataset version; prints its id (the same data gives the same id)."""
    client = Client()
    total = client.get_app(app)["num_inputs"]
    with progress("snapshot", total) as advance:
        version = client.snapshot(app, test_fraction, on_progress=advance, validation_fraction=validation_fraction)
    if json:
        print_json(version)
    else:
        stderr.print(("existing" if version["existing"] else "new") + f" dataset version at {version['uri']}")
        print(version["id"])


def _render_dataset(d: dict[str, Any]) -> None:
    counts = d["counts"]
    stdout.print(f"[bold]{d['id']}[/] {counts['inputs']} inputs ({counts['labelled']} labelled), "
                 f"splits {counts['splits']}, at {d['uri']}")
    validation = d.get("validation") or {}
    if validation.get("source", "imported") != "imported":
        stdout.print(f"validation: {validation['count']} inputs {validation['source']} "
                     f"(validation_fraction {validation['fraction']:g})")
    rows = [{"concept": c["id"], "name": c["name"], "validation": 0, **counts["concepts"][c["id"]]}
            for c in d["concepts"]]
    table(rows, ["concept", "name", "train", "validation", "test", "negatives", "boxes"], "per concept")


@datasets_app.command("list", help="List the app's dataset versions with their counts per split.")
def datasets_list(app: str, json: bool = JsonOption):
    emit(Client().list_datasets(app), json,
         lambda rows: table(rows, ["id", "num_inputs", "splits", "num_concepts", "created_at"], f"datasets of {app}"))


@datasets_app.command("show", help="Show a dataset version: its concepts and counts per split and concept.")
def datasets_show(app: str, version: str, json: bool = JsonOption):
    emit(Client().get_dataset(app, version), json, _render_dataset)


@keys_app.command("create")
def keys_create(app: Optional[str] = typer.Argument(None, help="The key's app (none with --user)."),
                user: bool = typer.Option(False, "--user", help=(
                    "A user key instead: every scope in every app, and the one kind that creates apps (what "
                    "DEEPTRAIN_API_KEY holds for remote mode). Made on the server host only.")),
                scope: list[str] = typer.Option(["predict"], help="predict, search, inputs, train or admin (read, "
                                                                  "write: older names); repeatable."),
                name: str = typer.Option("", help="A label for listings."), json: bool = JsonOption):
    """Create a key; it is printed only now: store it, send it as 'Authorization: Key <key>'."""
    if user:
        if app is not None:
            raise InvalidInput("a user key (--user) acts in every app: give no APP")
        key = Client().create_user_key(name)
        emit(key, json, lambda k: stdout.print(f"user key {k['id']} (every app; {', '.join(k['scopes'])}):\n"
                                               f"{k['key']}\nshown only now; store it safely (remote mode: "
                                               "DEEPTRAIN_API_KEY)"))
        return
    if app is None:
        raise InvalidInput("give the APP of the key (or --user for a user key)")
    key = Client().create_key(app, scope, name)
    emit(key, json, lambda k: stdout.print(f"key {k['id']} ({', '.join(k['scopes'])}) for app {k['app_id']}:\n"
                                           f"{k['key']}\nshown only now; store it safely"))


@keys_app.command("list", help="List the app's API keys (never the secret itself).")
def keys_list(app: str, json: bool = JsonOption):
    emit(Client().list_keys(app), json,
         lambda rows: table(rows, ["id", "name", "scopes", "created_at", "revoked_at"], f"API keys of {app}"))


@keys_app.command("revoke", help="Revoke an API key: the HTTP API refuses it from now on.")
def keys_revoke(app: str, key_id: str, json: bool = JsonOption):
    emit(Client().revoke_key(app, key_id), json)
