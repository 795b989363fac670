"""Garbage collection: remove stored objects that no metadata row refers to.

What storage holds, and the row that keeps it (anything else is left alone)::

    apps/<app>/inputs/<xx>/<sha256>.<ext>            an input's bytes      inputs.storage_key
    apps/<app>/datasets/<id>/...                     a dataset version     dataset_versions.storage_prefix
    apps/<app>/models/<model>/<version>/...          a model version       model_versions.artifact_prefix
    apps/<app>/models/<model>/tune/<run>/...         a tuning run          tune_runs.artifact_prefix
    apps/<app>/search/<model>/<version>/...          a search index build  the model version
    apps/<app>/...                                   the app               apps.id
    .tmp/...                                         a write in progress   none (removed when old)

Garbage comes from crashes between a write and its row (an import killed after storing bytes, a
snapshot killed before its row, a delete whose storage part failed) and from old releases. An
object younger than ``grace_s`` (``Settings.gc_grace_s``) is never removed: an import or a snapshot
in progress writes its objects before the rows that refer to them. What a row refers to is read
again just before removing, so a row committed meanwhile keeps its objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from deeptrain.services.context import Context, app_prefix, require_app, search_version_prefix
from deeptrain.storage import TMP_PREFIX, ObjectInfo
from deeptrain.store import App, DatasetVersion, Input, ModelVersion, TuneRun


@dataclass
class Unit:
    """What goes or stays as one: an object, or every object under a prefix."""

    key: str
    kind: str
    prefix: bool
    objects: int = 0
    bytes: int = 0
    newest: float = 0.0

    def add(self, info: ObjectInfo) -> None:
        self.objects += 1
        self.bytes += info.size
        self.newest = max(self.newest, info.mtime or time.time())

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "objects": self.objects, "bytes": self.bytes}


def unit_of(key: str, apps: set[str]) -> tuple[str, str, bool] | None:
    """(unit key, kind, is a prefix) of a stored object, or None for what gc does not know (left alone)."""
    parts = key.split("/")
    if parts[0] == TMP_PREFIX:
        return key, "temporary", False
    if parts[0] != "apps" or len(parts) < 3:
        return None
    if parts[1] not in apps:
        return "/".join(parts[:2]), "app", True
    kind, n = parts[2], len(parts)
    if kind == "inputs" and n == 5:
        return key, "input", False
    if kind == "datasets" and n >= 5:
        return "/".join(parts[:4]), "dataset", True
    if kind == "models" and n >= 7 and parts[4] == "tune":
        return "/".join(parts[:6]), "tune_run", True
    if kind == "models" and n >= 6 and parts[4] != "tune":
        return "/".join(parts[:5]), "model_version", True
    if kind == "search" and n >= 6:
        return "/".join(parts[:5]), "search_index", True
    return None


def referenced(ctx: Context, app_id: str) -> set[str]:
    """Every key and prefix the app's rows refer to."""
    with ctx.store.session() as s:
        refs = set(s.scalars(select(Input.storage_key).where(Input.app_id == app_id)))
        refs |= set(s.scalars(select(DatasetVersion.storage_prefix).where(DatasetVersion.app_id == app_id)))
        versions = s.execute(select(ModelVersion.model_id, ModelVersion.id, ModelVersion.artifact_prefix)
                             .where(ModelVersion.app_id == app_id)).all()
        refs |= set(s.scalars(select(TuneRun.artifact_prefix).where(TuneRun.app_id == app_id)))
    refs |= {prefix for _, _, prefix in versions}
    refs |= {search_version_prefix(app_id, m, v) for m, v, _ in versions}
    return refs


def _units(ctx: Context, app_id: str | None) -> dict[str, Unit]:
    """The units of what storage holds, for one app or everything."""
    with ctx.store.session() as s:
        if app_id is not None:
            require_app(s, app_id)
        apps = set(s.scalars(select(App.id)))
    listed = [app_prefix(app_id)] if app_id is not None else ["apps", TMP_PREFIX]
    units: dict[str, Unit] = {}
    for prefix in listed:
        for info in ctx.storage.list_info(prefix):
            found = unit_of(info.key, apps)
            if found is not None:
                units.setdefault(found[0], Unit(*found)).add(info)
    return units


def _is_garbage(unit: Unit, refs: dict[str, set[str]]) -> bool:
    """``refs``: what each existing app's rows refer to (an app missing from it has no row)."""
    if unit.kind == "temporary":
        return True
    app = unit.key.split("/")[1]
    return app not in refs if unit.kind == "app" else unit.key not in refs.get(app, set())


def _all_refs(ctx: Context, app_id: str | None) -> dict[str, set[str]]:
    with ctx.store.session() as s:
        apps = [app_id] if app_id is not None else list(s.scalars(select(App.id)))
    return {a: referenced(ctx, a) for a in apps}


def collect_garbage(ctx: Context, app_id: str | None = None, dry_run: bool = False,
                    grace_s: float | None = None) -> dict[str, Any]:
    """Remove (``dry_run``: list) what no row refers to, for one app or for all (then ``.tmp`` leftovers too)."""
    grace = ctx.settings.gc_grace_s if grace_s is None else grace_s
    units = _units(ctx, app_id)
    refs = _all_refs(ctx, app_id)
    garbage = [u for u in units.values() if _is_garbage(u, refs)]
    cutoff = time.time() - grace
    old = [u for u in garbage if u.newest <= cutoff]
    if not dry_run:
        fresh = _all_refs(ctx, app_id)  # rows committed since the first look keep their objects
        old = [u for u in old if _is_garbage(u, fresh)]
        for unit in old:
            (ctx.storage.delete_prefix if unit.prefix else ctx.storage.delete)(unit.key)
    return {"app_id": app_id, "dry_run": dry_run, "grace_s": grace, "garbage": [u.as_dict() for u in old],
            "objects": sum(u.objects for u in old), "bytes": sum(u.bytes for u in old),
            "skipped_recent": len(garbage) - len([u for u in garbage if u.newest <= cutoff])}
