"""Write the KubeRay manifests of this folder from ``k8s/values.yaml`` (stdlib + PyYAML only).

    python k8s/render.py            # rewrite config.yaml, raycluster.yaml, rayjob-train.yaml, rayservice.yaml
    python k8s/render.py --check    # exit 1 when a checked-in manifest differs from its rendering

One head and worker-group definition is shared by the RayCluster, the RayJob's cluster and
the RayService's cluster, so image tags, environment and resources cannot drift apart.
The RayService's ``serveConfigV2`` is ``serve/config.yaml`` itself (parsed and re-dumped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VALUES = HERE / "values.yaml"
API_VERSION = "ray.io/v1"
HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001))


class _Dumper(yaml.SafeDumper):
    """Block style, indented sequences, multi-line strings as ``|`` literals."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def load_values(path: Path = VALUES) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _metadata(values: dict[str, Any], name: str) -> dict[str, Any]:
    return {"name": name, "labels": dict(values["labels"])}


def _container(values: dict[str, Any], name: str, *, cpu: str, memory: str, gpus: int = 0,
               ports: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
    image = values["image"]
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    container: dict[str, Any] = {
        "name": name,
        "image": f"{image['repository']}:{image['gpu_tag'] if gpus else image['tag']}",
        "imagePullPolicy": image["pull_policy"],
        "envFrom": [{"configMapRef": {"name": values["config"]["name"]}},
                    {"secretRef": {"name": values["secret"]["name"]}}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }
    if ports:
        container["ports"] = [{"name": n, "containerPort": p} for n, p in ports]
    return container


def cluster_spec(values: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec shared by raycluster.yaml, the RayJob and the RayService."""
    head = values["head"]
    ports = (*HEAD_PORTS, ("serve", values["service"]["port"]),
             *((("grpc", values["service"]["grpc_port"]),) if values["service"].get("grpc_port") else ()))
    workers = []
    for group in values["worker_groups"]:
        gpus = int(group.get("gpus", 0))
        pod: dict[str, Any] = {"containers": [_container(values, "ray-worker", cpu=group["cpu"],
                                                         memory=group["memory"], gpus=gpus)]}
        if gpus:
            pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        workers.append({
            "groupName": group["name"],
            "replicas": group["replicas"],
            "minReplicas": group["min_replicas"],
            "maxReplicas": group["max_replicas"],
            "template": {"metadata": {"labels": dict(values["labels"])}, "spec": pod},
        })
        if group.get("ray_start_params"):
            workers[-1]["rayStartParams"] = {str(k): str(v) for k, v in group["ray_start_params"].items()}
    return {
        "rayVersion": str(values["ray_version"]),
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"upscalingMode": values["autoscaler"]["upscaling_mode"],
                              "idleTimeoutSeconds": values["autoscaler"]["idle_timeout_seconds"]},
        "headGroupSpec": {
            "rayStartParams": {str(k): str(v) for k, v in head["ray_start_params"].items()},
            "template": {"metadata": {"labels": dict(values["labels"])},
                         "spec": {"containers": [_container(values, "ray-head", cpu=head["cpu"],
                                                            memory=head["memory"], ports=ports)]}},
        },
        "workerGroupSpecs": workers,
    }


def config_docs(values: dict[str, Any]) -> list[dict[str, Any]]:
    config, secret = values["config"], values["secret"]
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(values, config["name"]),
         "data": {k: str(v) for k, v in config["data"].items()}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": _metadata(values, secret["name"]),
         "type": "Opaque", "stringData": {k: str(v) for k, v in secret["string_data"].items()}},
    ]


def raycluster_docs(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": API_VERSION, "kind": "RayCluster",
             "metadata": _metadata(values, values["cluster_name"]), "spec": cluster_spec(values)}]


def train_entrypoint(values: dict[str, Any]) -> str:
    train = values["train"]
    return f"deeptrain models train {train['app']} {train['model']} --workers {int(train['workers'])} --json"


def rayjob_docs(values: dict[str, Any]) -> list[dict[str, Any]]:
    train = values["train"]
    return [{"apiVersion": API_VERSION, "kind": "RayJob", "metadata": _metadata(values, train["name"]),
             "spec": {"entrypoint": train_entrypoint(values),
                      "shutdownAfterJobFinishes": True,
                      "ttlSecondsAfterFinished": train["ttl_seconds_after_finished"],
                      "rayClusterSpec": cluster_spec(values)}}]


def serve_config(values: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load((ROOT / values["service"]["serve_config"]).read_text())


def rayservice_docs(values: dict[str, Any]) -> list[dict[str, Any]]:
    service = values["service"]
    return [{"apiVersion": API_VERSION, "kind": "RayService", "metadata": _metadata(values, service["name"]),
             "spec": {"serveConfigV2": yaml.dump(serve_config(values), Dumper=_Dumper, sort_keys=False),
                      "rayClusterConfig": cluster_spec(values)}}]


MANIFESTS = {
    "config.yaml": config_docs,
    "raycluster.yaml": raycluster_docs,
    "rayjob-train.yaml": rayjob_docs,
    "rayservice.yaml": rayservice_docs,
}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """File name -> text of every manifest."""
    values = load_values() if values is None else values
    header = (f"# Generated by k8s/render.py from k8s/values.yaml: edit those and re-run, not this file.\n"
              f"# KubeRay {values['kuberay_version']} (apiVersion {API_VERSION}), Ray {values['ray_version']}.\n")
    return {name: header + "---\n".join(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)
                                         for doc in build(values))
            for name, build in MANIFESTS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"out of date (run python k8s/render.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote k8s/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
