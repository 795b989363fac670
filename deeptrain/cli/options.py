"""Typer options and argument parsing that several commands share (train, tune, submit).

Everything here parses the command line only: it starts nothing and reads no store, so a
typo is refused before any cluster, snapshot or job exists.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from deeptrain.errors import InvalidInput
from deeptrain.params import parse_cli_params

ParamOption = typer.Option(None, "--param", "-p", help="Hyperparameter as name=value (repeatable).")
WorkersOption = typer.Option(1, min=1, help="Ray Train workers (data-parallel).")
DatasetVersionOption = typer.Option(None, help="Dataset version id (default: snapshot now).")
ResumeOption = typer.Option(None, help="Run this queued version, or continue this interrupted one from its last "
                                       "checkpoint (with the resources it was planned with).")
CpusOption = typer.Option(None, "--cpus-per-worker", min=0,
                          help="CPUs each worker reserves (default: $DEEPTRAIN_CPU_PER_WORKER or 0.5).")
GpusOption = typer.Option(None, "--gpus-per-worker", min=0,
                          help="GPUs each worker reserves; 0 = none (default: 1 when use_gpu, auto = the cluster has GPUs).")
PlacementOption = typer.Option("PACK", "--placement",
                               help="How workers spread over nodes: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD (one per node).")
AddressOption = typer.Option(None, "--address", help="The cluster's Ray dashboard, e.g. http://HEAD:8265 "
                                                     "(default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS).")
PackageOption = typer.Option("local", "--package", help="How the job gets deeptrain: local (ship this checkout's "
                                                        "code; the nodes have the dependencies), pip (ship this "
                                                        "checkout's wheel and pip-install it there with its "
                                                        "dependencies; pip:REQUIREMENT for another), image "
                                                        "(installed on the nodes).")
EnvOption = typer.Option(None, "--env", help="NAME=VALUE for the job, over this side's settings (repeatable), "
                                             "e.g. AWS_ENDPOINT_URL as the cluster reaches the storage.")


def parse_params(values: Optional[list[str]]) -> dict[str, Any]:
    """``--param name=value`` items -> typed values; an unknown name is refused with the closest valid one."""
    return parse_cli_params(values or [])


def parse_env(values: Optional[list[str]]) -> dict[str, str]:
    """``--env NAME=VALUE`` items -> a dict."""
    env = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"--env expects NAME=VALUE, got {item!r}")
        env[name.strip()] = value
    return env
