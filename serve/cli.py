"""``deeptrain serve``: run the HTTP API on Ray Serve, or show its status.

Registered as a ``deeptrain.cli`` entry point so that ``deeptrain`` itself never
imports this package.
"""

from __future__ import annotations

import os
import time

import typer

from deeptrain.cli.output import JsonOption, emit, stderr, stdout

serve_app = typer.Typer(help="Serve predictions over HTTP (Ray Serve).", invoke_without_command=True)


@serve_app.callback()
def serve_main(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface the HTTP proxy listens on."),
    port: int = typer.Option(8000, min=1, max=65535, help="HTTP port."),
    replicas: int = typer.Option(1, min=1, help="Predictor replicas (each loads versions on demand)."),
    predictor_cpus: float = typer.Option(0.5, min=0, help="CPUs reserved per predictor replica."),
    model_in_gateway: bool = typer.Option(False, help=(
        "Run the model in the HTTP gateway's replicas (one hop from the proxy instead of two: no image bytes "
        "copied between processes); --replicas and --predictor-cpus then size the gateway.")),
    ingress: str = typer.Option("proxy", help=(
        "What takes HTTP on --port: 'proxy' (Ray Serve's HTTP proxy actor) or 'haproxy' (HAProxy, forwarding "
        "straight to the gateway replica: up to 9x the requests/s of a no-op app on 2 cores; its stats and "
        "metrics ports listen on every interface). 'haproxy' starts this command's own local Ray, or needs a "
        "cluster started with RAY_SERVE_ENABLE_HA_PROXY=1.")),
    grpc_port: int = typer.Option(0, min=0, max=65535, help=(
        "Also serve Clarifai's V2 gRPC service on this port (18080 is the Clarifai client's default; "
        "0: no gRPC). Ray Serve's gRPC proxy listens on every interface, whatever --host says.")),
):
    """Run the API until Ctrl-C (``deeptrain serve status`` shows a running one)."""
    if ctx.invoked_subcommand is not None:
        return
    from deeptrain.config import Settings
    from serve.app import start, stop
    from serve.ingress import stats_ports

    url = start(Settings.from_env(), host, port, grpc_port=grpc_port or None, ingress=ingress,
                predictor_replicas=replicas, predictor_cpus=predictor_cpus, model_in_gateway=model_in_gateway)
    stderr.print(f"deeptrain API on [bold]{url}[/]  (OpenAPI: {url}/docs, health: {url}/healthz); Ctrl-C stops it")
    if ingress == "haproxy":
        ports = stats_ports()
        stderr.print(f"HAProxy ingress; its stats page on port {ports['stats']} (/stats) and Prometheus metrics on "
                     f"port {ports['metrics']} listen on every interface: keep them behind the firewall")
    if grpc_port:
        stderr.print(f"Clarifai gRPC (clarifai.api.V2) on port [bold]{grpc_port}[/] of every interface")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stderr.print("stopping")
        stop()


@serve_app.command("status")
def serve_status(json: bool = JsonOption):
    """Applications and deployments of the Serve instance on RAY_ADDRESS (or the local cluster)."""
    import ray
    from ray import serve

    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), logging_level="ERROR", log_to_driver=False)
    status = serve.status()
    doc = {name: {"status": str(a.status), "message": a.message,
                  "deployments": {d: {"status": str(s.status), "replicas": s.replica_states}
                                  for d, s in a.deployments.items()}}
           for name, a in status.applications.items()}

    def render(d):
        if not d:
            stdout.print("no Serve application is running")
        for name, a in d.items():
            stdout.print(f"[bold]{name}[/]: {a['status']} {a['message']}")
            for dep, s in a["deployments"].items():
                stdout.print(f"  {dep}: {s['status']} replicas {s['replicas']}")

    emit(doc, json, render)
