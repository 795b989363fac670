"""Connect to Ray (``RAY_ADDRESS`` selects a cluster, otherwise a local one starts on demand), and
the environment a Ray worker, replica or job needs to act as this process does.

Training, tuning, search and serving all use it, so it sits below ``jobs/``, ``search/`` and ``serve/``.
"""

from __future__ import annotations

import os

from deeptrain.config import Settings

# the storage client's own variables (credentials, endpoint), which are not deeptrain's settings
# RAY_API_SERVER_ADDRESS: where the Serve gateway submits the training the HTTP API asks for, when the head's
# recorded dashboard address is not reachable from a replica (a Kubernetes service in front of it)
EXPORTED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "HF_HUB_OFFLINE", "RAY_API_SERVER_ADDRESS",
               # an authenticated MLflow server: the trial drivers of a search log their versions' runs themselves
               "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def worker_env(settings: Settings) -> dict[str, str]:
    """Variables Ray workers need to reach the same storage and store as the driver: ``settings.as_env()``
    and the storage client's credentials; nothing is downloaded from a model hub (``HF_HUB_OFFLINE``)."""
    env = {k: os.environ[k] for k in EXPORTED_ENV if k in os.environ}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return {**env, **settings.as_env()}


def ensure_ray(env: dict[str, str] | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` or start a local cluster (once a process). ``env``: variables a local cluster
    starts with, unless this process already has them (Ray's processes inherit its environment and read their own
    switches when they start: ``serve/ingress.py``)."""
    import ray

    # Ray Tune: none of its default result loggers (deeptrain records every trial and writes tune_report.json
    # next to the experiment in storage); its TensorBoard one made Tune print a hint at a temporary folder
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return
    import logging

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "300")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        for name, value in (env or {}).items():
            os.environ.setdefault(name, value)
        # "local": start this process's own cluster, never join one another process started
        ray.init(address="local", include_dashboard=True, logging_level="WARNING", log_to_driver=False)
