"""Deleting models and versions with their stored objects, and ``gc``: what frees storage.

Each asks before it deletes (``--yes`` skips the question; without a terminal the answer is no).
"""

from __future__ import annotations

from typing import Any, Optional

import typer
from typer.core import TyperGroup

from deeptrain.cli.output import JsonOption, emit, stdout, table
from deeptrain.sdk import Client

YesOption = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
ForceOption = typer.Option(False, "--force", help="Delete versions recorded as queued or training too (a run "
                                                  "whose driver died), and the app's search index if built with it.")


class ListByDefault(TyperGroup):
    """A group whose first argument, when it is not one of its commands, goes to ``list``:
    ``models versions APP MODEL`` is ``models versions list APP MODEL``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] != "--help":
            args = ["list", *args]
        return super().parse_args(ctx, args)


versions_app = typer.Typer(cls=ListByDefault, no_args_is_help=True,
                           help="List a model's versions (`models versions APP MODEL` lists too) or delete one.")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _confirm(question: str, yes: bool) -> None:
    if not yes:
        typer.confirm(question, abort=True, err=True)


@versions_app.command("list")
def versions_list(app: str, model: str, json: bool = JsonOption):
    """The model's versions, oldest first."""
    def render(rows):
        rows = [{**r, "metric": next((f"{k}={r['metrics'][k]:.4f}" for k in ("top1", "map", "recall@1")
                                      if r.get("metrics") and k in r["metrics"]), "")} for r in rows]
        table(rows, ["id", "status", "dataset_version_id", "metric", "created_at"], f"versions of {model}")

    emit(Client().list_versions(app, model), json, render)


@versions_app.command("delete")
def versions_delete(app: str, model: str, version: str, force: bool = ForceOption, yes: bool = YesOption,
                    json: bool = JsonOption):
    """Delete a version with its weights, checkpoints and report.

    Refused while a workflow pins it, while it is a tuning trial, or while it is queued or training (unless
    --force)."""
    client = Client()
    v = client.get_version(app, model, version)
    _confirm(f"delete version {version} of model {model} ({v['status']}) and its stored objects?", yes)
    emit(client.delete_version(app, model, version, force), json,
         lambda d: stdout.print(f"deleted version {d['id']} of {d['model_id']}: {d['objects_deleted']} objects, "
                                f"{_size(d['bytes_deleted'])}" + (" (it was the default version, now unset)"
                                                                   if d["default_unset"] else "")))


def models_delete(app: str, model: str, force: bool = ForceOption, yes: bool = YesOption, json: bool = JsonOption):
    """Delete a model with all its versions, tuning runs and stored objects.

    Refused while a workflow runs it or a version is queued or training (unless --force)."""
    client = Client()
    n = len(client.list_versions(app, model))
    _confirm(f"delete model {model} of app {app} with its {n} version(s) and their stored objects?", yes)
    emit(client.delete_model(app, model, force), json,
         lambda d: stdout.print(f"deleted model {d['id']} with {d['versions_deleted']} version(s): "
                                f"{d['objects_deleted']} objects, {_size(d['bytes_deleted'])}"))


def _render_gc(r: dict[str, Any]) -> None:
    if r["garbage"]:
        table([{**i, "size": _size(i["bytes"])} for i in r["garbage"]], ["key", "kind", "objects", "size"],
              "would remove" if r["dry_run"] else "removed")
    verb = "would remove" if r["dry_run"] else "removed"
    stdout.print(f"{verb} {r['objects']} objects, {_size(r['bytes'])}"
                 + (f"; {r['skipped_recent']} unreferenced item(s) younger than {r['grace_s']:g}s kept "
                    "(DEEPTRAIN_GC_GRACE_S)" if r["skipped_recent"] else ""))


def gc_command(app: Optional[str] = typer.Argument(None, help="Only this app's objects (default: every app's, and "
                                                              "old temporary files)."),
               dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
               yes: bool = YesOption, json: bool = JsonOption):
    """Remove stored objects no record refers to.

    Leftovers of deleted models, versions and apps, of killed imports and snapshots. Objects younger than
    DEEPTRAIN_GC_GRACE_S (an hour) stay. Lists what goes and asks first (--yes skips)."""
    client = Client()
    plan = client.gc(app, dry_run=True)
    if dry_run or not plan["garbage"]:
        emit(plan, json, _render_gc)
        return
    if not yes:
        _render_gc(plan)
    _confirm(f"remove these {plan['objects']} objects ({_size(plan['bytes'])})?", yes)
    emit(client.gc(app), json, _render_gc)
