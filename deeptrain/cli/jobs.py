"""submit and jobs commands: run training (or tuning) on a Ray cluster as Ray Jobs, and follow them."""

from __future__ import annotations

from typing import Any, Optional

import typer

from deeptrain.cli.commands import add_commands
from deeptrain.cli.options import (AddressOption, CpusOption, DatasetVersionOption, EnvOption, GpusOption,
                                   PackageOption, ParamOption, PlacementOption, ResumeOption, WorkersOption,
                                   parse_env, parse_params)
from deeptrain.cli.output import JsonOption, emit, print_json, stderr, stdout, table
from deeptrain.cli.tune import check_run_args
from deeptrain.errors import InvalidInput
from deeptrain.sdk import Client

submit_app = typer.Typer(help="Send training or tuning to a Ray cluster as a Ray Job; returns with the job id.",
                         no_args_is_help=True)
jobs_app = typer.Typer(help="Ray Jobs sent by `deeptrain submit`: list, show, logs, wait, stop.", no_args_is_help=True)


def _forwardable():
    """The commands a job can run (``deeptrain`` without ``submit`` and ``jobs``), as one click group."""
    app = typer.Typer()
    add_commands(app)
    return typer.main.get_command(app)


def check_command_line(argv: list[str]) -> dict[str, Any]:
    """Parse a deeptrain command line with this CLI, so that a typo fails here and not in a job;
    returns the command's parameters by name."""
    command, args = _forwardable(), list(argv)
    while hasattr(command, "list_commands"):  # a group: descend to the command it names
        name = args.pop(0) if args else ""
        sub = command.get_command(None, name) if name in command.list_commands(None) else None
        if sub is None:
            raise InvalidInput(f"`deeptrain {' '.join(argv)}`: {name!r} is not a deeptrain command here "
                               f"(one of: {', '.join(command.list_commands(None))})")
        command = sub
    try:
        return command.make_context(command.name, args).params
    except typer.TyperException as exc:  # typer's (vendored) click usage errors
        raise InvalidInput(f"`deeptrain {' '.join(argv)}` is not a valid command line: {exc.format_message()}") from None


def _render_submitted(result: dict[str, Any]) -> None:
    job, version = result["job"], result["version"]
    stdout.print(f"submitted Ray job [bold]{job['job_id']}[/] ({job['status']}): trains version "
                 f"[bold]{version['model_id']}/{version['id']}[/]")
    stdout.print(f"follow it with `deeptrain jobs wait {job['job_id']}` or `deeptrain jobs logs {job['job_id']} --follow`")


@submit_app.command("train")
def submit_train(
    app: str, model: str,
    param: Optional[list[str]] = ParamOption,
    workers: int = WorkersOption,
    dataset_version: Optional[str] = DatasetVersionOption,
    resume: Optional[str] = ResumeOption,
    cpus_per_worker: Optional[float] = CpusOption,
    gpus_per_worker: Optional[float] = GpusOption,
    placement: str = PlacementOption,
    address: Optional[str] = AddressOption,
    package: str = PackageOption,
    env: Optional[list[str]] = EnvOption,
    json: bool = JsonOption,
):
    """Train a version as a Ray Job. The version is planned and queued here, so bad input is refused before
    any job starts; the job runs `deeptrain models train APP MODEL --resume VERSION --json` on the cluster."""
    params, job_env = parse_params(param), parse_env(env)
    resources = None if resume else Client.worker_resources(cpus_per_worker, gpus_per_worker, placement)
    result = Client().submit_train(app, model, params, workers=workers, dataset_version=dataset_version,
                                   resources=resources, resume=resume, address=address, package=package,
                                   env=job_env)
    emit(result, json, _render_submitted)


@submit_app.command("tune", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit_tune(ctx: typer.Context, address: Optional[str] = AddressOption, package: str = PackageOption,
                env: Optional[list[str]] = EnvOption, json: bool = JsonOption):
    """Run `deeptrain tune ARGS...` as a Ray Job (ARGS exactly as for `deeptrain tune`).

    The search is checked here first (space, metric, scheduler, the data), so bad input fails before any job
    exists; the dataset version is fixed at submission (a snapshot unless --dataset-version is given)."""
    from deeptrain.tune_space import parse_space

    argv = ["tune", *ctx.args, "--json"]
    given, job_env = check_command_line(argv), parse_env(env)
    app, model = given["app"], given["model"]
    check_run_args(given["resume"], given["space"], given["trials"])
    params = parse_params(given["param"])
    domains = {} if given["resume"] else parse_space(given["space"] or [])
    client = Client()
    client.check_submission(package, job_env, address)  # settings the cluster can use, before any snapshot
    if given["resume"]:
        client.check_tune_resume(app, model, given["resume"])
    else:
        dataset_version = client.check_tune(
            app, model, domains, trials=given["trials"], metric=given["metric"], scheduler=given["scheduler"],
            params=params, workers=given["workers"], dataset_version=given["dataset_version"],
            grace_period=given["grace_period"], reduction_factor=given["reduction_factor"])
        if not given["dataset_version"]:
            argv[-1:] = ["--dataset-version", dataset_version, "--json"]
    job = client.submit_command(argv, command="tune", app_id=app, model_id=model, address=address, package=package,
                                env=job_env)
    emit(job, json, lambda j: stdout.print(f"submitted Ray job [bold]{j['job_id']}[/] ({j['status']}): {j['entrypoint']}"))


JOB_COLUMNS = ["job_id", "status", "command", "app", "model", "version", "version_status"]


def _render_job(job: dict[str, Any]) -> None:
    stdout.print(f"[bold]{job['job_id']}[/] {job['status']}" + (f" — {job['message']}" if job.get("message") else ""))
    stdout.print(f"entrypoint: {job['entrypoint']}")
    if job.get("version"):
        stdout.print(f"version {job['model']}/{job['version']}: {job.get('version_status')}"
                     + (f" — [red]{job['version_error']}[/]" if job.get("version_error") else ""))


@jobs_app.command("list")
def jobs_list(address: Optional[str] = AddressOption, json: bool = JsonOption):
    """The cluster's deeptrain jobs, oldest first (an ended job's version is brought up to date)."""
    emit(Client().list_jobs(address), json, lambda rows: table(rows, JOB_COLUMNS, "deeptrain Ray jobs"))


@jobs_app.command("show", help="Show a job: its status, command line and the version it trains.")
def jobs_show(job_id: str, address: Optional[str] = AddressOption, json: bool = JsonOption):
    emit(Client().get_job(job_id, address), json, _render_job)


@jobs_app.command("logs")
def jobs_logs(job_id: str, follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends."),
              address: Optional[str] = AddressOption, json: bool = JsonOption):
    """The job's output (the driver's stdout and stderr); with --json one document {job_id, logs} at the end."""
    chunks = Client().job_logs(job_id, address, follow)
    if json:
        print_json({"job_id": job_id, "logs": "".join(chunks)})
        return
    for chunk in chunks:
        print(chunk, end="", flush=True)


@jobs_app.command("wait")
def jobs_wait(job_id: str, timeout: Optional[float] = typer.Option(None, min=0, help="Give up after this many seconds."),
              address: Optional[str] = AddressOption, json: bool = JsonOption):
    """Wait for the job to end and print it with its version; exit code 1 unless it succeeded."""
    client = Client()
    seen: dict[str, Any] = {}

    def on_poll(job: dict[str, Any]) -> None:
        line = job["status"]
        if job.get("version") and job["status"] == "RUNNING":
            p = client.get_version(job["app"], job["model"], job["version"]).get("progress") or {}
            if p.get("phase"):
                line += f", {p['phase']}"
            elif p.get("epoch"):
                line += f", epoch {p['epoch']}/{p['num_epochs']}"
        if line != seen.get("line"):
            seen["line"] = line
            stderr.print(f"{job_id}: {line}")

    job = client.wait_job(job_id, address, timeout, on_poll)
    emit(job, json, _render_job)
    if job["status"] != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command("stop")
def jobs_stop(job_id: str, address: Optional[str] = AddressOption, json: bool = JsonOption):
    """Stop the job now (`deeptrain models cancel` instead stops training after the current epoch)."""
    emit(Client().stop_job(job_id, address), json, _render_job)
