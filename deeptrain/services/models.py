"""Models and model versions: definitions, validation before training, status and progress.

Training itself runs in ``deeptrain.jobs``; this module owns the records it updates.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import select, update

from deeptrain.errors import Conflict, InvalidInput, NotFound
from deeptrain.ids import check_id
from deeptrain.params import resolve_params
from deeptrain.services import usage
from deeptrain.services.context import Context, app_prefix, require_app
from deeptrain.store import Concept, Model, ModelVersion
from deeptrain.templates import TemplateError, get_template

STATUSES = ("queued", "training", "trained", "failed", "cancelled")
FINAL = ("trained", "failed", "cancelled")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def model_dict(m: Model) -> dict[str, Any]:
    return {"id": m.id, "app_id": m.app_id, "task": m.task, "template": m.template, "params": m.params,
            "concepts": m.concepts, "default_version": m.default_version, "created_at": m.created_at.isoformat()}


def version_dict(v: ModelVersion) -> dict[str, Any]:
    return {
        "id": v.id, "app_id": v.app_id, "model_id": v.model_id, "status": v.status, "params": v.params,
        "dataset_version_id": v.dataset_version_id, "concepts": v.concepts, "metrics": v.metrics,
        "progress": v.progress, "artifacts": v.artifact_prefix, "error": v.error, "job_id": v.job_id,
        "tune_run": v.tune_run, "created_at": v.created_at.isoformat(),
        "started_at": v.started_at.isoformat() if v.started_at else None,
        "finished_at": v.finished_at.isoformat() if v.finished_at else None,
    }


def create_model(ctx: Context, app_id: str, model_id: str, task: str, template: str,
                 params: dict[str, Any] | None = None, concepts: Iterable[str] | None = None) -> dict[str, Any]:
    """Define a model; its params are validated now so a typo fails here, not at training time."""
    check_id(model_id, "model")
    try:
        tmpl = get_template(task, template)
    except TemplateError as exc:
        raise InvalidInput(str(exc)) from None
    resolve_params(tmpl, dict(params or {}))  # a ParamError is an InvalidInput naming the parameter
    with ctx.store.session() as s:
        require_app(s, app_id)
        if s.get(Model, (app_id, model_id)) is not None:
            raise Conflict(f"model {model_id!r} already exists in app {app_id!r}")
        concept_list = list(concepts) if concepts is not None else None
        for cid in concept_list or []:
            if s.get(Concept, (app_id, cid)) is None:
                raise InvalidInput(f"concept {cid!r} does not exist in app {app_id!r}")
        model = Model(app_id=app_id, id=model_id, task=task, template=template, params=dict(params or {}),
                      concepts=concept_list)
        s.add(model)
        s.flush()
        return model_dict(model)


def require_model(s, app_id: str, model_id: str) -> Model:
    require_app(s, app_id)
    model = s.get(Model, (app_id, model_id))
    if model is None:
        raise NotFound(f"model {model_id!r} does not exist in app {app_id!r}")
    return model


def get_model(ctx: Context, app_id: str, model_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        return model_dict(require_model(s, app_id, model_id))


def list_models(ctx: Context, app_id: str) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        return [model_dict(m) for m in s.scalars(select(Model).where(Model.app_id == app_id).order_by(Model.id))]


def delete_model(ctx: Context, app_id: str, model_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        model = require_model(s, app_id, model_id)
        busy = s.scalars(select(ModelVersion.id).where(
            ModelVersion.app_id == app_id, ModelVersion.model_id == model_id,
            ModelVersion.status.in_(("queued", "training")))).all()
        if busy:
            raise Conflict(f"model {model_id!r} has versions still training: {', '.join(busy)}; cancel them first")
        used_by = usage.workflows_using_model(s, app_id, model_id)
        if used_by:
            raise Conflict(f"model {model_id!r} is a step of workflow(s) {', '.join(used_by)}; delete those first")
        s.delete(model)
    ctx.storage.delete_prefix(f"{app_prefix(app_id)}/models/{model_id}")
    return {"id": model_id, "deleted": True}


def new_version(ctx: Context, app_id: str, model_id: str, params: dict[str, Any], dataset_version_id: str,
                concepts: list[str], tune_run: str | None = None, job_id: str | None = None) -> dict[str, Any]:
    """Record a queued version (params already resolved and validated by the caller).

    ``job_id``: the Ray Job that runs it; by default ``Settings.job_id`` (``DEEPTRAIN_JOB_ID``), which ``deeptrain
    submit`` sets for its jobs, so versions created inside one (e.g. tuning trials) record it.
    """
    version_id = uuid.uuid4().hex[:12]
    with ctx.store.session() as s:
        require_model(s, app_id, model_id)
        v = ModelVersion(
            app_id=app_id, model_id=model_id, id=version_id, status="queued", params=params,
            dataset_version_id=dataset_version_id, concepts=concepts, cancel_requested=False, tune_run=tune_run,
            job_id=job_id or ctx.settings.job_id, artifact_prefix=f"{app_prefix(app_id)}/models/{model_id}/{version_id}",
        )
        s.add(v)
        s.flush()
        return version_dict(v)


def _require_version(s, app_id: str, model_id: str, version_id: str) -> ModelVersion:
    require_model(s, app_id, model_id)
    v = s.get(ModelVersion, (app_id, model_id, version_id))
    if v is None:
        raise NotFound(f"version {version_id!r} of model {model_id!r} does not exist in app {app_id!r}")
    return v


def get_version(ctx: Context, app_id: str, model_id: str, version_id: str | None = None) -> dict[str, Any]:
    """A version; without an id, the model's default version (else its newest trained one)."""
    with ctx.store.session() as s:
        model = require_model(s, app_id, model_id)
        if version_id is None:
            version_id = model.default_version or s.scalar(
                select(ModelVersion.id).where(ModelVersion.app_id == app_id, ModelVersion.model_id == model_id,
                                              ModelVersion.status == "trained")
                .order_by(ModelVersion.finished_at.desc()).limit(1))
            if version_id is None:
                raise NotFound(f"model {model_id!r} has no trained version yet")
        return version_dict(_require_version(s, app_id, model_id, version_id))


def get_trained_version(ctx: Context, app_id: str, model_id: str, version_id: str | None = None) -> dict[str, Any]:
    """``get_version``, refusing a version that is not trained (what predictions need)."""
    version = get_version(ctx, app_id, model_id, version_id)
    if version["status"] != "trained":
        raise Conflict(f"version {version['id']!r} of model {model_id!r} is {version['status']}, not trained")
    return version


def list_versions(ctx: Context, app_id: str, model_id: str) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        require_model(s, app_id, model_id)
        rows = s.scalars(select(ModelVersion).where(ModelVersion.app_id == app_id, ModelVersion.model_id == model_id)
                         .order_by(ModelVersion.created_at))
        return [version_dict(v) for v in rows]


def versions_of_job(ctx: Context, job_id: str) -> list[dict[str, Any]]:
    """The versions (of any app) that record this Ray job's id, oldest first."""
    with ctx.store.session() as s:
        rows = s.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id).order_by(ModelVersion.created_at))
        return [version_dict(v) for v in rows]


def update_version(ctx: Context, app_id: str, model_id: str, version_id: str, **fields: Any) -> dict[str, Any]:
    """Set fields of a version; a status change stamps started/finished times."""
    with ctx.store.session() as s:
        v = _require_version(s, app_id, model_id, version_id)
        status = fields.get("status")
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            if status == "training" and v.started_at is None:
                v.started_at = _now()
            if status in FINAL:
                v.finished_at = _now()
        for key, value in fields.items():
            setattr(v, key, value)
        return version_dict(v)


def record_failure(ctx: Context, app_id: str, model_id: str, version_id: str, error: str) -> bool:
    """Mark a version ``failed`` with why, unless it was recorded as finished meanwhile (a tuning
    driver records a trial Tune stopped; the stopped trial's own training then dies with its driver)."""
    with ctx.store.session() as s:
        result = s.execute(update(ModelVersion).where(
            ModelVersion.app_id == app_id, ModelVersion.model_id == model_id, ModelVersion.id == version_id,
            ModelVersion.status.in_(("queued", "training"))).values(status="failed", error=error, finished_at=_now()))
        return bool(result.rowcount)


def update_progress(ctx: Context, app_id: str, model_id: str, version_id: str, progress: dict[str, Any]) -> bool:
    """A running worker's live progress; ignored once the version is no longer training (a worker
    still winding down after its run was stopped and recorded must not overwrite the record)."""
    with ctx.store.session() as s:
        result = s.execute(update(ModelVersion).where(
            ModelVersion.app_id == app_id, ModelVersion.model_id == model_id, ModelVersion.id == version_id,
            ModelVersion.status == "training").values(progress=progress))
        return bool(result.rowcount)


def request_cancel(ctx: Context, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
    """Ask a running version to stop; a queued one is cancelled at once."""
    with ctx.store.session() as s:
        v = _require_version(s, app_id, model_id, version_id)
        if v.status in FINAL:
            raise Conflict(f"version {version_id!r} is already {v.status}")
        v.cancel_requested = True
        if v.status == "queued":
            v.status, v.finished_at = "cancelled", _now()
        return version_dict(v)


def cancel_requested(ctx: Context, app_id: str, model_id: str, version_id: str) -> bool:
    with ctx.store.session() as s:
        return bool(s.scalar(select(ModelVersion.cancel_requested).where(
            ModelVersion.app_id == app_id, ModelVersion.model_id == model_id, ModelVersion.id == version_id)))


def versions_using_concept(ctx: Context, app_id: str, concept_id: str) -> list[str]:
    with ctx.store.session() as s:
        return usage.versions_using_concept(s, app_id, concept_id)


def set_default_version(ctx: Context, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        v = _require_version(s, app_id, model_id, version_id)
        if v.status != "trained":
            raise Conflict(f"version {version_id!r} is {v.status}, only a trained version can be the default")
        model = s.get(Model, (app_id, model_id))
        model.default_version = version_id  # type: ignore[union-attr]
        return model_dict(model)  # type: ignore[arg-type]
