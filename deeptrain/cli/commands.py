"""The deeptrain commands that work on one deployment (everything but ``submit`` and ``jobs``, which send
and follow these on a Ray cluster), registered on a Typer app.

``cli/main.py`` builds the ``deeptrain`` command from them; ``cli/jobs.py`` parses the command lines it
forwards to a job with them, so a typo fails on the submitting side.
"""

from __future__ import annotations

from typing import Sequence

import typer

from deeptrain.cli.data import apps_app, concepts_app, datasets_app, inputs_app, keys_app
from deeptrain.cli.lifecycle import gc_command
from deeptrain.cli.models import models_app
from deeptrain.cli.predict import predict_command
from deeptrain.cli.search import search_app
from deeptrain.cli.templates import templates_app
from deeptrain.cli.tune import tune_command, tune_runs_app
from deeptrain.cli.weights import weights_app
from deeptrain.cli.workflows import workflows_app


def add_commands(app: typer.Typer, cluster_apps: Sequence[tuple[typer.Typer, str]] = ()) -> None:
    """Register the deployment's commands on ``app``; ``cluster_apps`` (``submit``, ``jobs``) come in their
    place in the help, after ``workflows``."""
    for sub, name in [(apps_app, "apps"), (concepts_app, "concepts"), (inputs_app, "inputs"),
                      (datasets_app, "datasets"), (models_app, "models"), (templates_app, "templates"),
                      (keys_app, "keys"), (search_app, "search"), (workflows_app, "workflows"), *cluster_apps]:
        app.add_typer(sub, name=name)
    app.command("predict")(predict_command)
    app.command("tune")(tune_command)
    app.command("gc")(gc_command)
    app.add_typer(tune_runs_app, name="tune-runs")
    app.add_typer(weights_app, name="weights")
