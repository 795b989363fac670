"""Tuning runs and their trials: the records a search over a model's hyperparameters updates.

The search itself runs in ``deeptrain.jobs.tune``. Each trial trains a real model version
(``ModelVersion.tune_run`` names the run); ``tune_trials`` maps Tune's trial id to that
version, so a resumed run continues the same version instead of starting a new one,
and counts how often each trial's training started.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from deeptrain.errors import Conflict, NotFound
from deeptrain.services import models as model_service
from deeptrain.services.context import Context, app_prefix
from deeptrain.services.models import require_model
from deeptrain.store import TuneRun, TuneTrial

STATUSES = ("running", "finished", "interrupted", "failed")


def run_dict(r: TuneRun) -> dict[str, Any]:
    return {
        "id": r.id, "app_id": r.app_id, "model_id": r.model_id, "status": r.status, "metric": r.metric,
        "mode": r.mode, "space": r.space, "params": r.params, "num_trials": r.num_trials,
        "max_concurrent": r.max_concurrent, "num_workers": r.num_workers, "scheduler": r.scheduler,
        "dataset_version_id": r.dataset_version_id, "best_version": r.best_version, "artifacts": r.artifact_prefix,
        "error": r.error, "created_at": r.created_at.isoformat(),
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
    }


def create_run(ctx: Context, app_id: str, model_id: str, **fields: Any) -> dict[str, Any]:
    """Record a new run (status ``running``); ``fields`` are the columns of ``TuneRun``."""
    run_id = uuid.uuid4().hex[:12]
    with ctx.store.session() as s:
        require_model(s, app_id, model_id)
        run = TuneRun(app_id=app_id, model_id=model_id, id=run_id, status="running",
                      artifact_prefix=f"{app_prefix(app_id)}/models/{model_id}/tune/{run_id}", **fields)
        s.add(run)
        s.flush()
        return run_dict(run)


def _require_run(s, app_id: str, model_id: str, run_id: str) -> TuneRun:
    require_model(s, app_id, model_id)
    run = s.get(TuneRun, (app_id, model_id, run_id))
    if run is None:
        raise NotFound(f"tuning run {run_id!r} of model {model_id!r} does not exist in app {app_id!r}", "tune_run")
    return run


def get_run(ctx: Context, app_id: str, model_id: str, run_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        return run_dict(_require_run(s, app_id, model_id, run_id))


def list_runs(ctx: Context, app_id: str, model_id: str) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        require_model(s, app_id, model_id)
        rows = s.scalars(select(TuneRun).where(TuneRun.app_id == app_id, TuneRun.model_id == model_id)
                         .order_by(TuneRun.created_at))
        return [run_dict(r) for r in rows]


def update_run(ctx: Context, app_id: str, model_id: str, run_id: str, **fields: Any) -> dict[str, Any]:
    """Set fields of a run; a final status stamps ``finished_at``."""
    with ctx.store.session() as s:
        run = _require_run(s, app_id, model_id, run_id)
        status = fields.get("status")
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown tuning run status {status!r}")
            run.finished_at = None if status == "running" else datetime.now(timezone.utc)
        for key, value in fields.items():
            setattr(run, key, value)
        return run_dict(run)


def trial_version(ctx: Context, app_id: str, model_id: str, run_id: str, trial_id: str) -> str | None:
    """The version a trial trains, or None when the trial has not started yet."""
    with ctx.store.session() as s:
        trial = s.get(TuneTrial, (app_id, model_id, run_id, trial_id))
        return trial.version_id if trial else None


def add_trial(ctx: Context, app_id: str, model_id: str, run_id: str, trial_id: str, version_id: str) -> None:
    with ctx.store.session() as s:
        s.add(TuneTrial(app_id=app_id, model_id=model_id, run_id=run_id, trial_id=trial_id, version_id=version_id,
                        runs=0))


def count_training_start(ctx: Context, app_id: str, model_id: str, run_id: str, trial_id: str) -> int:
    """A trial's training (new or resumed) is starting: count it; returns the new count."""
    with ctx.store.session() as s:
        trial = s.get(TuneTrial, (app_id, model_id, run_id, trial_id))
        if trial is None:
            raise NotFound(f"trial {trial_id!r} of tuning run {run_id!r} is not recorded")
        trial.runs += 1
        return trial.runs


def list_trials(ctx: Context, app_id: str, model_id: str, run_id: str) -> list[dict[str, Any]]:
    """``{"trial_id", "version_id", "runs"}`` per trial, by trial id (Tune numbers them in creation order)."""
    with ctx.store.session() as s:
        _require_run(s, app_id, model_id, run_id)
        rows = s.scalars(select(TuneTrial).where(TuneTrial.app_id == app_id, TuneTrial.model_id == model_id,
                                                 TuneTrial.run_id == run_id).order_by(TuneTrial.trial_id))
        return [{"trial_id": t.trial_id, "version_id": t.version_id, "runs": t.runs} for t in rows]


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _trial_row(run: dict[str, Any], trial: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
    """A trial: ``metric``/``metrics`` are its last validation evaluation (what Tune compared and the best is
    chosen on); ``test_metric``/``test_metrics`` its test evaluation, reported only (None/{} for a trial
    stopped early, which was never evaluated on test)."""
    metrics = version.get("metrics") or {}
    validation = metrics.get("validation") or {}
    test = _scalars(metrics) if metrics.get("split") == "test" else {}
    progress = version.get("progress") or {}
    history = progress.get("history") or []
    metric = run["metric"]
    return {
        "trial_id": trial["trial_id"], "version_id": version["id"], "status": version["status"],
        "stopped_early": bool(progress.get("stopped_early")), "best": version["id"] == run["best_version"],
        "params": {name: version["params"].get(name) for name in run["space"]},
        "metric": validation.get(metric), "metrics": _scalars(validation),
        "test_metric": test.get(metric), "test_metrics": test,
        "epochs": len(history) if history else progress.get("epoch", 0),
        "curve": [[h["epoch"], h["metrics"][metric]] for h in history if metric in (h.get("metrics") or {})],
        "runs": trial["runs"], "error": version.get("error"),
    }


def trial_rows(ctx: Context, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each started trial with its version's params (by hyperparameter name), status and metrics."""
    return [_trial_row(run, t, model_service.get_version(ctx, run["app_id"], run["model_id"], t["version_id"]))
            for t in list_trials(ctx, run["app_id"], run["model_id"], run["id"])]


def best_trial(run: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trained trial with the best final validation metric (trials stopped early are not candidates;
    the test metric is never compared)."""
    done = [r for r in rows if r["status"] == "trained" and r["metric"] is not None]
    if not done:
        return None
    pick = max if run["mode"] == "max" else min
    return pick(done, key=lambda r: r["metric"])


def run_summary(ctx: Context, app_id: str, model_id: str, run_id: str) -> dict[str, Any]:
    """The run with every trial and the best one (``best`` is None until a trial has finished)."""
    run = get_run(ctx, app_id, model_id, run_id)
    rows = trial_rows(ctx, run)
    best = next((r for r in rows if r["best"]), None) or best_trial(run, rows)
    return {**run, "trials": rows, "best": best}


def promote_best(ctx: Context, app_id: str, model_id: str, run_id: str) -> dict[str, Any]:
    """Make the run's best trial the model's default version; returns the model."""
    run = get_run(ctx, app_id, model_id, run_id)
    if run["best_version"] is None:
        raise Conflict(f"tuning run {run_id!r} has no best trial yet (status {run['status']})")
    return model_service.set_default_version(ctx, app_id, model_id, run["best_version"])
