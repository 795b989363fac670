"""``deeptrain tune`` (a hyperparameter search with a live table) and ``deeptrain tune-runs`` (list, show,
promote, report)."""

from __future__ import annotations

import sys
from contextlib import redirect_stdout
from typing import Any, Optional

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from deeptrain.cli.options import ParamOption, parse_params
from deeptrain.cli.output import JsonOption, emit, new_table, print_json, stderr, stdout, table
from deeptrain.errors import InvalidInput
from deeptrain.sdk import Client

tune_runs_app = typer.Typer(help="Tuning runs: list, show, promote the best trial, report.", no_args_is_help=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _scheduler_text(scheduler: dict[str, Any]) -> str:
    return scheduler["name"] + (f" ({scheduler['note']})" if scheduler.get("note") else "")


def _live_table(rows: list[dict[str, Any]], metric: str, scheduler: str | None = None) -> RenderableType:
    t = new_table(("trial", "params", "epoch", f"val {metric}", "status"), "trials", title_justify="left")
    for r in rows:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())
        t.add_row(r["trial"], params, _fmt(r["epoch"]), _fmt(r["metric"]), r["status"])
    return Group(Text(f"scheduler {scheduler}"), t) if scheduler else t


def _render_run(run: dict[str, Any]) -> None:
    stdout.print(f"[bold]tuning run {run['id']}[/] of {run['model_id']}: [bold]{run['status']}[/], "
                 f"{run['metric']} ({run['mode']}), {run['num_trials']} trials, {run['max_concurrent']} at once, "
                 f"scheduler {_scheduler_text(run['scheduler'])}")
    stdout.print("space: " + ", ".join(f"{k}={v}" for k, v in run["space"].items()))
    rows = [{"trial": t["trial_id"], "version": t["version_id"], "status": t["status"]
             + (" (stopped early)" if t["stopped_early"] else "") + (" [best]" if t["best"] else ""),
             "params": ", ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items()),
             "epochs": t["epochs"], f"val {run['metric']}": _fmt(t["metric"]),
             f"test {run['metric']}": _fmt(t.get("test_metric"))} for t in run.get("trials", [])]
    table(rows, ["trial", "version", "params", "epochs", f"val {run['metric']}", f"test {run['metric']}", "status"],
          "trials")
    best = run.get("best")
    if best:
        stdout.print(f"best (on validation): version [bold]{best['version_id']}[/] val {run['metric']}="
                     f"{_fmt(best['metric'])}, test {run['metric']}={_fmt(best.get('test_metric'))} "
                     f"with " + ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items()))
        stdout.print(f"make it the default version: deeptrain tune-runs promote {run['app_id']} {run['model_id']} "
                     f"{run['id']}")
    if run["status"] == "interrupted":
        stdout.print(f"continue it: deeptrain tune {run['app_id']} {run['model_id']} --resume {run['id']}")
    if run.get("report"):  # `tune` itself: where the results stay (tune_report.json, plots)
        stdout.print(f"report: {run['report']}")


def tune_command(
    app: str, model: str,
    space: Optional[list[str]] = typer.Option(
        None, "--space", "-s", help="Search space entry name=kind:args (repeatable), e.g. lrate=loguniform:1e-4:1e-1 "
                                    "or batch_size=choice:32,64,128; kinds: uniform, loguniform, choice, randint, "
                                    "qrandint (lower:upper:q), lograndint."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Number of trials (sampled configurations)."),
    max_concurrent: Optional[int] = typer.Option(None, help="Trials at once (default: as many as the cluster fits)."),
    metric: Optional[str] = typer.Option(None, help="Validation metric to maximize (default: top1, map or recall@1)."),
    scheduler: Optional[str] = typer.Option(None, help="asha (early stopping) or fifo (default: asha, or fifo "
                                                       "when the trials have too few epochs for asha)."),
    grace_period: Optional[int] = typer.Option(None, help="ASHA: epochs before a trial can be stopped "
                                                          "(default test_freq; giving it asks for asha)."),
    reduction_factor: int = typer.Option(2, help="ASHA: keep the best 1/reduction_factor at each rung."),
    param: Optional[list[str]] = ParamOption,
    workers: int = typer.Option(1, min=1, help="Ray Train workers per trial."),
    dataset_version: Optional[str] = typer.Option(None, help="Dataset version id (default: snapshot now)."),
    resume: Optional[str] = typer.Option(None, help="Continue this interrupted tuning run."),
    promote: bool = typer.Option(False, help="Make the best trial the model's default version."),
    json: bool = JsonOption,
):
    """Search hyperparameters with Ray Tune: one model version per trial, ASHA early stopping, a live table.

    The command line, the space and the search are checked before Ray starts. With DEEPTRAIN_API_URL the
    server checks the search and runs it as a Ray job on its cluster; the table follows its trials."""
    from deeptrain.tune_space import parse_space

    check_run_args(resume, space, trials)
    params = parse_params(param)
    domains = {} if resume else parse_space(space or [])
    client = Client()
    remote = getattr(client, "remote", False)  # DEEPTRAIN_API_URL: the server runs the search on its cluster
    if remote and resume:
        raise InvalidInput("--resume is not available with DEEPTRAIN_API_URL: continue a tuning run on the server host")
    shown: dict[str, Any] = {"run": client.get_tune_run(app, model, resume)} if resume else {}
    # Ray Tune prints its own banner to stdout; stdout is kept for the result (one JSON document with --json)
    with redirect_stdout(sys.stderr), Live(console=stderr, refresh_per_second=2, transient=json) as live:
        def draw(rows: list[dict[str, Any]]) -> None:
            run = shown.get("run")
            live.update(_live_table(rows, run.metric if run else "metric",
                                    _scheduler_text(run.scheduler) if run else None))

        if resume:
            run = client.resume_tune(app, model, resume, on_progress=draw)
        else:
            run = client.tune(app, model, domains, trials=trials, max_concurrent=max_concurrent, metric=metric,
                              scheduler=scheduler, params=params, workers=workers, dataset_version=dataset_version,
                              grace_period=grace_period, reduction_factor=reduction_factor,
                              on_run=lambda r: shown.__setitem__("run", r), on_progress=draw)
    out = run.model_dump(mode="json")
    if promote and run.best:
        out["promoted"] = client.promote_tune_best(app, model, run.id).default_version
    out["report"] = client.tune_report(app, model, run.id).path if run.trials and not remote else None
    emit(out, json, _render_run)


def check_run_args(resume: str | None, space: list[str] | None, trials: int | None) -> None:
    """A new run needs --trials; a resumed one brings its own space and trials (``tune`` and ``submit tune``)."""
    if resume and (space or trials):
        raise InvalidInput("--resume continues a run with its own space and trials; do not give --space or --trials")
    if not resume and trials is None:
        raise InvalidInput("--trials is required: how many configurations to try")


@tune_runs_app.command("list", help="List a model's tuning runs with their status and best version.")
def tune_runs_list(app: str, model: str, json: bool = JsonOption):
    emit(Client().list_tune_runs(app, model), json,
         lambda rows: table(rows, ["id", "status", "metric", "num_trials", "best_version", "created_at"],
                            f"tuning runs of {model}"))


@tune_runs_app.command("show", help="Show a tuning run: its space, scheduler, trials and best trial.")
def tune_runs_show(app: str, model: str, run: str, json: bool = JsonOption):
    emit(Client().get_tune_run(app, model, run), json, _render_run)


@tune_runs_app.command("promote")
def tune_runs_promote(app: str, model: str, run: str, json: bool = JsonOption):
    """Make the run's best trial the model's default version."""
    emit(Client().promote_tune_best(app, model, run), json)


@tune_runs_app.command("report", help="Show a tuning run's report (metric per trial and epoch, plots) and where it is.")
def tune_runs_report(app: str, model: str, run: str,
                     open_: bool = typer.Option(False, "--open", help="Print the report's local path (to open it)."),
                     json: bool = JsonOption):
    report = Client().tune_report(app, model, run)
    if json:
        print_json(report)
    elif open_:
        print(report["path"])
    else:
        emit({k: report[k] for k in ("path", "plots", "stopped_early", "failed")}, False)
