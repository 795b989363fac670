"""Models and model versions: definitions, validation before training, status and progress.

Training itself runs in ``deeptrain.jobs``; this module owns the records it updates.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import func, select, update

from deeptrain.errors import Conflict, InvalidInput, NotFound, NotTrained
from deeptrain.ids import check_id
from deeptrain.params import resolve_params
from deeptrain.services import usage
from deeptrain.services.context import (Context, app_prefix, require_app, search_pointer_key, search_prefix,
                                        search_version_prefix)
from deeptrain.store import Concept, Model, ModelVersion
from deeptrain.templates import TemplateError, get_template

STATUSES = ("queued", "training", "trained", "failed", "cancelled")
FINAL = ("trained", "failed", "cancelled")
CHECKPOINT_DIR = "ray"  # Ray Train's run folder (checkpoints, controller state) under a version's prefix


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
        raise NotFound(f"model {model_id!r} does not exist in app {app_id!r}", "model")
    return model


def get_model(ctx: Context, app_id: str, model_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        return model_dict(require_model(s, app_id, model_id))


def list_models(ctx: Context, app_id: str) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        return [model_dict(m) for m in s.scalars(select(Model).where(Model.app_id == app_id).order_by(Model.id))]


def _refuse_busy(s, app_id: str, model_id: str, version_id: str | None, force: bool) -> None:
    """Refuse to delete versions recorded as queued or training unless ``force`` (a run whose driver died
    stays ``training`` for good; with ``force`` a run still alive fails when it next records)."""
    q = select(ModelVersion.id).where(ModelVersion.app_id == app_id, ModelVersion.model_id == model_id,
                                      ModelVersion.status.in_(("queued", "training")))
    busy = s.scalars(q if version_id is None else q.where(ModelVersion.id == version_id)).all()
    if busy and not force:
        raise Conflict(f"model {model_id!r} has versions queued or training: {', '.join(busy)}; cancel them "
                       f"(`deeptrain models cancel {app_id} {model_id} VERSION`) or pass --force when their "
                       "training is dead")


def _search_index_conflict(ctx: Context, app_id: str, model_id: str, version_id: str | None, force: bool) -> bool:
    """Whether the app's search index is built with this model (version); refused unless ``force``."""
    try:
        pointer = json.loads(ctx.storage.get_bytes(search_pointer_key(app_id)))
    except NotFound:
        return False
    hit = pointer.get("model_id") == model_id and version_id in (None, pointer.get("version_id"))
    if hit and not force:
        what = f"version {version_id!r} of model {model_id!r}" if version_id else f"model {model_id!r}"
        raise Conflict(f"the search index of app {app_id!r} is built with {what}; build it with another embedding "
                       "version first, or pass --force to delete the search index too")
    return hit


def _delete_objects(ctx: Context, prefixes: list[str]) -> dict[str, int]:
    """Delete every object under ``prefixes``; returns how many objects and bytes went."""
    objects = size = 0
    for prefix in prefixes:
        infos = list(ctx.storage.list_info(prefix))
        objects, size = objects + len(infos), size + sum(i.size for i in infos)
        ctx.storage.delete_prefix(prefix)
    return {"objects_deleted": objects, "bytes_deleted": size}


def delete_model(ctx: Context, app_id: str, model_id: str, force: bool = False) -> dict[str, Any]:
    """Delete a model with its versions, tuning runs and stored objects. Refused while a workflow runs it or a
    version is queued or training (``force``: delete those too, and the app's search index if built with it)."""
    with ctx.store.session() as s:
        model = require_model(s, app_id, model_id)
        _refuse_busy(s, app_id, model_id, None, force)
        used_by = usage.workflows_using_model(s, app_id, model_id)
        if used_by:
            raise Conflict(f"model {model_id!r} is a step of workflow(s) {', '.join(used_by)}; delete those first")
        drop_index = _search_index_conflict(ctx, app_id, model_id, None, force)
        versions = s.scalar(select(func.count()).where(ModelVersion.app_id == app_id,
                                                       ModelVersion.model_id == model_id))
        s.delete(model)
    if drop_index:
        ctx.storage.delete(search_pointer_key(app_id))
    gone = _delete_objects(ctx, [f"{app_prefix(app_id)}/models/{model_id}", f"{search_prefix(app_id)}/{model_id}"])
    return {"id": model_id, "deleted": True, "versions_deleted": versions, **gone}


def delete_version(ctx: Context, app_id: str, model_id: str, version_id: str, force: bool = False) -> dict[str, Any]:
    """Delete a model version and its stored objects (weights, checkpoints, report). Refused while a workflow
    pins it, while it is a tuning run's trial, and while it is queued or training (``force``: then too, and the
    app's search index if built with it). The model's default version, if it was this one, is unset."""
    with ctx.store.session() as s:
        v = _require_version(s, app_id, model_id, version_id)
        _refuse_busy(s, app_id, model_id, version_id, force)
        pinned = usage.workflows_pinning_version(s, app_id, model_id, version_id)
        if pinned:
            raise Conflict(f"version {version_id!r} is pinned by workflow(s) {', '.join(pinned)}; delete those first")
        if v.tune_run is not None:
            raise Conflict(f"version {version_id!r} is a trial of tuning run {v.tune_run!r}, whose record needs it; "
                           f"delete the model to remove its tuning runs")
        drop_index = _search_index_conflict(ctx, app_id, model_id, version_id, force)
        model = s.get(Model, (app_id, model_id))
        was_default = model is not None and model.default_version == version_id
        if was_default:
            model.default_version = None  # type: ignore[union-attr]
        prefix = v.artifact_prefix
        s.delete(v)
    if drop_index:
        ctx.storage.delete(search_pointer_key(app_id))
    gone = _delete_objects(ctx, [prefix, search_version_prefix(app_id, model_id, version_id)])
    return {"id": version_id, "model_id": model_id, "deleted": True, "default_unset": was_default, **gone}


def prune_checkpoints(ctx: Context, prefix: str) -> None:
    """A trained version's Ray Train checkpoints go unless ``Settings.keep_checkpoints`` keeps some (Ray Train's
    ``num_to_keep`` already dropped the older ones): serving, export, evaluation and search read the weights,
    and a trained version cannot be resumed."""
    if ctx.settings.keep_checkpoints == 0:
        ctx.storage.delete_prefix(f"{prefix}/{CHECKPOINT_DIR}")


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
        raise NotFound(f"version {version_id!r} of model {model_id!r} does not exist in app {app_id!r}", "model_version")
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
                raise NotTrained(f"model {model_id!r} has no trained version yet", "untrained")
        return version_dict(_require_version(s, app_id, model_id, version_id))


def get_trained_version(ctx: Context, app_id: str, model_id: str, version_id: str | None = None) -> dict[str, Any]:
    """``get_version``, refusing a version that is not trained (what predictions need)."""
    version = get_version(ctx, app_id, model_id, version_id)
    if version["status"] != "trained":
        raise NotTrained(f"version {version['id']!r} of model {model_id!r} is {version['status']}, not trained",
                         version["status"])
    return version


def resumable_version(ctx: Context, app_id: str, model_id: str, version_id: str) -> dict[str, Any]:
    """The version ``resume`` would run (queued, or interrupted: training, failed, cancelled); refuses a
    trained one, which has nothing left to run."""
    version = get_version(ctx, app_id, model_id, version_id)
    if version["status"] == "trained":
        raise InvalidInput(f"version {version_id!r} of model {model_id!r} is already trained: nothing to resume; "
                           f"train a new version with `deeptrain models train {app_id} {model_id}`")
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
