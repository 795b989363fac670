"""A real multi-node Ray cluster on this machine, for tests: ``ray start`` processes on loopback.

    with local_ray_cluster({"VAR": "value"}) as cluster:    # head on 127.0.0.2, 2 CPUs
        node = cluster.add_node(num_cpus=2, resources={"node2": 1})   # on 127.0.0.3
        cluster.dashboard_url                               # http://127.0.0.2:PORT (Ray Jobs)
        cluster.kill_node(node)                             # a node lost: SIGKILL to its processes
        cluster.add_node(...)                               # resources come back

Every node is one ``ray start --block`` in its own process group (tests.servers' spawn:
its processes die with the test, PR_SET_PDEATHSIG) with its own ``--temp-dir`` and free
ports, so it never collides with the session's in-process cluster nor with anyone's
/tmp/ray, and stopping it kills exactly its own processes: its process group, then any
process still naming its temp dir (no ``ray stop``, which would kill every Ray on the
machine). Each node has a loopback IP of its own, 127.0.0.2, 127.0.0.3, ...: ``ray start``
replaces 127.0.0.1 (and ``localhost``) by the machine's network address, not these.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.servers import _spawn, _stop

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP = "127.0.0.2"
START_TIMEOUT = 120.0


_handed_out: set[int] = set()


def free_port() -> int:
    """A free port never handed out before in this process.

    The OS may return a port again once its probe socket is closed; Ray refuses to start
    when two of its components are given the same number, so remember every one given.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _port_args() -> list[str]:
    return [arg for name in ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                             "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
            for arg in (f"--{name}", str(free_port()))]


@dataclass
class RayNode:
    name: str
    temp_dir: Path
    proc: subprocess.Popen
    node_id: str | None = None


@dataclass
class LocalRayCluster:
    root: Path
    env: dict[str, str]
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: list[RayNode] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)  # ids of killed nodes (the cluster may still list them)

    @property
    def gcs_address(self) -> str:
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    def _start(self, name: str, args: list[str]) -> RayNode:
        started = len(list(self.root.glob("*.log")))
        temp_dir = self.root / f"{name}-{started:02d}"
        temp_dir.mkdir(parents=True)
        cmd = [RAY, "start", "--block", "--disable-usage-stats", "--temp-dir", str(temp_dir),
               "--node-ip-address", f"127.0.0.{started + 2}", "--object-store-memory", str(150 * 2**20),
               *args, *_port_args()]
        # cwd: not this checkout, which `python -m` in the job would import before the shipped code
        proc = _spawn(cmd, self.root / f"{temp_dir.name}.log", env=self.env, cwd=temp_dir)
        node = RayNode(name, temp_dir, proc)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: float, resources: dict[str, float] | None = None) -> RayNode:
        node = self._start("head", ["--head", "--port", str(self.gcs_port), "--dashboard-host", HEAD_IP,
                                    "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port",
                                    str(free_port()), "--num-cpus", str(num_cpus),
                                    "--resources", json.dumps(resources or {})])
        return self._wait_for(node)

    def add_node(self, num_cpus: float, resources: dict[str, float] | None = None, name: str = "node") -> RayNode:
        node = self._start(name, ["--address", self.gcs_address, "--num-cpus", str(num_cpus),
                                  "--resources", json.dumps(resources or {})])
        return self._wait_for(node)

    def alive_nodes(self) -> list:
        """Ray's NodeState of the live nodes (node_id, resources_total, ...), from the dashboard."""
        from ray.util.state import list_nodes

        return list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)

    def wait_until_idle(self, timeout: float = 180) -> None:
        """Wait until no placement group holds the cluster's CPUs (a stopped job's worker group is released
        asynchronously: on a slow machine the next job's workers could otherwise wait for them past their
        start timeout)."""
        from ray.util.state import list_placement_groups

        deadline, held = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            held = [g.placement_group_id for g in list_placement_groups(address=self.dashboard_url,
                                                                       raise_on_missing_output=False)
                    if g.state in ("PENDING", "CREATED", "RESCHEDULING")]
            if not held:
                return
            time.sleep(1)
        raise RuntimeError(f"placement groups still hold the cluster after {timeout:.0f}s: {held}")

    def _wait_for(self, node: RayNode) -> RayNode:
        """Wait until the node is ALIVE in the cluster (read from the dashboard) and learn its id."""
        deadline = time.monotonic() + START_TIMEOUT
        known = {n.node_id for n in self.nodes if n.node_id} | self.lost
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray start for {node.name} exited {node.proc.returncode}: "
                                   + (self.root / f"{node.temp_dir.name}.log").read_text()[-3000:])
            try:
                fresh = [n for n in self.alive_nodes() if n.node_id not in known]
            except Exception:  # dashboard not up yet
                fresh = []
            if fresh:
                node.node_id = fresh[0].node_id
                return node
            time.sleep(0.5)
        raise RuntimeError(f"{node.name} did not join the Ray cluster in {START_TIMEOUT:.0f}s")

    def kill_node(self, node: RayNode) -> None:
        """SIGKILL every process of the node (a lost machine)."""
        _stop(node.proc, signal.SIGKILL, timeout=5)
        _kill_naming(node.temp_dir)
        self.nodes.remove(node)
        self.lost.add(node.node_id)

    def shutdown(self) -> None:
        for node in reversed(list(self.nodes)):
            _stop(node.proc, signal.SIGTERM, timeout=10)
            _kill_naming(node.temp_dir)
        self.nodes.clear()


def _kill_naming(temp_dir: Path) -> None:
    """Kill processes whose command line names the node's temp dir (workers that left its group)."""
    needle = str(temp_dir).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, ProcessLookupError):
            if needle in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)


def cluster_env(root: Path, overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """Environment of the cluster's processes: this Python first on PATH (the job's ``python``),
    no RAY_ADDRESS of another cluster, Ray's temp files under ``root``, and no token
    authentication (Ray turns it on when ~/.ray/auth_token exists; clients here send none).
    ``overrides``: variables to set, or to remove (None)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER", "RAY_AUTH"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_TMPDIR"] = str(root)
    env["RAY_AUTH_MODE"] = "disabled"
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@contextlib.contextmanager
def local_ray_cluster(env: dict[str, str | None] | None = None, head_cpus: float = 2,
                      head_resources: dict[str, float] | None = None) -> Iterator[LocalRayCluster]:
    """A head node (more with ``add_node``), all stopped and their files removed at the end.

    The files live in a short /tmp path of their own: Ray's Unix sockets under a node's
    temp dir must stay within 107 bytes, which pytest's tmp_path does not guarantee.
    """
    root = Path(tempfile.mkdtemp(prefix="dt-ray-"))
    cluster = LocalRayCluster(root, cluster_env(root, env))
    try:
        cluster.start_head(head_cpus, head_resources)
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)
