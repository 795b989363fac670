"""Hyperparameter tuning runs and Ray jobs (deeptrain extensions, no Clarifai method), scope ``train``.

``POST /models/{model_id}/tune_runs`` takes the search as ``deeptrain tune`` does: ``space`` (``{"lrate":
"loguniform:1e-4:1e-1"}`` or ``["lrate=loguniform:1e-4:1e-1", …]``), ``trials``, ``max_concurrent``,
``metric``, ``scheduler`` (asha|fifo), ``grace_period``, ``reduction_factor``, ``params`` (fixed for every
trial), ``workers``, ``dataset_version_id``. It is checked here (space, metric, scheduler, the data: a
snapshot when no dataset version is named), then runs as a Ray job (``deeptrain tune … --json``) on the
server's cluster; the answer is the job at once (its tuning run appears in ``GET …/tune_runs``).
``GET /jobs/{job_id}``: a Ray job this app started, with its versions' status and the end of its log.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.params import parse_cli_params
from deeptrain.weights.resolve import check_tenant_init_from
from deeptrain.services import tune_runs
from serve.v2.access import Access
from serve.v2.bodies_models import MAX_PARAMS, hyperparams
from serve.v2.envelope import ok
from serve.v2.paging import Page, page_query
from serve.v2.render_models import render_model, render_tune_run
from serve.v2.routing import Lenient, read_body, route

router = APIRouter(tags=["tuning runs and jobs"])
TRAIN_PACKAGE = "local"
LOG_TAIL_CHARS = 4000


class PostTuneRunBody(Lenient):
    space: dict[str, str] | list[str] = Field(..., min_length=1, max_length=MAX_PARAMS)
    trials: int = Field(..., ge=1, le=10_000)
    max_concurrent: int | None = Field(None, ge=1, le=1000)
    metric: str | None = Field(None, max_length=64)
    scheduler: str | None = Field(None, max_length=16)
    grace_period: int | None = Field(None, ge=1)
    reduction_factor: int = Field(2, ge=2, le=100)
    params: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PARAMS)
    workers: int = Field(1, ge=1, le=1000)
    dataset_version_id: str | None = Field(None, max_length=128)

    def space_items(self) -> list[str]:
        if isinstance(self.space, dict):
            return [f"{name}={spec}" for name, spec in self.space.items()]
        return list(self.space)


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def _tune_argv(body: PostTuneRunBody, app_id: str, model_id: str, param_items: list[str],
               dataset_version: str) -> list[str]:
    argv = ["tune", app_id, model_id, "--trials", str(body.trials), "--workers", str(body.workers),
            "--reduction-factor", str(body.reduction_factor), "--dataset-version", dataset_version]
    for item in body.space_items():
        argv += ["--space", item]
    for item in param_items:
        argv += ["--param", item]
    for flag, value in (("--max-concurrent", body.max_concurrent), ("--metric", body.metric),
                        ("--scheduler", body.scheduler), ("--grace-period", body.grace_period)):
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, "--json"]


def _start_tuning(access: Access, model_id: str, body: PostTuneRunBody) -> dict[str, Any]:
    """Check the search as ``deeptrain submit tune`` does, then submit it as a Ray job."""
    from deeptrain.jobs import submit
    from deeptrain.jobs import tune as tune_job
    from deeptrain.tune_space import parse_space

    ctx, app_id = access.ctx, access.app_id
    domains = parse_space(body.space_items())
    fixed = hyperparams(body.params)
    if "init_from" in domains:
        raise InvalidInput("init_from cannot be searched over the HTTP API: fix it in params")
    check_tenant_init_from(ctx, app_id, fixed.get("init_from"))
    param_items = [f"{k}={_cli_value(v)}" for k, v in fixed.items()]
    params = parse_cli_params(param_items)  # what the job's command line will carry
    address = access.services.job_address()
    env = submit.serving_env()
    submit.check_submission(ctx, TRAIN_PACKAGE, env, address)
    _, _, plan = tune_job.check_run(ctx, app_id, model_id, domains, trials=body.trials, metric=body.metric,
                                    scheduler=body.scheduler, params=params, num_workers=body.workers,
                                    dataset_version_id=body.dataset_version_id, grace_period=body.grace_period,
                                    reduction_factor=body.reduction_factor)
    argv = _tune_argv(body, app_id, model_id, param_items, plan.dataset_version_id)
    metadata = {submit.META["command"]: "tune", submit.META["app"]: app_id, submit.META["model"]: model_id}
    return submit.submit_cli(ctx, argv, metadata=metadata, address=address, package=TRAIN_PACKAGE, env=env)


@route(router, "POST", "/models/{model_id}/tune_runs", scope="train", body=PostTuneRunBody,
       summary="start a hyperparameter search as a Ray job (extension); answers with the job at once")
async def post_tune_run(access: Access, model_id: str, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostTuneRunBody)
    return ok(job=await asyncio.to_thread(_start_tuning, access, model_id, body))


@route(router, "GET", "/models/{model_id}/tune_runs", scope="train", summary="the model's tuning runs (extension)")
async def list_tune_runs(access: Access, model_id: str, page: Page = Depends(page_query)) -> dict[str, Any]:
    runs = await asyncio.to_thread(tune_runs.list_runs, access.ctx, access.app_id, model_id)
    return ok(tune_runs=[render_tune_run(r) for r in page.of(runs)])


@route(router, "GET", "/models/{model_id}/tune_runs/{run_id}", scope="train",
       summary="a tuning run with every trial and the best one (extension)")
async def get_tune_run(access: Access, model_id: str, run_id: str) -> dict[str, Any]:
    run = await asyncio.to_thread(tune_runs.run_summary, access.ctx, access.app_id, model_id, run_id)
    return ok(tune_run=render_tune_run(run))


@route(router, "POST", "/models/{model_id}/tune_runs/{run_id}/promote", scope="train",
       summary="make the run's best trial the model's default version (extension)")
async def promote_tune_run(access: Access, model_id: str, run_id: str) -> dict[str, Any]:
    model = await asyncio.to_thread(tune_runs.promote_best, access.ctx, access.app_id, model_id, run_id)
    access.services.caches.forget()  # this replica serves the promoted version at once (others within the TTL)
    return ok(model=render_model(model))


def _job(access: Access, job_id: str, redact) -> dict[str, Any]:
    from deeptrain.jobs import submit

    address = access.services.job_address()
    job = submit.get_job(access.ctx, job_id, address)
    if job.get("app") != access.app_id:  # not one of this app's: as if it did not exist
        raise NotFound(f"Ray job {job_id!r} is not a job of app {access.app_id!r}")
    logs = "".join(submit.job_logs(access.ctx, job_id, address))
    return {**job, "message": redact(job["message"] or ""), "log_tail": redact(logs[-LOG_TAIL_CHARS:])}


@route(router, "GET", "/jobs/{job_id}", scope="train",
       summary="a Ray job this app started (training, tuning): status, its versions, the end of its log (extension)")
async def get_job(access: Access, job_id: str, request: Request) -> dict[str, Any]:
    if len(job_id) > 128:
        raise InvalidInput("job id too long")
    return ok(job=await asyncio.to_thread(_job, access, job_id, request.app.state.redact))
