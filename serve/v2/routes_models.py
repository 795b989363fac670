"""Models and model versions (Clarifai's PostModels, ListModels, GetModel, DeleteModel, ListModelTypes,
GetModelType, PostModelVersions, ListModelVersions, GetModelVersion, DeleteModelVersion,
GetModelVersionMetrics, PostModelVersionMetrics; and the extensions ``POST …/versions/{id}/cancel`` and
``POST …/versions/{id}/resume``), scope ``train``.

Model types: ``visual-classifier`` (deeptrain's classification), ``visual-detector`` (detection),
``visual-embedder`` (embedding). A model's template comes from ``model.metadata.template``, else
``model.model_version.train_info.params.template``, else the type's default (``DEFAULT_TEMPLATES``:
classification ResNext, detection InceptionV2, embedding ResNext); its stored hyperparameters from
``model.metadata.params``; the concepts it trains on from ``output_info.data.concepts`` (none: all).

PostModelVersions plans and records a queued version here (so bad params are refused with 21202 before
anything exists), then submits its training as a Ray Job to the cluster the server runs on
(``deeptrain.jobs.submit``; $RAY_API_SERVER_ADDRESS when set) and answers at once: ``model.model_version``
with status 21103 and ``metadata.job`` the Ray job. Follow it with GetModelVersion (status, percent_completed)
or ``GET /jobs/{job_id}``. PostModelVersionMetrics answers the stored test evaluation (training evaluates
every version on its dataset version's test split).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from deeptrain.errors import InvalidInput, NotTrained
from deeptrain.params import resolve_params
from deeptrain.weights.resolve import check_tenant_init_from
from deeptrain.services import models as model_service
from deeptrain.templates import TemplateError, get_template
from serve.v2.access import Access
from serve.v2.bodies_models import ModelIn, PostModelsBody, PostModelVersionsBody, TrainOptions, hyperparams
from serve.v2.envelope import ok
from serve.v2.paging import Page, page_query
from serve.v2.render_models import TASK_OF_TYPE, render_metrics, render_model, render_model_type, render_version
from serve.v2.routing import read_body, route

router = APIRouter(tags=["models and model versions"])
DEFAULT_TEMPLATES = {"classification": "ResNext", "detection": "InceptionV2", "embedding": "ResNext"}
TRAIN_PACKAGE = "local"  # the server ships its own deeptrain/ and serve/ to the job (never a requirement of a caller's)


def _thread(fn, *args: Any, **kwargs: Any):
    return asyncio.to_thread(fn, *args, **kwargs)


def _redact(request: Request):
    return request.app.state.redact


def task_of(type_id: str) -> str:
    if type_id not in TASK_OF_TYPE:
        raise InvalidInput(f"unknown model_type_id {type_id!r}; deeptrain trains {', '.join(TASK_OF_TYPE)}")
    return TASK_OF_TYPE[type_id]


def shown_version(access: Access, model_id: str) -> dict[str, Any] | None:
    """The model's default version, else its newest trained one, else its newest (queued, training, …)."""
    try:
        return model_service.get_version(access.ctx, access.app_id, model_id)
    except NotTrained:
        versions = model_service.list_versions(access.ctx, access.app_id, model_id)
        return versions[-1] if versions else None


def _create(access: Access, model: ModelIn) -> dict[str, Any]:
    task = task_of(model.model_type_id)
    version_params = model.model_version.train_info.params if model.model_version else {}
    template = model.metadata.template or version_params.get("template") or DEFAULT_TEMPLATES[task]
    if not isinstance(template, str):
        raise InvalidInput(f"invalid template={template!r}: expected a string")
    concepts = [c.ref for c in model.output_info.data.concepts] or None
    params = hyperparams(model.metadata.params)
    check_tenant_init_from(access.ctx, access.app_id, params.get("init_from"))
    return model_service.create_model(access.ctx, access.app_id, model.id, task, template, params, concepts)


# --- models ----------------------------------------------------------------------------------------------

@route(router, "POST", "/models", scope="train", body=PostModelsBody,
       summary="create a model (visual-classifier, visual-detector or visual-embedder)")
async def post_models(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostModelsBody)
    wanted = ([body.model] if body.model else []) + body.models
    if not wanted:
        raise InvalidInput("the body names no model: send model{id, model_type_id} (or models[])")
    if len({m.id for m in wanted}) != len(wanted):
        raise InvalidInput("model ids repeat in the request")
    made = [render_model(await _thread(_create, access, m)) for m in wanted]
    return ok(model=made[0], models=made)


@route(router, "GET", "/models", scope="train", summary="the app's models, each with its shown version")
async def list_models(access: Access, request: Request, page: Page = Depends(page_query),
                      model_type_id: str | None = Query(None, max_length=64),
                      trained_only: bool = Query(False)) -> dict[str, Any]:
    def load() -> list[dict[str, Any]]:
        models = model_service.list_models(access.ctx, access.app_id)
        if model_type_id:
            models = [m for m in models if m["task"] == task_of(model_type_id)]
        shown = [(m, shown_version(access, m["id"])) for m in models]
        if trained_only:
            shown = [(m, v) for m, v in shown if v is not None and v["status"] == "trained"]
        return [render_model(m, v, _redact(request)) for m, v in page.of(shown)]

    return ok(models=await _thread(load))


@route(router, "GET", "/models/types", scope="train", summary="the model types deeptrain trains")
async def list_model_types(access: Access) -> dict[str, Any]:
    return ok(model_types=[render_model_type(t) for t in TASK_OF_TYPE])


@route(router, "GET", "/models/types/{model_type_id}", scope="train", summary="one model type")
async def get_model_type(access: Access, model_type_id: str) -> dict[str, Any]:
    task_of(model_type_id)
    return ok(model_type=render_model_type(model_type_id))


@route(router, "GET", "/models/{model_id}", scope="train",
       summary="a model with its default version (else its newest trained one, else its newest)")
async def get_model(access: Access, model_id: str, request: Request) -> dict[str, Any]:
    def load() -> dict[str, Any]:
        return render_model(model_service.get_model(access.ctx, access.app_id, model_id),
                            shown_version(access, model_id), _redact(request))

    return ok(model=await _thread(load))


@route(router, "DELETE", "/models/{model_id}", scope="train",
       summary="delete a model, its versions and stored objects (force=true: its queued or training versions too)")
async def delete_model(access: Access, model_id: str, force: bool = Query(False)) -> dict[str, Any]:
    await _thread(model_service.delete_model, access.ctx, access.app_id, model_id, force)
    access.services.caches.forget()  # this replica stops serving it at once (others within serve_cache_ttl_s)
    return ok()


# --- versions --------------------------------------------------------------------------------------------

def _submit(access: Access, model_id: str, options: TrainOptions) -> dict[str, Any]:
    """Refuse bad params (21202) before anything is recorded, then queue the version and submit its Ray job."""
    from deeptrain.jobs import submit
    from deeptrain.jobs.plan import WorkerResources

    model = model_service.get_model(access.ctx, access.app_id, model_id)
    if options.template is not None and options.template != model["template"]:
        raise InvalidInput(f"model {model_id!r} is a {model['template']} model; a version cannot change its "
                           f"template to {options.template!r} (create another model)")
    try:
        template = get_template(model["task"], model["template"])
    except TemplateError as exc:
        raise InvalidInput(str(exc)) from None
    resolve_params(template, model["params"], {**options.overrides, "num_workers": options.workers})
    check_tenant_init_from(access.ctx, access.app_id, options.overrides.get("init_from"))
    resources = WorkerResources(cpus=options.cpus, gpus=options.gpus, placement=options.placement)
    return submit.submit_training(access.ctx, access.app_id, model_id, options.overrides, workers=options.workers,
                                  dataset_version_id=options.dataset_version_id, resources=resources,
                                  address=access.services.job_address(), package=TRAIN_PACKAGE,
                                  env=submit.serving_env())


@route(router, "POST", "/models/{model_id}/versions", scope="train", body=PostModelVersionsBody,
       summary="train a new version: queued now, trained by a Ray job on the server's cluster (answers at once)")
async def post_model_versions(access: Access, model_id: str, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostModelVersionsBody)
    wanted = body.model_versions[0] if body.model_versions else None
    train_info = wanted.train_info if wanted else None
    options = TrainOptions.from_struct(train_info.params if train_info else {},
                                       train_info.dataset if train_info else None)
    submitted = await _thread(_submit, access, model_id, options)
    model = await _thread(model_service.get_model, access.ctx, access.app_id, model_id)
    return ok(model=render_model(model, submitted["version"], _redact(request), {"job": submitted["job"]}))


@route(router, "GET", "/models/{model_id}/versions", scope="train", summary="the model's versions, oldest first")
async def list_model_versions(access: Access, model_id: str, request: Request, page: Page = Depends(page_query),
                              trained_only: bool = Query(False)) -> dict[str, Any]:
    versions = await _thread(model_service.list_versions, access.ctx, access.app_id, model_id)
    if trained_only:
        versions = [v for v in versions if v["status"] == "trained"]
    return ok(model_versions=[render_version(v, _redact(request)) for v in page.of(versions)])


@route(router, "GET", "/models/{model_id}/versions/{version_id}", scope="train",
       summary="a version: training status (code, percent_completed), stored test metrics, params")
async def get_model_version(access: Access, model_id: str, version_id: str, request: Request) -> dict[str, Any]:
    version = await _thread(model_service.get_version, access.ctx, access.app_id, model_id, version_id)
    return ok(model_version=render_version(version, _redact(request)))


@route(router, "DELETE", "/models/{model_id}/versions/{version_id}", scope="train",
       summary="delete a version and its stored objects (force=true: even while queued or training)")
async def delete_model_version(access: Access, model_id: str, version_id: str,
                               force: bool = Query(False)) -> dict[str, Any]:
    await _thread(model_service.delete_version, access.ctx, access.app_id, model_id, version_id, force)
    access.services.caches.forget()
    return ok()


@route(router, "POST", "/models/{model_id}/versions/{version_id}/cancel", scope="train",
       summary="cancel a version's training (extension): a queued one at once, a training one at its next step")
async def cancel_model_version(access: Access, model_id: str, version_id: str, request: Request) -> dict[str, Any]:
    version = await _thread(model_service.request_cancel, access.ctx, access.app_id, model_id, version_id)
    return ok(model_version=render_version(version, _redact(request)))


def _resume(access: Access, model_id: str, version_id: str) -> dict[str, Any]:
    """Submit an unfinished version again (it continues from its last checkpoint). A trained one is refused
    before the cluster is asked for (the service's own check, made first so it answers without a cluster)."""
    from deeptrain.jobs import submit

    version = model_service.get_version(access.ctx, access.app_id, model_id, version_id)
    if version["status"] == "trained":
        raise InvalidInput(f"version {version_id!r} is already trained")
    return submit.submit_training(access.ctx, access.app_id, model_id, resume=version_id,
                                  address=access.services.job_address(), package=TRAIN_PACKAGE,
                                  env=submit.serving_env())


@route(router, "POST", "/models/{model_id}/versions/{version_id}/resume", scope="train",
       summary="train a failed, cancelled or stopped version again from its last checkpoint (extension)")
async def resume_model_version(access: Access, model_id: str, version_id: str, request: Request) -> dict[str, Any]:
    submitted = await _thread(_resume, access, model_id, version_id)
    model = await _thread(model_service.get_model, access.ctx, access.app_id, model_id)
    return ok(model=render_model(model, submitted["version"], _redact(request), {"job": submitted["job"]}))


async def _metrics(access: Access, model_id: str, version_id: str, request: Request) -> dict[str, Any]:
    version = await _thread(model_service.get_version, access.ctx, access.app_id, model_id, version_id)
    if version["status"] != "trained":
        raise NotTrained(f"version {version_id!r} of model {model_id!r} is {version['status']}: it has no "
                         "evaluation until it is trained", version["status"])
    return ok(model_version={**render_version(version, _redact(request)), "metrics": render_metrics(version)})


@route(router, "GET", "/models/{model_id}/versions/{version_id}/metrics", scope="train",
       summary="a trained version's stored test evaluation (metrics.summary, all of it in metadata)")
async def get_model_version_metrics(access: Access, model_id: str, version_id: str,
                                    request: Request) -> dict[str, Any]:
    return await _metrics(access, model_id, version_id, request)


@route(router, "POST", "/models/{model_id}/versions/{version_id}/metrics", scope="train",
       summary="evaluate a trained version: its stored test evaluation (training evaluates every version)")
async def post_model_version_metrics(access: Access, model_id: str, version_id: str,
                                     request: Request) -> dict[str, Any]:
    return await _metrics(access, model_id, version_id, request)
