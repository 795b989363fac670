"""What ``bench/serve_bench.py`` drives its servers with: Debian's ``wrk`` (C, one thread, a Lua script that
posts prepared JSON bodies in turn), the no-op Serve app (the ceiling), and py-spy profiles of the replicas.

``wrk`` keeps ``concurrency`` connections busy for ``seconds`` (a fixed time, so the number of requests is
bounded by the server's rate) and prints its own summary as one JSON line (``done``). Its CPU time is read from the
kernel's accounting of this process's children, so the bench can report the share of the cores the load
generator took from the server.
"""

# no `from __future__ import annotations`: Serve rewrites the no-op ingress's route signatures, and FastAPI
# does not resolve string annotations there (serve/app.py says the same)
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI, Request

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Key %(key)s"
local bodies = { %(bodies)s }
local sent = 0
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d, "mean_us": %%.1f}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench/serve_bench.py drives the server with wrk: apt-get install -y wrk")
    return found


def wrk(url: str, path: str, key: str, bodies: list[str], concurrency: int, seconds: float) -> dict:
    """One load level: successful responses per second, p50/p99 ms, errors, and wrk's share of the cores."""
    quoted = ", ".join(f"[==[{b}]==]" for b in bodies)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT % {"key": key, "bodies": quoted})
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([require_wrk(), "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
                               "--timeout", "120s", "-s", str(script), url + path],
                              capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON "))
    summary = json.loads(line[len("WRKJSON "):])
    ok = summary["requests"] - summary["status_errors"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"concurrency": concurrency, "requests": ok, "errors": summary["status_errors"] + summary["socket_errors"],
            "seconds": summary["duration_us"] / 1e6, "rps": ok / (summary["duration_us"] / 1e6),
            "p50_ms": summary["p50_us"] / 1000, "p99_ms": summary["p99_us"] / 1000,
            "mean_ms": summary["mean_us"] / 1000,
            "generator_cpu_share": cpu / wall / os.cpu_count()}


def noop_app(predictor_cpus: float, one_hop: bool = False):
    """The real app's shape (FastAPI ingress with its actor options -> one handle call per request to a
    second deployment with the Predictor's; with ``one_hop`` the ingress alone, reserving the Predictor's CPUs,
    as ``build_app(model_in_gateway=True)``), doing no work at all: the ceiling of any model behind it."""
    from ray import serve

    from deeptrain.config import Settings
    from serve.app import Gateway, Predictor, replica_env

    api = FastAPI()
    env = replica_env(Settings.from_env())

    @serve.deployment(ray_actor_options={"num_cpus": predictor_cpus, "runtime_env": env},
                      max_ongoing_requests=Predictor.max_ongoing_requests)
    class NoopPredictor:
        async def predict_many(self, sizes: list[int]) -> list[int]:
            return sizes

    cpus = predictor_cpus if one_hop else Gateway.ray_actor_options["num_cpus"]

    @serve.deployment(ray_actor_options={"num_cpus": cpus, "runtime_env": env},
                      max_ongoing_requests=Gateway.max_ongoing_requests)
    @serve.ingress(api)
    class NoopGateway:
        def __init__(self, predictor=None) -> None:
            self.predictor = predictor

        @api.post("/v2/apps/{app_id}/models/{model_id}/outputs")
        async def outputs(self, app_id: str, model_id: str, request: Request) -> dict:
            body = await request.json()
            sizes = [len(i["data"]["image"]["base64"]) for i in body["inputs"]]
            if self.predictor is None:
                return {"outputs": sizes}
            return {"outputs": await self.predictor.predict_many.remote(sizes)}

    return NoopGateway.bind() if one_hop else NoopGateway.bind(NoopPredictor.bind())


def cpu_snapshot() -> dict:
    """CPU seconds so far of every process by pid (with the part of its title that names it), and the machine's
    idle seconds: two snapshots around a level give where the cores went (``cpu_shares``)."""
    import psutil

    procs = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            procs[proc.info["pid"]] = (" ".join(proc.info["cmdline"] or [])[:120], times.user + times.system)
    return {"procs": procs, "idle": psutil.cpu_times().idle, "at": time.perf_counter()}


def cpu_shares(before: dict, after: dict, forward_cpu_s: float | None = None) -> dict[str, float]:
    """Where the machine's cores went between two ``cpu_snapshot``s, as shares of all of them: the Serve
    replicas (``forwards``: the CPU the Predictor's counter says its forward passes took, decode included;
    ``replica other``: the rest of those processes, Ray Serve's request handling and ours), the HTTP proxy,
    the rest of Ray (controller, GCS, raylet, agents, the bench's driver) and idle; wrk (started and gone
    in between) is the level's ``generator_cpu_share``."""
    total = (after["at"] - before["at"]) * (os.cpu_count() or 1)
    groups = {"replicas": 0.0, "proxy": 0.0, "ray and the rest": 0.0}
    for pid, (title, cpu) in after["procs"].items():
        if pid not in before["procs"]:
            continue
        used = cpu - before["procs"][pid][1]
        group = ("replicas" if "ServeReplica" in title else "proxy" if any(
            name in title for name in ("ProxyActor", "HAProxyManager", "haproxy")) else "ray and the rest")
        groups[group] += used
    shares = {name: used / total for name, used in groups.items()}
    if forward_cpu_s is not None:
        shares["forwards"] = forward_cpu_s / total
        shares["replica other"] = shares.pop("replicas") - shares["forwards"]
    shares["idle"] = (after["idle"] - before["idle"]) / total
    return shares


def replica_pids() -> dict[str, int]:
    """The PIDs of the live Serve actors (proxy, gateway, predictor), by the process titles Ray gives them."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith("ray::") and ("ServeReplica" in title or "ProxyActor" in title):
            found[title.split()[0].removeprefix("ray::")] = proc.info["pid"]
    return found


def profile(seconds: float, out: Path) -> list[subprocess.Popen]:
    """py-spy (raw collapsed stacks) on every Serve actor for ``seconds``: start it, run the load, ``wait``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                              "--rate", "200", "--format", "raw", "--nonblocking", "--nolineno", "--output",
                              str(out / f"{name.replace(':', '_')}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in replica_pids().items()]


def top_frames(stacks: Path, n: int = 8) -> dict[str, list[tuple[str, float]]]:
    """Where a replica's busy samples went (py-spy raw file; idle waits left out): the ``n`` leaf frames with
    the largest share ("self"), and deeptrain's and serve's own frames by inclusive share ("ours")."""
    leaf: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    idle = ("select (selectors.py", "_worker (concurrent", "wait (threading.py", "epoll", "_run_once (asyncio",
            "main_loop (ray", "run_forever")
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, weight = stack.split(";"), int(count)
        if any(marker in frames[-1] for marker in idle):
            continue
        total += weight
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + weight
        for frame in set(frames):
            where = frame[frame.rfind("(") + 1:]
            if where.startswith(("deeptrain/", "serve/")) or "/deeptrain/" in where or "/work/" in where:
                inclusive[frame] = inclusive.get(frame, 0) + weight

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, c / max(1, total)) for f, c in sorted(counts.items(), key=lambda fc: -fc[1])[:n]]

    return {"busy_samples": total, "self": ranked(leaf), "ours": ranked(inclusive)}


def warm(url: str, path: str, key: str, bodies: list[str], n: int = 8) -> None:
    """A few requests before a level: connections open, the version loaded."""
    import httpx

    async def go() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Key {key}",
                                                            "Content-Type": "application/json"}, timeout=120) as http:
            for body in bodies[:n]:
                (await http.post(path, content=body)).raise_for_status()

    asyncio.run(go())
