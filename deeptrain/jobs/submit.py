"""Run deeptrain commands on a Ray cluster as Ray Jobs, and follow them.

``submit_training`` plans and records the version here, on the submitting side, so that
bad input is refused before any job exists, then submits ``deeptrain models train APP
MODEL --resume VERSION --json`` (which runs that queued version) with the version's id
as the job's metadata and the job's id on the version. The job's entrypoint records the
version's progress, result or failure in the shared store. When the job ends before its
entrypoint could record anything (its runtime env failed, it could not import deeptrain
or reach the store, it was stopped), ``reconcile`` marks the version from the Ray job's
status; every function here that reads a job calls it.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from deeptrain.config import Settings
from deeptrain.errors import ClusterError, InvalidInput, NotFound
from deeptrain.cluster import worker_env
from deeptrain.jobs.ray_address import connect, dashboard_address, serving_address  # noqa: F401 (this module's API)
from deeptrain.jobs.wheel import checkout_root, project_wheel
from deeptrain.services import models as model_service
from deeptrain.services.context import Context

PACKAGES = ("local", "pip", "pip:REQUIREMENT", "image")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# The job runs the module, not the console script: with --package local (or a pip
# runtime env) the ``deeptrain`` script of the cluster's own environment may be absent.
ENTRYPOINT = ("python", "-m", "deeptrain.cli.main")
META = {"command": "deeptrain.command", "app": "deeptrain.app", "model": "deeptrain.model",
        "version": "deeptrain.version"}
LOG_TAIL_CHARS = 1500
RAY_WORKING_DIR_VAR = "RAY_RUNTIME_ENV_CREATE_WORKING_DIR"  # the working_dir's path on the node, for pip


# --- settings and runtime env ------------------------------------------------------------

def cluster_settings_problems(storage_uri: str, database_url: str) -> list[str]:
    """Why these settings cannot work on a cluster with nodes on other machines (empty when they can)."""
    problems = []
    if storage_uri.startswith("file:"):
        problems.append(f"DEEPTRAIN_STORAGE is a local path ({storage_uri}) that the cluster's nodes cannot see; "
                        "use S3 or S3-compatible storage: DEEPTRAIN_STORAGE=s3://bucket/prefix")
    if database_url.startswith("sqlite"):
        problems.append(f"DEEPTRAIN_DATABASE_URL is a SQLite file ({database_url}) that the cluster's nodes "
                        "cannot share; use PostgreSQL: DEEPTRAIN_DATABASE_URL=postgresql://user:password@host/db")
    return problems


def settings_problems(settings: Settings, overrides: dict[str, str] | None = None) -> list[str]:
    """Local paths among this side's settings or the job's (``overrides``): fine only on this machine."""
    env = {**settings.as_env(), **(overrides or {})}
    problems = cluster_settings_problems(settings.storage_uri, settings.database_url)
    return problems + [p for p in cluster_settings_problems(env["DEEPTRAIN_STORAGE"], env["DEEPTRAIN_DATABASE_URL"])
                       if p not in problems]


def on_this_machine(ip: str) -> bool:
    """Whether ``ip`` is an address of this machine (a socket can bind to it; all of 127.0.0.0/8 is)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as probe:
            probe.bind((ip, 0))
        return True
    except OSError:
        return False


def job_env(settings: Settings, overrides: dict[str, str] | None = None,
            node_ips: list[str] | None = None) -> dict[str, str]:
    """Environment of the job: this side's storage, database and AWS settings, then ``overrides``
    (e.g. the storage endpoint as the cluster sees it). DEEPTRAIN_HOME stays the cluster's own.

    A local storage path or a SQLite file is refused unless ``node_ips`` (the cluster's live
    nodes, ``cluster_node_ips``) are all on this machine: then every node sees the same paths."""
    env = {k: v for k, v in worker_env(settings).items() if k != "DEEPTRAIN_HOME"}
    env.update(overrides or {})
    problems = settings_problems(settings, overrides)
    if not problems or (node_ips and all(on_this_machine(ip) for ip in node_ips)):
        return env
    elsewhere = [ip for ip in node_ips or [] if not on_this_machine(ip)]
    where = (f"the cluster has nodes on other machines ({', '.join(elsewhere)})" if elsewhere
             else "they work only when every node of the cluster runs on this machine")
    raise InvalidInput("a Ray cluster needs storage and a database every node can reach: " + "; ".join(problems)
                       + f" ({where})")


def cluster_node_ips(client) -> list[str]:
    """The IP addresses of the cluster's live nodes, from the dashboard's state API."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=client.get_address(), filters=[("state", "=", "ALIVE")],
                           raise_on_missing_output=False)
    except Exception as exc:
        raise ClusterError(f"cannot list the nodes of the Ray cluster at {client.get_address()}: {exc}") from None
    return sorted({n.node_ip for n in nodes})


def check_submission(ctx: Context, package: str, env: dict[str, str] | None = None,
                     address: str | None = None) -> None:
    """Refuse, before anything is recorded, a bad package mode and settings the cluster cannot use.

    With local paths in the settings the cluster is asked where its nodes run (an
    unreachable one is a ClusterError here); otherwise it is not contacted."""
    node_ips = None
    if settings_problems(ctx.settings, env):
        node_ips = cluster_node_ips(connect(address, ctx.settings.cluster_connect_timeout_s))
    runtime_env(package, job_env(ctx.settings, env, node_ips), wheel_cache(ctx))


def wheel_cache(ctx: Context) -> Path:
    return ctx.settings.home / "wheels"


def _source_packages() -> list[str]:
    """This checkout's packages (deeptrain and, next to it, serve), to ship with --package local."""
    root = checkout_root()
    return [str(p) for p in (root / "deeptrain", root / "serve") if (p / "__init__.py").exists()]


def _pip_spec(package: str, cache_dir: Path | None) -> dict[str, Any]:
    """pip: this checkout's own wheel, uploaded as the job's working_dir and installed from there
    with the dependencies the nodes lack (never ``deeptrain`` from an index, where that name is
    another project's); ``pip:REQUIREMENT``: that requirement."""
    if package.startswith("pip:"):
        requirement = package[4:].strip()
        if not requirement:
            raise InvalidInput("--package pip:REQUIREMENT needs a requirement after 'pip:', e.g. a wheel's URL")
        return {"pip": {"packages": [requirement], "pip_check": False}}
    wheel = project_wheel(cache_dir or Path(tempfile.gettempdir()) / "deeptrain-wheels")
    upload = wheel.parents[1]  # <hash>/: the inner <hash>/ makes the install path differ per content
    installed = f"${{{RAY_WORKING_DIR_VAR}}}/{wheel.relative_to(upload).as_posix()}"
    return {"working_dir": str(upload), "pip": {"packages": [installed], "pip_check": False}}


def runtime_env(package: str, env_vars: dict[str, str], cache_dir: Path | None = None) -> dict[str, Any]:
    """The job's Ray runtime env: how it gets this package, and its environment variables.

    local (default): ship this checkout's ``deeptrain/`` and ``serve/`` as ``py_modules``
    (the nodes have the dependencies, e.g. cluster/Dockerfile's image); pip: ship this
    checkout's wheel (built into ``cache_dir``) and pip-install it there with its
    dependencies (``pip:REQUIREMENT`` for another requirement, e.g. a wheel URL); image:
    nothing, the nodes have this version installed.
    """
    if package == "image":
        spec: dict[str, Any] = {}
    elif package == "pip" or package.startswith("pip:"):
        spec = _pip_spec(package, cache_dir)
    elif package == "local":
        spec = {"py_modules": _source_packages(), "excludes": ["__pycache__", "*.pyc"]}
    else:
        raise InvalidInput(f"package {package!r} is not one of {', '.join(PACKAGES)}")
    return {**spec, "env_vars": env_vars}


# --- the cluster ---------------------------------------------------------------------------

def serving_env() -> dict[str, str]:
    """What a server (the Serve gateway) adds to its jobs' environment: its own Python's folder first on PATH,
    so that the job's ``python`` is the cluster's Python with deeptrain's dependencies even when the cluster's
    processes did not get it on PATH (a cluster started from a virtual environment that was not activated)."""
    return {"PATH": os.pathsep.join(p for p in (str(Path(sys.executable).parent), os.environ.get("PATH")) if p)}


def new_job_id(version_id: str | None = None) -> str:
    return f"deeptrain-{version_id or 'job'}-{uuid.uuid4().hex[:8]}"


def submit_cli(ctx: Context, argv: list[str], *, metadata: dict[str, str], job_id: str | None = None,
               address: str | None = None, package: str = "local", env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the deeptrain command line ``argv`` (e.g. ``["tune", ...]``) as a Ray Job; returns the job."""
    job_id = job_id or new_job_id()
    client = connect(address, ctx.settings.cluster_connect_timeout_s)
    node_ips = cluster_node_ips(client) if settings_problems(ctx.settings, env) else None
    spec = runtime_env(package, {**job_env(ctx.settings, env, node_ips), "DEEPTRAIN_JOB_ID": job_id},
                       wheel_cache(ctx))
    try:
        client.submit_job(entrypoint=shlex.join([*ENTRYPOINT, *argv]), submission_id=job_id, metadata=metadata,
                          runtime_env=spec)
    except Exception as exc:  # the job server refused it (bad runtime env, upload failure, ...)
        raise ClusterError(f"the Ray cluster at {client.get_address()} refused job {job_id}: {exc}") from None
    return job_record(client.get_job_info(job_id))


def submit_training(ctx: Context, app_id: str, model_id: str, overrides: dict[str, Any] | None = None, *,
                    workers: int = 1, dataset_version_id: str | None = None, resources=None,
                    resume: str | None = None, address: str | None = None, package: str = "local",
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """Queue a version (or take version ``resume`` again) and run it as a Ray Job: ``{"job", "version"}``.

    Refused before anything is recorded: settings a cluster cannot use (local paths when
    a node of the cluster is on another machine), a bad package mode, anything
    ``plan_training`` refuses. Recorded as a failed version: an unreachable cluster (with
    shared storage; with local paths it is contacted first), a job the cluster refuses.
    """
    from deeptrain.jobs.train import queue_version, recording_failure

    check_submission(ctx, package, env, address)
    if resume:
        version = _take_back(ctx, app_id, model_id, resume, address)
    else:
        version, _ = queue_version(ctx, app_id, model_id, overrides, dataset_version_id, workers, resources)
    key = (app_id, model_id, version["id"])
    job_id = new_job_id(version["id"])
    model_service.update_version(ctx, *key, job_id=job_id)
    metadata = {META["command"]: "train", META["app"]: app_id, META["model"]: model_id, META["version"]: version["id"]}
    with recording_failure(ctx, key):
        job = submit_cli(ctx, ["models", "train", app_id, model_id, "--resume", version["id"], "--json"],
                         metadata=metadata, job_id=job_id, address=address, package=package, env=env)
    return {"job": job, "version": model_service.get_version(ctx, *key)}


def _take_back(ctx: Context, app_id: str, model_id: str, version_id: str, address: str | None) -> dict[str, Any]:
    """An unfinished version to submit again: it continues from its last checkpoint."""
    version = model_service.get_version(ctx, app_id, model_id, version_id)
    if version["status"] == "trained":
        raise InvalidInput(f"version {version_id!r} is already trained")
    if version["status"] in ("queued", "training") and version["job_id"]:
        try:
            job = get_job(ctx, version["job_id"], address)
        except NotFound:  # its job is gone (another cluster, a restarted head): nothing runs it
            job = None
        if job is not None and job["status"] not in TERMINAL:
            raise InvalidInput(f"version {version_id!r} is still {version['status']} in Ray job {job['job_id']} "
                               f"({job['status']}); stop it first with `deeptrain jobs stop {job['job_id']}`")
    return model_service.update_version(ctx, app_id, model_id, version_id, status="queued", error=None,
                                        cancel_requested=False)


# --- following jobs ------------------------------------------------------------------------

def job_record(info) -> dict[str, Any]:
    """A Ray ``JobDetails`` as plain values, with the deeptrain version it runs."""
    meta = info.metadata or {}
    return {
        "job_id": info.submission_id, "status": str(getattr(info.status, "value", info.status)),
        "message": info.message, "entrypoint": info.entrypoint, "command": meta.get(META["command"]),
        "app": meta.get(META["app"]), "model": meta.get(META["model"]), "version": meta.get(META["version"]),
        "start_time": info.start_time, "end_time": info.end_time, "driver_exit_code": info.driver_exit_code,
    }


def _job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise NotFound(f"Ray job {job_id!r} does not exist on this cluster") from None
        raise ClusterError(f"cannot read Ray job {job_id!r}: {exc}") from None


def reconcile(ctx: Context, client, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Make the versions of an ended job final; returns the job's versions.

    A job's versions are those that record its id: ``submit train``'s one, or those the
    job created (e.g. tuning trials, through DEEPTRAIN_JOB_ID). One still queued or
    training after the job ended could not record the outcome itself: it becomes
    ``failed`` with the job's message and the end of its log (``cancelled`` if stopped).
    """
    versions = model_service.versions_of_job(ctx, job["job_id"])
    unfinished = [v for v in versions if v["status"] not in model_service.FINAL]
    if job["status"] not in TERMINAL or not unfinished:
        return versions
    if job["status"] == "STOPPED":
        fields = {"status": "cancelled", "error": f"Ray job {job['job_id']} was stopped"}
    else:
        reason = f"Ray job {job['job_id']} {job['status'].lower()} before the version finished: {job['message'] or ''}"
        try:
            logs = client.get_job_logs(job["job_id"]).strip()
        except Exception:  # no logs: the job never started its entrypoint
            logs = ""
        if logs:
            reason += f"\n--- last lines of the job's log ---\n{logs[-LOG_TAIL_CHARS:]}"
        fields = {"status": "failed", "error": reason[:4000]}
    done = {(v["app_id"], v["model_id"], v["id"]): model_service.update_version(
        ctx, v["app_id"], v["model_id"], v["id"], **fields) for v in unfinished}
    return [done.get((v["app_id"], v["model_id"], v["id"]), v) for v in versions]


def _with_versions(ctx: Context, client, info) -> dict[str, Any]:
    """The job record with its versions' status (reconciled) and, for ``submit train``'s, its own."""
    job = job_record(info)
    versions = reconcile(ctx, client, job)
    job["versions"] = [{"app": v["app_id"], "model": v["model_id"], "version": v["id"], "status": v["status"],
                        "error": v["error"]} for v in versions]
    own = next((v for v in job["versions"] if v["version"] == job["version"]), None)
    if own is not None:
        job["version_status"], job["version_error"] = own["status"], own["error"]
    return job


def get_job(ctx: Context, job_id: str, address: str | None = None) -> dict[str, Any]:
    client = connect(address, ctx.settings.cluster_connect_timeout_s)
    return _with_versions(ctx, client, _job_info(client, job_id))


def list_jobs(ctx: Context, address: str | None = None) -> list[dict[str, Any]]:
    """The cluster's deeptrain jobs (those ``submit`` sent), oldest first."""
    client = connect(address, ctx.settings.cluster_connect_timeout_s)
    infos = [i for i in client.list_jobs() if (i.metadata or {}).get(META["command"])]
    return [_with_versions(ctx, client, i) for i in sorted(infos, key=lambda i: i.start_time or 0)]


def wait_job(ctx: Context, job_id: str, address: str | None = None, timeout_s: float | None = None,
             on_poll: Callable[[dict[str, Any]], None] | None = None, poll_s: float = 1.0) -> dict[str, Any]:
    """Wait for a job to end (or ``timeout_s``); ``on_poll`` sees the job record at every poll."""
    client = connect(address, ctx.settings.cluster_connect_timeout_s)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        job = job_record(_job_info(client, job_id))
        if on_poll:
            on_poll(job)
        if job["status"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return _with_versions(ctx, client, _job_info(client, job_id))
        time.sleep(poll_s)


def stop_job(ctx: Context, job_id: str, address: str | None = None, timeout_s: float = 60) -> dict[str, Any]:
    """Stop a job (its driver gets SIGTERM, then SIGKILL) and wait until it has ended."""
    client = connect(address, ctx.settings.cluster_connect_timeout_s)
    _job_info(client, job_id)
    client.stop_job(job_id)
    return wait_job(ctx, job_id, address, timeout_s)


def job_logs(ctx: Context, job_id: str, address: str | None = None, follow: bool = False) -> Iterator[str]:
    """The job's log so far, or (``follow``) its chunks as they come until it ends."""
    client = connect(address, ctx.settings.cluster_connect_timeout_s)
    _job_info(client, job_id)
    if not follow:
        yield client.get_job_logs(job_id)
        return
    import asyncio

    stream = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()
