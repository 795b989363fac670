"""Offline checks of the deployment files: k8s/ (KubeRay) and cluster/ (image, Ray launcher).

- k8s/*.yaml are exactly what k8s/render.py makes of k8s/values.yaml;
- every document validates against its schema: the KubeRay 1.4.2 CRDs' openAPIV3Schema
  (tests/data/kuberay/) or the Kubernetes core/v1 ConfigMap/Secret schemas
  (tests/data/k8s/), walked strictly: a property the schema does not declare is an error
  unless the schema says x-kubernetes-preserve-unknown-fields (as `kubectl apply
  --validate=strict` does; the API server would otherwise drop it silently);
- the validation can fail: mutated manifests (typos, wrong types) are rejected;
- the commands the manifests and the image run are real `deeptrain` commands;
- the RayService's Serve config is serve/config.yaml and a valid Serve deploy config;
- cluster/ray-cluster.yaml passes the Ray cluster launcher's own config validation.
No network, no cluster.
"""

from __future__ import annotations

import ast
import copy
import functools
import gzip
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CLUSTER = ROOT / "cluster"
DATA = Path(__file__).resolve().parent / "data"

CRDS = {
    ("ray.io/v1", "RayCluster"): "rayclusters.v1.json.gz",
    ("ray.io/v1", "RayJob"): "rayjobs.v1.json.gz",
    ("ray.io/v1", "RayService"): "rayservices.v1.json.gz",
}
CORE = {("v1", "ConfigMap"), ("v1", "Secret")}
EXPECTED_KINDS = {
    "config.yaml": ["ConfigMap", "Secret"],
    "raycluster.yaml": ["RayCluster"],
    "rayjob-train.yaml": ["RayJob"],
    "rayservice.yaml": ["RayService"],
}


# --- schema conversion: Kubernetes structural schema -> strict JSON Schema -------------------

_CEL_IN = re.compile(r"^self in \[(.*)\]$")
_CEL_TRANSITION = "self == oldSelf"  # needs the stored object: nothing to check offline


def _cel_enum(rule: str) -> list[str] | None:
    match = _CEL_IN.match(rule.strip())
    if not match:
        return None
    return [ast.literal_eval(item.strip()) for item in match.group(1).split(",")]


def strict_schema(node):
    """JSON Schema that accepts what the API server keeps of an object, and nothing else.

    Kubernetes prunes fields its structural schemas do not declare; here they are errors,
    except under x-kubernetes-preserve-unknown-fields. x-kubernetes-int-or-string allows
    an integer or a string, nullable adds null, x-kubernetes-embedded-resource adds
    apiVersion/kind/metadata, list-type set items are unique, and CEL rules of the form
    ``self in [...]`` become enums (transition rules ``self == oldSelf`` are skipped).
    """
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [strict_schema(sub) for sub in value]
        elif key == "x-kubernetes-validations":
            for rule in value:
                enum = _cel_enum(rule["rule"])
                if enum is not None:
                    out.setdefault("allOf", []).append({"enum": enum})
                elif rule["rule"].strip() != _CEL_TRANSITION:
                    raise AssertionError(f"CEL rule this test cannot evaluate: {rule['rule']!r}")
        elif key not in ("nullable", "default"):
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "additionalProperties" not in out and ("properties" in out or out.get("type") == "object"):
        if not preserve:
            out["additionalProperties"] = False
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _list_map_keys(validator, keys, instance, schema):
    """x-kubernetes-list-type: map: no two items with the same key fields (defaults filled)."""
    if not validator.is_type(instance, "array"):
        return
    props = schema.get("items", {}).get("properties", {})
    seen = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(
                f"items {seen[key]} and {index} have the same {'/'.join(keys)} {key!r}")
        seen.setdefault(key, index)


KubeValidator = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                              {"x-kubernetes-list-map-keys": _list_map_keys})


@functools.lru_cache(maxsize=None)
def _core_definitions() -> dict:
    return json.loads((DATA / "k8s" / "core-v1.json").read_text())["definitions"]


@functools.lru_cache(maxsize=None)
def validator_for(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    definitions = _core_definitions()
    if (api_version, kind) in CORE:
        schema = {"definitions": definitions, "$ref": f"#/definitions/{kind}"}
    elif (api_version, kind) in CRDS:
        vendored = json.loads(gzip.decompress((DATA / "kuberay" / CRDS[api_version, kind]).read_bytes()))
        assert vendored["kind"] == kind and f"{vendored['group']}/{vendored['version']}" == api_version
        schema = strict_schema(vendored["openAPIV3Schema"])
        # the API server validates every object's metadata as ObjectMeta; CRDs just say "object"
        schema["properties"]["metadata"] = {"$ref": "#/definitions/ObjectMeta"}
        schema["definitions"] = definitions
    else:
        raise KeyError(f"no schema for apiVersion {api_version!r} kind {kind!r}")
    KubeValidator.check_schema(schema)
    return KubeValidator(schema)


def schema_errors(doc: dict) -> list[str]:
    """Every violation in one manifest document, as 'path: message'."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return ["not a Kubernetes object (apiVersion and kind are required)"]
    try:
        validator = validator_for(doc["apiVersion"], doc["kind"])
    except KeyError as exc:
        return [str(exc)]
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator.iter_errors(doc)]
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        errors.append(f"metadata/name: {name!r} is not a DNS-1035 label")
    for field in ("data", "stringData"):
        for key in (doc.get(field) or {}) if doc["kind"] in ("ConfigMap", "Secret") else ():
            if not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
                errors.append(f"{field}: key {key!r} is not a valid ConfigMap/Secret key")
    return errors


# --- the manifests ---------------------------------------------------------------------------

def _load_render():
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


@functools.lru_cache(maxsize=None)
def _docs(name: str) -> tuple:
    return tuple(d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None)


def docs(name: str) -> list[dict]:
    return copy.deepcopy(list(_docs(name)))


def all_docs() -> list[dict]:
    return [doc for name in sorted(render.MANIFESTS) for doc in docs(name)]


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    spec = doc["spec"]
    cluster = {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"),
               "RayService": spec.get("rayClusterConfig")}.get(doc["kind"])
    if cluster is None:
        return []
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
    return [(name, g["template"]["spec"]) for name, g in groups]


def values() -> dict:
    return render.load_values()


def test_manifests_are_rendered_from_values():
    rendered = render.render()
    on_disk = {p.name for p in K8S.glob("*.yaml")} | {p.name for p in K8S.glob("*.yml")}
    assert on_disk == set(rendered) | {"values.yaml"}, "every manifest in k8s/ comes from render.py"
    for name, text in rendered.items():
        assert (K8S / name).read_text() == text, f"k8s/{name} is stale: run python k8s/render.py"
    assert render.main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_manifest_documents_validate(name):
    documents = docs(name)
    assert [d["kind"] for d in documents] == EXPECTED_KINDS[name]
    for doc in documents:
        assert schema_errors(doc) == [], f"k8s/{name} {doc['kind']}"


def test_kuberay_schema_versions():
    v = values()
    assert re.fullmatch(r"1\.4\.\d+", str(v["kuberay_version"]))
    for (api_version, kind), file in CRDS.items():
        vendored = json.loads(gzip.decompress((DATA / "kuberay" / file).read_bytes()))
        assert f"kuberay v{v['kuberay_version']} " in vendored["source"]
    for doc in all_docs():
        assert doc["apiVersion"] in {"v1", "ray.io/v1"}


def _ray_pin() -> str:
    """The Ray version the lock pins (pyproject.toml has the range, constraints.txt the exact version)."""
    return re.search(r"^ray==([0-9.]+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)


def test_manifests_are_consistent():
    v = values()
    config, secret = docs("config.yaml")
    assert config["data"]["DEEPTRAIN_STORAGE"].startswith("s3://")
    assert secret["stringData"]["DEEPTRAIN_DATABASE_URL"].startswith("postgresql://")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    assert not {"DEEPTRAIN_DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"} & set(config["data"])
    image = v["image"]
    cpu_image, gpu_image = f"{image['repository']}:{image['tag']}", f"{image['repository']}:{image['gpu_tag']}"
    assert str(v["ray_version"]) == _ray_pin()
    clusters = [d for d in all_docs() if d["kind"].startswith("Ray")]
    assert {d["kind"] for d in clusters} == {"RayCluster", "RayJob", "RayService"}
    for doc in clusters:
        cluster = {"RayCluster": doc["spec"], "RayJob": doc["spec"].get("rayClusterSpec"),
                   "RayService": doc["spec"].get("rayClusterConfig")}[doc["kind"]]
        assert cluster["rayVersion"] == _ray_pin()
        assert cluster["enableInTreeAutoscaling"] is True
        for group in cluster["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        gpu_groups = [g["groupName"] for g in cluster["workerGroupSpecs"]
                      if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
        assert gpu_groups and len(cluster["workerGroupSpecs"]) > len(gpu_groups), "a CPU and a GPU group"
        for group_name, pod in pod_specs(doc):
            (container,) = pod["containers"]
            gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
            assert container["image"] == (gpu_image if gpus else cpu_image), (doc["kind"], group_name)
            assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
            assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {"name": "serve", "containerPort": v["service"]["port"]} in head["ports"]
    names = [d["metadata"]["name"] for d in all_docs()]
    assert len(names) == len(set(names))


# --- Serve config of the RayService ----------------------------------------------------------

def test_rayservice_serves_the_serve_config():
    (service,) = docs("rayservice.yaml")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve_config == yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())

    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)
    (app,) = serve_config["applications"]
    module, attr = app["import_path"].split(":")
    assert module == "serve.app"
    tree = ast.parse((ROOT / "serve" / "app.py").read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    deployments = {n.name for f in (ROOT / "serve").glob("*.py") for n in ast.parse(f.read_text()).body
                   if isinstance(n, ast.ClassDef) and any("serve.deployment" in ast.unparse(d) for d in n.decorator_list)}
    assert "from serve.predictor import Predictor" in (ROOT / "serve" / "app.py").read_text()
    assert attr in functions
    assert {d["name"] for d in app["deployments"]} <= deployments == {"Gateway", "Predictor"}


# --- commands: real deeptrain CLI commands ---------------------------------------------------

def _dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def _image_command() -> list[str]:
    text = _dockerfile()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    return entrypoint + cmd


def manifest_commands() -> list[list[str]]:
    """deeptrain command lines that the manifests and the image run."""
    (job,) = docs("rayjob-train.yaml")
    return [shlex.split(job["spec"]["entrypoint"]), _image_command()]


def _resolve(argv: list[str]):
    """Parse a command line with the real CLI without running it: (command path, params, leftover args)."""
    import typer

    from deeptrain.cli.main import app

    command, path, args = typer.main.get_command(app), ["deeptrain"], list(argv)
    while hasattr(command, "get_command") and args and args[0] in command.list_commands(None):
        path.append(args.pop(0))
        command = command.get_command(None, path[-1])
    ctx = command.make_context(" ".join(path), args)
    return path[1:], ctx.params, [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]


def test_manifest_commands_parse_with_the_cli():
    train, served = manifest_commands()
    assert train[0] == "deeptrain" and served[0] == "deeptrain"
    path, params, rest = _resolve(train[1:])
    v = values()["train"]
    assert path == ["models", "train"] and rest == []
    assert params["app"] == v["app"] and params["model"] == v["model"]
    assert params["workers"] == 2 and params["json"] is True
    path, params, rest = _resolve(served[1:])
    assert path == ["serve"] and rest == []
    assert params["host"] == "0.0.0.0" and params["port"] == values()["service"]["port"]
    with pytest.raises(Exception):  # the parse is strict enough to fail
        _resolve(["models", "train", "a", "m", "--worker", "2"])


def test_manifest_commands_exist():
    exe = Path(sys.executable).with_name("deeptrain")
    assert exe.exists(), "the deeptrain console script is installed next to the interpreter"
    prefixes = {tuple(_resolve(argv[1:])[0]) for argv in manifest_commands()}
    assert prefixes == {("models", "train"), ("serve",)}
    for prefix in sorted(prefixes):
        run = subprocess.run([str(exe), *prefix, "--help"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (prefix, run.stdout, run.stderr)
        assert "Usage: deeptrain " + " ".join(prefix) in " ".join(run.stdout.split())


# --- the validation can fail -----------------------------------------------------------------

def _cluster(doc):
    return {"RayCluster": doc["spec"], "RayJob": doc["spec"].get("rayClusterSpec"),
            "RayService": doc["spec"].get("rayClusterConfig")}[doc["kind"]]


def _rename(mapping, old, new):
    mapping[new] = mapping.pop(old)


def _worker(doc, i=0):
    return _cluster(doc)["workerGroupSpecs"][i]


def _container(doc, i=0):
    return _worker(doc, i)["template"]["spec"]["containers"][0]


MUTATIONS = {
    # name: (file, document index, mutation, text expected in an error)
    "workerGroupSpec typo": ("raycluster.yaml", 0,
                             lambda d: _rename(d["spec"], "workerGroupSpecs", "workerGroupSpec"), "workerGroupSpec"),
    "replicas as a string": ("raycluster.yaml", 0, lambda d: _worker(d).update(replicas="2"), "'2' is not of type"),
    "rayStartParams value not a string": (
        "raycluster.yaml", 0, lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
        "is not of type 'string'"),
    "missing groupName": ("rayjob-train.yaml", 0, lambda d: _worker(d).pop("groupName"), "'groupName' is a required"),
    "bad cpu quantity": ("rayservice.yaml", 0,
                         lambda d: _container(d)["resources"]["limits"].update(cpu="two"), "does not match"),
    "gpu limit as a float": ("raycluster.yaml", 0,
                             lambda d: _container(d, 1)["resources"]["limits"].update({"nvidia.com/gpu": 1.5}),
                             "is not of type"),
    "container field typo": ("rayservice.yaml", 0,
                             lambda d: _rename(_container(d), "imagePullPolicy", "imagePullpolicy"),
                             "imagePullpolicy"),
    "pod spec without containers": ("raycluster.yaml", 0,
                                    lambda d: d["spec"]["headGroupSpec"]["template"]["spec"].pop("containers"),
                                    "'containers' is a required"),
    "duplicate container port": ("raycluster.yaml", 0,
                                 lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
                                 .append({"name": "again", "containerPort": 6379}), "same containerPort/protocol"),
    "RayJob field typo": ("rayjob-train.yaml", 0, lambda d: _rename(d["spec"], "entrypoint", "entryPoint"),
                          "entryPoint"),
    "RayJob bad deletionPolicy (CEL enum)": ("rayjob-train.yaml", 0,
                                             lambda d: d["spec"].update(deletionPolicy="DeleteEverything"),
                                             "is not one of"),
    "serveConfigV2 as a mapping": ("rayservice.yaml", 0,
                                   lambda d: d["spec"].update(serveConfigV2={"applications": []}), "is not of type"),
    "metadata typo": ("rayservice.yaml", 0, lambda d: _rename(d["metadata"], "labels", "lables"), "lables"),
    "bad resource name": ("raycluster.yaml", 0, lambda d: d["metadata"].update(name="Deeptrain_Cluster"),
                          "DNS-1035"),
    "ConfigMap value not a string": ("config.yaml", 0, lambda d: d["data"].update(AWS_REGION=1), "is not of type"),
    "ConfigMap bad key": ("config.yaml", 0, lambda d: d["data"].update({"bad key": "x"}), "not a valid"),
    "Secret stringData typo": ("config.yaml", 1, lambda d: _rename(d, "stringData", "stringdata"), "stringdata"),
    "Secret wrong apiVersion kind pair": ("config.yaml", 1, lambda d: d.update(apiVersion="v2"), "no schema"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_broken_manifest_fails_validation(case):
    file, index, mutate, expected = MUTATIONS[case]
    doc = docs(file)[index]
    assert schema_errors(doc) == []
    mutate(doc)
    errors = schema_errors(doc)
    assert errors, f"{case}: the broken manifest validated"
    assert any(expected in e for e in errors), errors


def test_strict_schema_keywords():
    schema = {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        "maybe": {"type": "string", "nullable": True},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "embedded": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "x-kubernetes-preserve-unknown-fields": True},
    }}
    validator = KubeValidator(strict_schema(schema))
    ok = [{"port": 8000}, {"port": "http"}, {"free": {"anything": {"goes": [1]}}}, {"closed": {"a": "x"}},
          {"maybe": None}, {"tags": ["a", "b"]}, {"embedded": {"apiVersion": "v1", "kind": "Pod", "spec": {}}}]
    bad = [{"port": 1.5}, {"port": True}, {"port": [1]}, {"closed": {"a": "x", "b": 1}}, {"unknown": 1},
           {"maybe": 1}, {"tags": ["a", "a"]}, {"embedded": {"kind": 1}}]
    for instance in ok:
        assert list(validator.iter_errors(instance)) == [], instance
    for instance in bad:
        assert list(validator.iter_errors(instance)), instance


def test_vendored_schemas_only_use_understood_cel_rules():
    for api_version, kind in CRDS:
        validator_for(api_version, kind)  # strict_schema raises on a rule it cannot evaluate


# --- cluster/: image and Ray cluster launcher ------------------------------------------------

def test_dockerfile_uses_the_pinned_ray_image():
    text = _dockerfile()
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", text, re.M).group(1)
    assert base == f"rayproject/ray:{_ray_pin()}-py312"
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$", text, re.M)
    assert f"rayproject/ray:{_ray_pin()}-py312-gpu" in text
    assert re.search(r"^RUN pip install [^\n]*\.( |$)", text, re.M)
    assert _image_command()[0] == "deeptrain"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".deeptrain", ".demo", ".bench", ".git"} <= set(ignored)
    assert any("__pycache__" in line for line in ignored)


def test_ray_cluster_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    import ray.autoscaler

    raw = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)            # as written (top level and docker are closed)
    validate_config(prepare_config(raw))        # as `ray up` fills it in
    assert raw["provider"]["type"] == "local"
    v = values()
    assert raw["docker"]["image"] == f"{v['image']['repository']}:{v['image']['tag']}"
    run_options = " ".join(raw["docker"]["run_options"])
    assert "--entrypoint=/usr/bin/env" in run_options  # the image's ENTRYPOINT is deeptrain
    assert "DEEPTRAIN_STORAGE=s3://" in run_options and "--env-file=" in run_options
    assert any("ray start --head" in c for c in raw["head_start_ray_commands"])
    assert any("ray start --address=" in c for c in raw["worker_start_ray_commands"])
    readme = (CLUSTER / "README.md").read_text()
    for name in ("DEEPTRAIN_STORAGE", "DEEPTRAIN_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_ENDPOINT_URL", "RAY_ADDRESS", "ray start --head", "ray start --address"):
        assert name in readme
