"""Inference in Clarifai's shapes, over HTTP and gRPC, read by the official client (``clarifai_grpc``).

In process, without Ray: the gateway's routes (``control_api`` + the NOT_IMPLEMENTED catalog) served by uvicorn
on loopback, and the gateway's gRPC methods (``serve/v2/grpc.py``) called directly, both in front of a stand-in
Predictor (fixed scores, so ``output_config`` is checked exactly) and a real faiss index. The same on a real
Ray Serve app with trained versions, through Ray Serve's gRPC proxy: ``tests/test_serve.py``.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time

import numpy as np
import pytest
from google.protobuf import json_format

from deeptrain.config import Settings
from deeptrain.services import apps as app_service
from deeptrain.services import concepts as concept_service
from deeptrain.services import keys as key_service
from deeptrain.services import models as model_service
from deeptrain.services import workflows as workflow_service
from deeptrain.services.context import Context
from tests import imagegen

pytest.importorskip("clarifai_grpc")
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel  # noqa: E402
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc  # noqa: E402

SCORES = {"cat": 0.6, "dog": 0.3, "bird": 0.1}
BOXES = [({"top_row": 0.1, "left_col": 0.1, "bottom_row": 0.5, "right_col": 0.5}, "cat", 0.9),
         ({"top_row": 0.2, "left_col": 0.3, "bottom_row": 0.9, "right_col": 0.8}, "dog", 0.4)]
VECTORS = {"near": [1.0, 0.0, 0.0], "mid": [0.6, 0.8, 0.0], "far": [0.0, 0.0, 1.0]}


class _Call:
    def __init__(self, value):
        self.value = value

    def __await__(self):
        return asyncio.sleep(0, self.value).__await__()

    def result(self, timeout_s=None):
        return self.value


class StandIn:
    """The Predictor's interface (``predict_many.remote(artifacts, images, ...)``), fixed answers."""

    def __init__(self, tasks: dict[str, str]):
        self.tasks = tasks  # artifacts -> task

    @property
    def predict_many(self):
        return type("M", (), {"remote": staticmethod(lambda artifacts, images, threshold, top_k, budget: _Call(
            [self.answer(self.tasks[artifacts], threshold, top_k) for _ in images]))})()

    @staticmethod
    def answer(task: str, threshold, top_k):
        if task == "classification":
            ranked = sorted(SCORES.items(), key=lambda cv: -cv[1])[:top_k or None]
            return {"concepts": [{"id": c, "value": v} for c, v in ranked]}
        if task == "detection":
            limit = 0.3 if threshold is None else threshold
            return {"regions": [{"bounding_box": b, "concept": c, "value": v} for b, c, v in BOXES if v > limit]}
        return {"embedding": VECTORS["near"]}


class Indexes:
    def __init__(self, index):
        self.index = index

    def get(self, ctx, app_id):
        return self.index


def _trained(ctx, model_id: str, task: str, template: str, concepts: list[str]) -> dict:
    model_service.create_model(ctx, "a1", model_id, task, template, {}, concepts)
    version = model_service.new_version(ctx, "a1", model_id, {}, "dv", concepts)
    return model_service.update_version(ctx, "a1", model_id, version["id"], status="trained")


def _index(artifacts: str):
    from deeptrain.search import SearchIndex, make_index, normalize

    ids = list(VECTORS)
    vectors = normalize(np.array([VECTORS[i] for i in ids], dtype=np.float32))
    rows = {k: {"input_id": i, "sha256": i, "concepts": ["cat"] if i != "far" else ["dog"]} for k, i in enumerate(ids)}
    manifest = {"model_id": "emb", "version_id": "v-emb", "artifacts": artifacts}
    return SearchIndex(manifest, make_index(vectors, np.arange(len(ids), dtype=np.int64), 10**6), rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An app with a classifier, a detector, an embedder, a workflow, keys; the gateway's services."""
    from serve.v2.state import Services

    ctx = Context.from_settings(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("grpc"))}))
    app_service.create_app(ctx, "a1")
    for cid, name in (("cat", "Cat"), ("dog", None), ("bird", "Bird")):
        concept_service.create_concept(ctx, "a1", cid, name)
    clf = _trained(ctx, "clf", "classification", "ResNext", ["cat", "dog", "bird"])
    det = _trained(ctx, "det", "detection", "InceptionV2", ["cat", "dog"])
    emb = _trained(ctx, "emb", "embedding", "ResNext", [])
    workflow_service.create_workflow(ctx, "a1", "flow", ["detect:det", "classify:clf"])
    tasks = {clf["artifacts"]: "classification", det["artifacts"]: "detection", emb["artifacts"]: "embedding"}
    svc = Services(ctx, StandIn(tasks), 30.0, Indexes(_index(emb["artifacts"])))
    keys = {scope: key_service.create_key(ctx, "a1", [scope])["key"] for scope in ("predict", "search", "train")}
    return svc, clf, keys


@pytest.fixture(scope="module")
def http_url(world):
    """The gateway's routes (no Ray) on loopback: what the official JSON client talks to."""
    import uvicorn

    from serve.v2 import catalog
    from serve.v2.control import control_api

    api = control_api(world[0])
    catalog.install(api)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


class Context_:
    """A gRPC call's context as Ray Serve hands it to the method: only the metadata is read."""

    def __init__(self, key: str | None):
        self.metadata = [] if key is None else [("authorization", f"Key {key}")]

    def invocation_metadata(self):
        return self.metadata


def grpc_call(svc, method: str, request, key: str | None):
    from serve.v2.grpc import GrpcMethods

    gateway = GrpcMethods()
    gateway.services, gateway.redact = svc, (lambda text: text)
    return asyncio.run(getattr(gateway, method)(request, grpc_context=Context_(key)))


def json_stub(url: str):
    return service_pb2_grpc.V2Stub(ClarifaiChannel.get_json_channel(base_url=url))


def _image(data: bytes | None = None) -> resources_pb2.Input:
    return resources_pb2.Input(id="in0", data=resources_pb2.Data(image=resources_pb2.Image(
        base64=data or imagegen.png_bytes())))


def _without_ids(message) -> dict:
    """A response as a dict, without the ids each answer draws anew (outputs', results', regions')."""
    doc = json_format.MessageToDict(message, preserving_proto_field_name=True)

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not (k == "id" and isinstance(v, str) and len(v) == 32)}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(doc)


def _config(**fields) -> resources_pb2.Model:
    return resources_pb2.Model(output_info=resources_pb2.OutputInfo(output_config=resources_pb2.OutputConfig(**fields)))


CONFIGS = [  # (model, output_config, expected (id, name) of the concepts / regions, in order)
    ("clf", {}, [("cat", "Cat"), ("dog", "dog"), ("bird", "Bird")]),
    ("clf", {"max_concepts": 2}, [("cat", "Cat"), ("dog", "dog")]),
    ("clf", {"min_value": 0.2}, [("cat", "Cat"), ("dog", "dog")]),
    ("clf", {"select_concepts": [resources_pb2.Concept(name="Bird"), resources_pb2.Concept(id="dog")]},
     [("dog", "dog"), ("bird", "Bird")]),
    ("clf", {"select_concepts": [resources_pb2.Concept(id="bird"), resources_pb2.Concept(id="dog")],
             "max_concepts": 1}, [("dog", "dog")]),
    ("det", {}, [("cat", "Cat"), ("dog", "dog")]),
    ("det", {"min_value": 0.5}, [("cat", "Cat")]),
    ("det", {"select_concepts": [resources_pb2.Concept(id="dog")]}, [("dog", "dog")]),
]


def _named(output) -> list[tuple[str, str]]:
    if output.data.regions:
        return [(r.data.concepts[0].id, r.data.concepts[0].name) for r in output.data.regions]
    return [(c.id, c.name) for c in output.data.concepts]


@pytest.mark.parametrize("model_id,config,expected", CONFIGS, ids=[f"{m}-{sorted(c)}" for m, c, _ in CONFIGS])
def test_output_config_over_http_and_grpc(world, http_url, model_id, config, expected):
    """select_concepts (by id or name, value ignored: the client sends 0.0), min_value, max_concepts; concepts
    carry their name; the JSON client parses the answer and gRPC answers the same."""
    svc, _, keys = world
    request = service_pb2.PostModelOutputsRequest(
        user_app_id=resources_pb2.UserAppIDSet(user_id="me", app_id="a1"), model_id=model_id,
        inputs=[_image()], model=_config(**config))
    stub = json_stub(http_url)
    over_http = stub.PostModelOutputs(request, metadata=(("authorization", f"Key {keys['predict']}"),))
    assert over_http.status.code == 10000, over_http.status
    assert _named(over_http.outputs[0]) == expected
    assert over_http.outputs[0].input.id == "in0" and over_http.outputs[0].model.id == model_id
    over_grpc = grpc_call(svc, "PostModelOutputs", request, keys["predict"])
    assert _without_ids(over_grpc) == _without_ids(over_http)


def test_every_path_form_answers_alike(world, http_url):
    """users/apps/short forms, app-less with an app key; the legacy body without user_app_id."""
    import httpx

    _, clf, keys = world
    body = {"inputs": [{"data": {"image": {"base64": base64.b64encode(imagegen.png_bytes()).decode()}}}],
            "user_app_id": {"user_id": "me", "app_id": "a1"}, "unknown": {"ignored": True}}
    headers = {"Authorization": f"Key {keys['predict']}"}
    answers = [httpx.post(http_url + path, json=body, headers=headers).json() for path in (
        f"/v2/users/me/apps/a1/models/clf/versions/{clf['id']}/outputs", "/v2/apps/a1/models/clf/outputs",
        "/v2/models/clf/outputs", f"/v2/models/clf/versions/{clf['id']}/outputs")]
    concepts = [[(c["id"], c["name"], c["value"]) for c in a["outputs"][0]["data"]["concepts"]] for a in answers]
    assert all(c == concepts[0] for c in concepts) and len(concepts[0]) == 3
    assert answers[0]["outputs"][0]["data"]["metadata"]["deeptrain"]["concepts"][0] == {"id": "cat", "value": 0.6}


def test_workflow_and_search_over_http_and_grpc(world, http_url):
    svc, _, keys = world
    stub = json_stub(http_url)
    flow = service_pb2.PostWorkflowResultsRequest(user_app_id=resources_pb2.UserAppIDSet(app_id="a1"),
                                                  workflow_id="flow", inputs=[_image()])
    auth = (("authorization", f"Key {keys['predict']}"),)
    over_http = stub.PostWorkflowResults(flow, metadata=auth)
    assert over_http.status.code == 10000, over_http.status
    detected, classified = over_http.results[0].outputs
    assert [o.model.id for o in (detected, classified)] == ["det", "clf"]
    assert [r.id for r in detected.data.regions] == [r.id for r in classified.data.regions]
    assert [c.name for c in classified.data.regions[0].data.concepts] == ["Cat", "dog", "Bird"]
    assert _without_ids(grpc_call(svc, "PostWorkflowResults", flow, keys["predict"])) == _without_ids(over_http)

    query = resources_pb2.Query(ranks=[resources_pb2.Rank(annotation=resources_pb2.Annotation(
        data=resources_pb2.Data(image=resources_pb2.Image(base64=imagegen.png_bytes()))))],
        filters=[resources_pb2.Filter(annotation=resources_pb2.Annotation(data=resources_pb2.Data(
            concepts=[resources_pb2.Concept(name="Cat")])))])
    search = service_pb2.PostInputsSearchesRequest(user_app_id=resources_pb2.UserAppIDSet(app_id="a1"),
                                                   searches=[resources_pb2.Search(query=query)],
                                                   pagination=service_pb2.Pagination(page=1, per_page=5))
    found = stub.PostInputsSearches(search, metadata=(("authorization", f"Key {keys['search']}"),))
    assert found.status.code == 10000, found.status
    assert [h.input.id for h in found.hits] == ["near", "mid"]  # "far" is labelled dog only
    assert found.hits[0].score == pytest.approx(1.0) and found.hits[0].input.data.concepts[0].name == "Cat"
    by_id = service_pb2.PostInputsSearchesRequest(user_app_id=resources_pb2.UserAppIDSet(app_id="a1"), searches=[
        resources_pb2.Search(query=resources_pb2.Query(ranks=[resources_pb2.Rank(
            annotation=resources_pb2.Annotation(input_id="near"))]))], pagination=service_pb2.Pagination(page=2, per_page=1))
    paged = grpc_call(svc, "PostInputsSearches", by_id, keys["search"])
    assert [h.input.id for h in paged.hits] == ["far"]  # page 2 of (mid, far): the query input is left out
    assert _without_ids(paged) == _without_ids(stub.PostInputsSearches(
        by_id, metadata=(("authorization", f"Key {keys['search']}"),)))


GRPC_ERRORS = [  # (method, request, key scope or None, expected code)
    ("PostModelOutputs", service_pb2.PostModelOutputsRequest(model_id="clf", inputs=[_image()]), None, 11009),
    ("PostModelOutputs", service_pb2.PostModelOutputsRequest(model_id="clf", inputs=[_image()]), "search", 11007),
    ("PostModelOutputs", service_pb2.PostModelOutputsRequest(model_id="nope", inputs=[_image()]), "predict", 21200),
    ("PostModelOutputs", service_pb2.PostModelOutputsRequest(model_id="clf"), "predict", 40001),
    ("PostModelOutputs", service_pb2.PostModelOutputsRequest(model_id="clf", inputs=[_image(b"not an image")]),
     "predict", 40001),
    ("PostModelOutputs", service_pb2.PostModelOutputsRequest(
        user_app_id=resources_pb2.UserAppIDSet(app_id="other"), model_id="clf", inputs=[_image()]), "predict", 11002),
    ("PostWorkflowResults", service_pb2.PostWorkflowResultsRequest(workflow_id="nope", inputs=[_image()]),
     "predict", 22102),
    ("PostInputsSearches", service_pb2.PostInputsSearchesRequest(searches=[resources_pb2.Search(
        query=resources_pb2.Query())]), "search", 40002),
    ("ListApps", service_pb2.ListAppsRequest(), "predict", 10040),
    ("PostModelVersions", service_pb2.PostModelVersionsRequest(), None, 10040),
]


@pytest.mark.parametrize("method,request_,scope,code", GRPC_ERRORS,
                         ids=[f"{m}-{c}" for m, _, _, c in GRPC_ERRORS])
def test_grpc_errors_are_answers_with_the_http_code(world, http_url, method, request_, scope, code):
    """Never a raised exception: the response's status carries the code, the same one HTTP answers."""
    svc, _, keys = world
    key = keys[scope] if scope else None
    answer = grpc_call(svc, method, request_, key)
    assert answer.status.code == code, answer.status
    if method.startswith("Post") and code != 10040 and key:  # implemented over HTTP too: the same code
        over_http = getattr(json_stub(http_url), method)(request_, metadata=(("authorization", f"Key {key}"),))
        assert over_http.status.code == code, over_http.status


def test_every_v2_method_exists_on_the_gateway():
    """Ray Serve's proxy calls the ingress method named after the V2 method: a missing one is a gRPC error."""
    from serve.v2.grpc import SERVICE, GrpcMethods

    assert all(callable(getattr(GrpcMethods, m.name, None)) for m in SERVICE.methods)
    assert len(SERVICE.methods) > 200


def test_unimplemented_http_bindings_and_unknown_paths(world, http_url):
    import httpx

    _, _, keys = world
    headers = {"Authorization": f"Key {keys['predict']}"}
    for method, path in [("GET", "/v2/users/me/apps/a1/concepts/status"), ("POST", "/v2/searches"),
                         ("POST", "/v2/users/me/deployments/d1/outputs"), ("GET", "/v2/users/me/apps/a1/tasks"), ("DELETE", "/v2/users/me/apps/a1/workflows")]:
        r = httpx.request(method, http_url + path, headers=headers, json={})
        assert (r.status_code, r.json()["status"]["code"]) == (501, 10040), (path, r.text)
    r = httpx.get(http_url + "/v2/users/me/apps/a1/concepts/status")
    assert r.status_code == 401  # the key is checked first
    r = httpx.get(http_url + "/v2/no/such/thing", headers=headers)
    assert (r.status_code, r.json()["status"]["code"]) == (404, 11101)
    doc = httpx.get(http_url + "/openapi.json").json()
    assert "/v2/searches" not in doc["paths"] and "/v2/models/{model_id}/outputs" in doc["paths"]


def test_workflow_definitions_round_trip(world, http_url):
    """PostWorkflows from Clarifai nodes (kinds from the models' tasks) or deeptrain steps; list, get, delete."""
    svc, clf, keys = world
    stub = json_stub(http_url)
    auth = (("authorization", f"Key {keys['train']}"),)
    app = resources_pb2.UserAppIDSet(app_id="a1")
    nodes = [resources_pb2.WorkflowNode(id="d", model=resources_pb2.Model(id="det")),
             resources_pb2.WorkflowNode(id="c", model=resources_pb2.Model(
                 id="clf", model_version=resources_pb2.ModelVersion(id=clf["id"])))]
    made = stub.PostWorkflows(service_pb2.PostWorkflowsRequest(user_app_id=app, workflows=[
        resources_pb2.Workflow(id="w1", nodes=nodes)]), metadata=auth)
    assert made.status.code == 10000, made.status
    assert [(n.model.id, n.model.model_version.id) for n in made.workflows[0].nodes] == [("det", ""), ("clf", clf["id"])]
    assert made.workflows[0].nodes[1].node_inputs[0].node_id == made.workflows[0].nodes[0].id
    steps = workflow_service.get_workflow(svc.ctx, "a1", "w1")["steps"]
    assert [(s["kind"], s["model_id"]) for s in steps] == [("detect", "det"), ("classify", "clf")]
    listed = stub.ListWorkflows(service_pb2.ListWorkflowsRequest(user_app_id=app), metadata=auth)
    assert {w.id for w in listed.workflows} >= {"w1", "flow"}
    got = stub.GetWorkflow(service_pb2.GetWorkflowRequest(user_app_id=app, workflow_id="w1"), metadata=auth)
    assert got.workflow.created_at.seconds > 0
    assert stub.DeleteWorkflow(service_pb2.DeleteWorkflowRequest(user_app_id=app, workflow_id="w1"),
                               metadata=auth).status.code == 10000
    again = stub.GetWorkflow(service_pb2.GetWorkflowRequest(user_app_id=app, workflow_id="w1"), metadata=auth)
    assert again.status.code == 22102
    bad = stub.PostWorkflows(service_pb2.PostWorkflowsRequest(user_app_id=app, workflows=[resources_pb2.Workflow(
        id="w2", nodes=[resources_pb2.WorkflowNode(id="c", model=resources_pb2.Model(id="clf")),
                        resources_pb2.WorkflowNode(id="d", model=resources_pb2.Model(id="det"))])]), metadata=auth)
    assert bad.status.code == 22104 and "detect can only be the first step" in bad.status.description


def test_the_gateway_serves_the_routes_and_the_catalog(world):
    """The app a Serve replica gets (``replica_api``, built in the replica, never pickled): the inference routes,
    the control plane and the NOT_IMPLEMENTED catalog, on that replica's services."""
    from fastapi.testclient import TestClient

    from serve import app as gateway

    assert hasattr(gateway.Gateway.func_or_class, "__serve_build_asgi_app__")
    http = TestClient(gateway.replica_api(world[0], lambda text: text))
    body = {"inputs": [{"data": {"image": {"base64": base64.b64encode(imagegen.png_bytes()).decode()}}}]}
    headers = {"Authorization": f"Key {world[2]['predict']}"}
    r = http.post("/v2/users/me/apps/a1/models/clf/outputs", json=body, headers=headers)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"]["concepts"][0]["name"] == "Cat", r.text
    assert http.get("/v2/users/me/apps/a1/concepts", headers=headers).json()["status"]["code"] == 11007
    assert http.post("/v2/users/me/deployments/d1/outputs", headers=headers).status_code == 501
    assert http.get("/readyz").json()["status"] == "ready"


def test_requests_pickle_for_the_proxy():
    """Ray Serve's gRPC proxy pickles each request for the replica: clarifai_grpc's classes claim an unimportable
    module (``proto.clarifai.api.service_pb2``), which the servicer module makes an alias of the real one."""
    import pickle
    import subprocess
    import sys

    from serve.v2.grpc_service import SERVICER

    code = ("import pickle, importlib; importlib.import_module({!r}.rpartition('.')[0]); "
            "from clarifai_grpc.grpc.api import service_pb2 as s; import sys; "
            "sys.stdout.buffer.write(pickle.dumps(s.PostModelOutputsRequest(model_id='m')))").format(SERVICER)
    pickled = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert pickle.loads(pickled) == service_pb2.PostModelOutputsRequest(model_id="m")
