"""Where Ray Jobs go: the cluster's Jobs API (its dashboard), from an address, the environment, or the Ray
cluster this process is part of (a Serve replica submitting training for the HTTP API).

``deeptrain.jobs.submit`` re-exports ``dashboard_address``, ``connect`` and ``serving_address``.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

from deeptrain.errors import ClusterError, InvalidInput


def dashboard_address(address: str | None = None) -> str:
    """The Ray Jobs (dashboard) URL: ``address``, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise InvalidInput("no Ray cluster to submit to: pass --address http://HEAD:8265 (the head's dashboard) "
                           "or set RAY_ADDRESS")
    if address == "auto":  # a cluster started on this machine with `ray start`
        from ray.dashboard.utils import ray_address_to_api_server_url

        try:
            return ray_address_to_api_server_url("auto")
        except Exception as exc:
            raise ClusterError(f"no Ray cluster found on this machine for address 'auto': {exc}") from None
    if address.startswith("ray://"):
        raise InvalidInput(f"{address} is a Ray Client address; Ray Jobs go to the dashboard, e.g. http://HEAD:8265")
    return (address if "://" in address else f"http://{address}").rstrip("/")


def connected_dashboard() -> str | None:
    """The Jobs API URL of the Ray cluster this process is connected to (a Serve replica, a driver), as its
    head recorded it in the GCS; None when this process has not joined a cluster or the cluster has no
    dashboard. Never starts or joins one."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        url = _internal_kv_get(ray_constants.DASHBOARD_ADDRESS, namespace=ray_constants.KV_NAMESPACE_DASHBOARD)
    except Exception:  # noqa: BLE001 - a GCS that does not answer: no address from here
        return None
    return f"http://{url.decode()}" if url else None


def serving_address() -> str:
    """Where a server (the Serve gateway) submits jobs: $RAY_API_SERVER_ADDRESS when set (e.g. a Kubernetes
    service in front of the head's dashboard), else the cluster the server runs on, else $RAY_ADDRESS; a
    ClusterError when there is none."""
    address = (os.environ.get("RAY_API_SERVER_ADDRESS") or connected_dashboard()
               or os.environ.get("RAY_ADDRESS"))
    if not address:
        raise ClusterError("this server runs on no Ray cluster with a Jobs API (dashboard) to train on: serve it "
                           "with `deeptrain serve` on the cluster, or set RAY_API_SERVER_ADDRESS to the dashboard")
    return address


def connect(address: str | None, timeout_s: float):
    """A ``JobSubmissionClient`` for the cluster, or a ClusterError naming the address, within ``timeout_s``
    (``Settings.cluster_connect_timeout_s``).

    The TCP probe first: Ray's client waits for the operating system's connect timeout
    (minutes) on an address that does not answer. Token authentication (``RAY_AUTH_MODE``,
    ``RAY_AUTH_TOKEN``) is Ray's own, as for ``ray job submit``.
    """
    from ray.job_submission import JobSubmissionClient

    url = dashboard_address(address)
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (getattr(exc, "strerror", None) or exc)
        raise ClusterError(f"cannot reach the Ray cluster at {url}: {reason}") from None
    try:
        return JobSubmissionClient(url)
    except Exception as exc:
        raise ClusterError(f"no Ray Jobs API at {url}: {exc} (Ray Jobs go to the head's dashboard, port 8265 by "
                           "default, not to the GCS port 6379)") from None
