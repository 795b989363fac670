"""The remote client's Ray jobs: hyperparameter searches (``tune``) and reading a job (``get_job``, ``wait_job``).

``tune`` asks the server to start the search (``POST …/models/{model}/tune_runs``: the server checks the space,
metric, scheduler and data as ``deeptrain tune`` does, then runs ``deeptrain tune … --json`` as a Ray job on its
cluster and answers with the job at once) and follows it (``GET …/jobs/{job}``, ``GET …/tune_runs/{run}``) until
the job ends. The run is found by its trials: each trial's version records the job that runs it and its run
(``tune_run``). Stopping to follow (Ctrl-C) leaves the search running on the server.

A job is read over the app's ``GET …/jobs/{job}`` (a job is refused to other apps). ``get_job`` has no app
argument: the job's app is the key's own app (an app key), or the one app of the key's apps whose route
knows the job (a user key); it is remembered for the next reads.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from deeptrain.errors import DeeptrainError, InvalidInput, NotFound
from deeptrain.remote.base import q
from deeptrain.remote.client_models import ModelMethods
from deeptrain.results import Job, TuneRun

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")  # Ray's final job statuses
JOB_POLL_S = 1.0
TUNE_POLL_S = 2.0  # each read of a job asks the server's cluster
# a trial's version status as the live table of a local ``tune`` words Tune's trial status
TRIAL_STATUS = {"queued": "pending", "training": "running", "trained": "finished", "failed": "error",
                "cancelled": "terminated"}

ProgressFn = Callable[[list[dict[str, Any]]], None]
JobFn = Callable[[Job], None]


def space_specs(space: Mapping[str, Any]) -> dict[str, str]:
    """The search space as the server takes it (``{"lrate": "loguniform:0.0001:0.1"}``): ``ray.tune`` domains
    written as the CLI writes them, strings (``kind:args``) as given."""
    specs = {}
    for name, domain in space.items():
        if isinstance(domain, str):
            specs[name] = domain
        else:
            from deeptrain.tune_space import describe_domain

            specs[name] = describe_domain(domain)
    return specs


def progress_rows(run: TuneRun) -> list[dict[str, Any]]:
    """A local ``tune``'s live rows (trial, params, epoch, metric, status) from the run's recorded trials: the
    started ones, with the last validation metric each reported."""
    rows = []
    for t in run.trials or []:
        metric = t.metric if t.metric is not None else (t.curve[-1][1] if t.curve else None)
        status = "stopped early" if t.stopped_early else TRIAL_STATUS.get(t.status, t.status)
        rows.append({"trial": t.trial_id, "params": dict(t.params), "epoch": t.epochs or None, "metric": metric,
                     "status": status})
    return rows


def _no_address(address: str | None) -> None:
    if address:
        raise InvalidInput("--address is not available with DEEPTRAIN_API_URL: the server reads the jobs of its own "
                           "Ray cluster")


class JobMethods(ModelMethods):
    # --- jobs ----------------------------------------------------------------------------------------------------
    def _app_job(self, app_id: str, job_id: str) -> Job:
        return Job(self._get(self._app(app_id, f"/jobs/{q(job_id)}"))["job"])

    def _job_apps(self) -> dict[str, str]:
        return self.__dict__.setdefault("_job_app_of", {})

    def get_job(self, job_id: str, address: str | None = None) -> Job:
        """A Ray job an app of this key started (training, tuning): its status, versions and the end of its log
        (``log_tail``)."""
        _no_address(address)
        known = self._job_apps()
        if job_id in known:
            return self._app_job(known[job_id], job_id)
        apps = [a["id"] for a in self._all("/v2/users/me/apps", "apps")]
        for app_id in apps:
            try:
                job = self._app_job(app_id, job_id)
            except NotFound:
                continue
            known[job_id] = app_id
            return job
        raise NotFound(f"Ray job {job_id!r} is not a job of {'app ' if len(apps) == 1 else 'any of the apps '}"
                       f"{', '.join(map(repr, apps))} on the server's cluster")

    def wait_job(self, job_id: str, address: str | None = None, timeout: float | None = None,
                 on_poll: JobFn | None = None) -> Job:
        """Poll the job until it ends (or ``timeout``); ``on_poll`` sees it at every poll. Its versions are then
        final (the server marks one failed when the job died first)."""
        _no_address(address)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_poll:
                on_poll(job)
            if job.status in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(JOB_POLL_S)

    # --- tuning ------------------------------------------------------------------------------------------------
    def tune(self, app_id: str, model_id: str, space: Mapping[str, Any], *, trials: int,
             max_concurrent: int | None = None, metric: str | None = None, scheduler: str | None = None,
             params: dict[str, Any] | None = None, workers: int = 1, dataset_version: str | None = None,
             grace_period: int | None = None, reduction_factor: int = 2,
             on_run: Callable[[TuneRun], None] | None = None, on_progress: ProgressFn | None = None) -> TuneRun:
        """Search hyperparameters on the server's cluster and wait (a local ``tune``'s arguments; ``space``: ``ray.tune``
        domains or ``kind:args`` strings). ``on_run`` sees the run once its first trial has started,
        ``on_progress`` the trials' rows at each poll that changed them; returns the run with its trials and best."""
        body = {"space": space_specs(space), "trials": trials, "max_concurrent": max_concurrent, "metric": metric,
                "scheduler": scheduler, "grace_period": grace_period, "reduction_factor": reduction_factor,
                "params": dict(params or {}), "workers": workers, "dataset_version_id": dataset_version}
        before = {r.id for r in self.list_tune_runs(app_id, model_id)}  # a missing model: refused here
        job = self._post(self._app(app_id, f"/models/{q(model_id)}/tune_runs"),
                         {k: v for k, v in body.items() if v is not None})["job"]
        self._job_apps()[job["job_id"]] = app_id
        return self._follow_tune(app_id, model_id, job["job_id"], before, on_run, on_progress)

    def _run_of(self, app_id: str, model_id: str, job: Job) -> str | None:
        """The tuning run a job's trials belong to (None before its first trial started)."""
        for v in job.get("versions") or []:
            if (v["app"], v["model"]) == (app_id, model_id):
                run_id = self.get_version(app_id, model_id, v["version"]).get("tune_run")
                if run_id:
                    return run_id
        return None

    def _follow_tune(self, app_id: str, model_id: str, job_id: str, before: set[str],
                     on_run: Callable[[TuneRun], None] | None, on_progress: ProgressFn | None) -> TuneRun:
        run_id: str | None = None
        shown: dict[str, Any] = {}

        def show(run: TuneRun) -> None:
            if "run" not in shown and on_run:
                on_run(run)
            shown["run"] = run
            rows = progress_rows(run)
            if on_progress and rows != shown.get("rows"):
                on_progress(rows)
            shown["rows"] = rows

        while True:
            job = self._app_job(app_id, job_id)
            run_id = run_id or self._run_of(app_id, model_id, job)
            if job.status in TERMINAL:
                break
            if run_id:
                show(self.get_tune_run(app_id, model_id, run_id))
            time.sleep(TUNE_POLL_S)
        if run_id is None:  # no trial started: the one run recorded since the start, if it is one
            new = [r.id for r in self.list_tune_runs(app_id, model_id) if r.id not in before]
            run_id = new[0] if len(new) == 1 else None
        run = self.get_tune_run(app_id, model_id, run_id) if run_id else None
        if run is not None:
            show(run)
        if job.status != "SUCCEEDED" or run is None:
            raise _tune_failed(job, run)
        return run


def _tune_failed(job: Job, run: TuneRun | None) -> DeeptrainError:
    what = f"tuning run {run.id} ({run.status})" if run is not None else "the tuning run"
    reason = (run.error if run is not None else None) or job.message or f"Ray job {job.job_id} {job.status.lower()}"
    tail = (job.get("log_tail") or "").strip()
    return DeeptrainError(f"{what} in Ray job {job.job_id} ended {job.status}: {reason}"
                          + (f"\n--- end of the job's log ---\n{tail}" if tail else ""))
