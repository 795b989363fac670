"""Apps: the namespace that owns inputs, concepts, datasets and models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from deeptrain.errors import Conflict
from deeptrain.ids import check_id
from deeptrain.services.context import Context, app_prefix, require_app
from deeptrain.store import App, Concept, DatasetVersion, Input


def _app_dict(app: App, **counts: int) -> dict[str, Any]:
    return {"id": app.id, "name": app.name, "created_at": app.created_at.isoformat(), **counts}


def create_app(ctx: Context, app_id: str, name: str | None = None) -> dict[str, Any]:
    check_id(app_id, "app")
    with ctx.store.session() as s:
        if s.get(App, app_id) is not None:
            raise Conflict(f"app {app_id!r} already exists")
        app = App(id=app_id, name=name or app_id)
        s.add(app)
        s.flush()
        return _app_dict(app)


def list_apps(ctx: Context) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        counts = dict(s.execute(select(Input.app_id, func.count()).group_by(Input.app_id)).all())
        return [_app_dict(a, num_inputs=counts.get(a.id, 0)) for a in s.scalars(select(App).order_by(App.id))]


def get_app(ctx: Context, app_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        app = require_app(s, app_id)
        count = lambda model: s.scalar(select(func.count()).select_from(model).where(model.app_id == app_id))  # noqa: E731
        return _app_dict(
            app, num_inputs=count(Input), num_concepts=count(Concept), num_dataset_versions=count(DatasetVersion)
        )


def delete_app(ctx: Context, app_id: str) -> dict[str, Any]:
    """Delete an app, its metadata (cascade) and every object under its storage prefix."""
    with ctx.store.session() as s:
        app = require_app(s, app_id)
        info = _app_dict(app)
        s.delete(app)
    ctx.storage.delete_prefix(app_prefix(app_id))
    return {**info, "deleted": True}
