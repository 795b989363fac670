"""The unmodified official Clarifai client (``clarifai-grpc``, pinned) against a real deeptrain server on
SeaweedFS S3 + PostgreSQL over loopback: the whole flow of a Clarifai user, every answer's status code
asserted, inference answers equal to ``deeptrain predict`` and equal over the JSON and the gRPC channel."""

from __future__ import annotations

import socket
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from deeptrain.config import Settings
from deeptrain.ids import slugify
from deeptrain.sample_data import FASHION_MNIST_CLASSES
from deeptrain.sdk import Client
from deeptrain.services import keys as key_service
from deeptrain.wire import codes
from tests.conftest import aws_env

pytestmark = pytest.mark.ray

APP = "shop"
PER_CLASS = 31  # 310 real Fashion-MNIST images, posted 128 at a time
BATCH = 128


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, ray_cluster, s3_server, s3_bucket, pg_server):
    """``deeptrain serve`` (HTTP + gRPC) on S3 + PostgreSQL, and a user key made on the server host."""
    from serve.app import start, stop

    name = f"clarifai_{uuid.uuid4().hex[:10]}"
    patch = pytest.MonkeyPatch()
    for k, v in aws_env(s3_server).items():
        patch.setenv(k, v)
    settings = Settings.from_env(env={
        "DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("clarifai") / "home"),
        "DEEPTRAIN_STORAGE": f"s3://{s3_bucket}/{name}",
        "DEEPTRAIN_DATABASE_URL": pg_server.create_database(name)})
    client = Client(settings)
    user_key = key_service.create_user_key(client.ctx, "test")["key"]
    grpc_port = _free_port()
    url = start(settings, "127.0.0.1", _free_port(), predictor_cpus=0, grpc_port=grpc_port)
    yield {"url": url, "grpc_port": grpc_port, "key": user_key, "client": client, "settings": settings}
    stop()
    patch.undo()


def _json_stub(url: str):
    from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
    from clarifai_grpc.grpc.api import service_pb2_grpc

    return service_pb2_grpc.V2Stub(ClarifaiChannel.get_json_channel(base_url=url))  # right after its channel


def _grpc_stub(port: int):
    from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
    from clarifai_grpc.grpc.api import service_pb2_grpc

    return service_pb2_grpc.V2Stub(ClarifaiChannel.get_insecure_grpc_channel(base="127.0.0.1", port=port))


def _meta(key: str):
    return (("authorization", f"Key {key}"),)


def _struct(**values) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def _fashion_images(root: Path) -> list[tuple[str, bytes]]:
    from deeptrain.sample_data import write_fashion_mnist_folder

    write_fashion_mnist_folder(root, "train", per_class=PER_CLASS)
    return [(slugify(p.parent.name), p.read_bytes()) for p in sorted(root.rglob("*.png"))]


def _voc_tile(root: Path) -> tuple[bytes, list[dict[str, float]]]:
    """One deepforest aerial tile and its tree boxes, normalized."""
    from deeptrain.sample_data import write_deepforest_tiles

    write_deepforest_tiles(root, ["OSBS_029"], tile=200)
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    doc = ET.parse(xml).getroot()
    w, h = float(doc.findtext("size/width")), float(doc.findtext("size/height"))
    boxes = [{"top_row": float(o.findtext("bndbox/ymin")) / h, "left_col": float(o.findtext("bndbox/xmin")) / w,
              "bottom_row": float(o.findtext("bndbox/ymax")) / h, "right_col": float(o.findtext("bndbox/xmax")) / w}
             for o in doc.iter("object")]
    image = next((root / "JPEGImages").glob(f"{xml.stem}.*")).read_bytes()
    return image, boxes


def _wait_trained(stub, meta, uai, model_id: str, version_id: str, timeout: float = 900):
    from clarifai_grpc.grpc.api import service_pb2

    deadline = time.time() + timeout
    while time.time() < deadline:
        r = stub.GetModelVersion(service_pb2.GetModelVersionRequest(user_app_id=uai, model_id=model_id,
                                                                    version_id=version_id), metadata=meta)
        assert r.status.code == codes.SUCCESS, r.status
        status = r.model_version.status.code
        if status == codes.MODEL_TRAINED:
            return r.model_version
        assert status in (codes.MODEL_QUEUED_FOR_TRAINING, codes.MODEL_TRAINING), r.model_version.status
        time.sleep(2)
    raise AssertionError(f"version {version_id} not trained in {timeout}s")


@pytest.fixture(scope="module")
def flow(server, tmp_path_factory):
    """Through the official client's JSON channel: app, concepts, 310 inputs, a box-labelled tile, and a
    classifier trained for 2 epochs (template ResNext, image_size 32) — with each answer's status kept."""
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2

    stub, meta = _json_stub(server["url"]), _meta(server["key"])
    seen = {}
    r = stub.PostApps(service_pb2.PostAppsRequest(apps=[resources_pb2.App(id=APP, name="Shop")]), metadata=meta)
    seen["PostApps"] = r.status.code
    assert r.status.code == codes.SUCCESS, ("PostApps", r.status)
    uai = resources_pb2.UserAppIDSet(user_id="me", app_id=APP)
    images = _fashion_images(tmp_path_factory.mktemp("fashion"))
    classes = sorted({c for c, _ in images})  # concept ids; their names are the class names
    names = {slugify(n): n for n in FASHION_MNIST_CLASSES}
    r = stub.PostConcepts(service_pb2.PostConceptsRequest(user_app_id=uai, concepts=[
        resources_pb2.Concept(id=c, name=names.get(c, c)) for c in classes + ["tree"]]), metadata=meta)
    seen["PostConcepts"] = r.status.code
    assert r.status.code == codes.SUCCESS, ("PostConcepts", r.status)
    ids = []
    for start in range(0, len(images), BATCH):
        batch = images[start:start + BATCH]
        r = stub.PostInputs(service_pb2.PostInputsRequest(user_app_id=uai, inputs=[
            resources_pb2.Input(data=resources_pb2.Data(image=resources_pb2.Image(base64=data), concepts=[
                resources_pb2.Concept(id=c, value=1.0)])) for c, data in batch]), metadata=meta)
        assert r.status.code == codes.SUCCESS, r.status
        ids += [i.id for i in r.inputs]
    tile, boxes = _voc_tile(tmp_path_factory.mktemp("voc"))
    r = stub.PostInputs(service_pb2.PostInputsRequest(user_app_id=uai, inputs=[
        resources_pb2.Input(id="tile-1", data=resources_pb2.Data(image=resources_pb2.Image(base64=tile)))]),
        metadata=meta)
    assert r.status.code == codes.SUCCESS, r.status
    r = stub.PostAnnotations(service_pb2.PostAnnotationsRequest(user_app_id=uai, annotations=[
        resources_pb2.Annotation(input_id="tile-1", data=resources_pb2.Data(regions=[resources_pb2.Region(
            region_info=resources_pb2.RegionInfo(bounding_box=resources_pb2.BoundingBox(**b)),
            data=resources_pb2.Data(concepts=[resources_pb2.Concept(id="tree", value=1.0)]))]))
        for b in boxes]), metadata=meta)
    seen["PostAnnotations"] = r.status.code
    assert r.status.code == codes.SUCCESS, ("PostAnnotations", r.status)
    r = stub.PostModels(service_pb2.PostModelsRequest(user_app_id=uai, model=resources_pb2.Model(
        id="clf", model_type_id="visual-classifier", output_info=resources_pb2.OutputInfo(
            data=resources_pb2.Data(concepts=[resources_pb2.Concept(id=c) for c in classes])))), metadata=meta)
    seen["PostModels"] = r.status.code
    assert r.status.code == codes.SUCCESS, ("PostModels", r.status)
    asked = time.monotonic()
    r = stub.PostModelVersions(service_pb2.PostModelVersionsRequest(user_app_id=uai, model_id="clf", model_versions=[
        resources_pb2.ModelVersion(train_info=resources_pb2.TrainInfo(params=_struct(
            template="ResNext", image_size=32, num_epochs=2, batch_size=32)))]), metadata=meta)
    seen["PostModelVersions"] = r.status.code
    assert r.status.code == codes.SUCCESS, ("PostModelVersions", r.status)
    version_id = r.model.model_version.id
    seen["queued"], seen["answered_s"] = r.model.model_version.status.code, time.monotonic() - asked
    r = stub.PostModelOutputs(service_pb2.PostModelOutputsRequest(
        user_app_id=uai, model_id="clf", version_id=version_id, inputs=[resources_pb2.Input(
            data=resources_pb2.Data(image=resources_pb2.Image(base64=images[0][1])))]), metadata=meta)
    seen["outputs while training"] = r.status.code
    version = _wait_trained(stub, meta, uai, "clf", version_id)
    return {"stub": stub, "meta": meta, "uai": uai, "images": images, "ids": ids, "classes": classes, "names": names,
            "boxes": boxes, "version": version, "seen": seen}


def test_every_step_of_the_flow_answers_success(flow):
    seen = flow["seen"]
    assert {k: seen[k] for k in ("PostApps", "PostConcepts", "PostAnnotations", "PostModels", "PostModelVersions")} \
        == dict.fromkeys(("PostApps", "PostConcepts", "PostAnnotations", "PostModels", "PostModelVersions"),
                         codes.SUCCESS)
    assert seen["queued"] in (codes.MODEL_QUEUED_FOR_TRAINING, codes.MODEL_TRAINING)
    assert seen["answered_s"] < 30  # queued as a Ray job: the answer does not wait for the training
    version = flow["version"]
    assert (version.status.percent_completed, version.metrics.status.code) == (100, codes.MODEL_EVALUATED)
    assert seen["outputs while training"] in (codes.MODEL_QUEUED_FOR_TRAINING, codes.MODEL_TRAINING)
    assert len(set(flow["ids"])) == len(flow["images"]) == 10 * PER_CLASS


def test_inputs_list_page_by_page(flow):
    from clarifai_grpc.grpc.api import service_pb2

    stub, meta, uai = flow["stub"], flow["meta"], flow["uai"]
    listed, page = [], 1
    while True:
        r = stub.ListInputs(service_pb2.ListInputsRequest(user_app_id=uai, page=page, per_page=100), metadata=meta)
        assert r.status.code == codes.SUCCESS, r.status
        if not r.inputs:
            break
        assert len(r.inputs) <= 100
        listed += [i.id for i in r.inputs]
        page += 1
    assert page == 5 and sorted(listed) == sorted(flow["ids"] + ["tile-1"])  # 311 inputs: 4 pages
    r = stub.GetInput(service_pb2.GetInputRequest(user_app_id=uai, input_id="tile-1"), metadata=meta)
    assert r.status.code == codes.SUCCESS
    got = sorted((round(g.region_info.bounding_box.top_row, 4), round(g.region_info.bounding_box.left_col, 4))
                 for g in r.input.data.regions)
    assert got == sorted((round(b["top_row"], 4), round(b["left_col"], 4)) for b in flow["boxes"])
    assert all(g.data.concepts[0].id == "tree" for g in r.input.data.regions)


def test_outputs_by_model_and_by_version_equal_deeptrain_predict(server, flow):
    import torch
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2

    stub, meta, uai, version = flow["stub"], flow["meta"], flow["uai"], flow["version"]
    image = flow["images"][5][1]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the served Predictor's threads: sums in the same order
    try:
        reference = server["client"].predict(APP, "clf", [image], version_id=version.id)[0]["concepts"]
    finally:
        torch.set_num_threads(before)
    expected = {c["id"]: c["value"] for c in reference}
    inputs = [resources_pb2.Input(data=resources_pb2.Data(image=resources_pb2.Image(base64=image)))]
    for request in (service_pb2.PostModelOutputsRequest(user_app_id=uai, model_id="clf", inputs=inputs),
                    service_pb2.PostModelOutputsRequest(user_app_id=uai, model_id="clf", version_id=version.id,
                                                        inputs=inputs)):
        r = stub.PostModelOutputs(request, metadata=meta)
        assert r.status.code == codes.SUCCESS, r.status
        out = r.outputs[0]
        assert out.status.code == codes.SUCCESS and out.model.model_version.id == version.id
        got = {c.id: c.value for c in out.data.concepts}
        assert set(got) == set(expected) and all(abs(got[k] - expected[k]) <= 1e-5 for k in got)
        assert {c.name for c in out.data.concepts} == set(flow["names"].values())


def test_status_codes_of_refusals(server, flow):
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2

    stub, meta, uai = flow["stub"], flow["meta"], flow["uai"]
    client = server["client"]
    client.create_app("elsewhere")
    other_app = client.create_key("elsewhere", ["predict", "train", "inputs"])["key"]
    search_only = client.create_key(APP, ["search"])["key"]
    image = resources_pb2.Input(data=resources_pb2.Data(image=resources_pb2.Image(base64=flow["images"][0][1])))
    predict = service_pb2.PostModelOutputsRequest(user_app_id=uai, model_id="clf", inputs=[image])
    cases = [
        (predict, _meta("dtk_0000_not-a-key"), codes.CONN_KEY_INVALID),
        (predict, _meta(other_app), codes.CONN_CREDENTIALS_INVALID),
        (predict, _meta(search_only), codes.CONN_INSUFFICIENT_SCOPES),
        (service_pb2.PostModelOutputsRequest(user_app_id=uai, model_id="nope", inputs=[image]), meta,
         codes.MODEL_DOES_NOT_EXIST),
        (service_pb2.PostModelOutputsRequest(user_app_id=uai, model_id="clf", inputs=[]), meta,
         codes.PREDICT_INVALID_REQUEST),
    ]
    for request, call_meta, code in cases:
        assert stub.PostModelOutputs(request, metadata=call_meta).status.code == code, (request.model_id, code)
    bad_params = service_pb2.PostModelVersionsRequest(user_app_id=uai, model_id="clf", model_versions=[
        resources_pb2.ModelVersion(train_info=resources_pb2.TrainInfo(params=_struct(image_size=32.5)))])
    assert stub.PostModelVersions(bad_params, metadata=meta).status.code == codes.MODEL_INVALID_ARGUMENT


@pytest.fixture(scope="module")
def searchable(server, flow):
    """An embedding model trained through the client, the app's search index built with it (the index build
    is a deeptrain extension route, a Ray job), and a workflow defined through the client."""
    import httpx
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2

    stub, meta, uai = flow["stub"], flow["meta"], flow["uai"]
    r = stub.PostModels(service_pb2.PostModelsRequest(user_app_id=uai, model=resources_pb2.Model(
        id="emb", model_type_id="visual-embedder")), metadata=meta)
    assert r.status.code == codes.SUCCESS, r.status
    r = stub.PostModelVersions(service_pb2.PostModelVersionsRequest(user_app_id=uai, model_id="emb", model_versions=[
        resources_pb2.ModelVersion(train_info=resources_pb2.TrainInfo(params=_struct(
            template="ResNext", image_size=32, num_epochs=1, batch_size=32)))]), metadata=meta)
    assert r.status.code == codes.SUCCESS, r.status
    _wait_trained(stub, meta, uai, "emb", r.model.model_version.id)
    base = f"{server['url']}/v2/users/me/apps/{APP}"
    with httpx.Client(headers={"Authorization": f"Key {server['key']}"}, timeout=60) as http:
        started = http.post(f"{base}/searches/index", json={"model_id": "emb"})
        assert started.status_code == 200, started.text
        job = started.json()["job"]["id"]
        deadline = time.time() + 600
        while time.time() < deadline:
            status = http.get(f"{base}/jobs/{job}").json()["job"]["status"]
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(2)
        assert status == "SUCCEEDED", http.get(f"{base}/jobs/{job}").text
        server["client"].create_app("jobless")
        other = server["client"].create_key("jobless", ["train"])["key"]
        r = http.get(f"{server['url']}/v2/jobs/{job}", headers={"Authorization": f"Key {other}"})
        assert (r.status_code, r.json()["status"]["code"]) == (404, codes.CONN_DOES_NOT_EXIST)  # not its app's job
    r = stub.PostWorkflows(service_pb2.PostWorkflowsRequest(user_app_id=uai, workflows=[resources_pb2.Workflow(
        id="classify", nodes=[resources_pb2.WorkflowNode(id="clf", model=resources_pb2.Model(id="clf"))])]),
        metadata=meta)
    assert r.status.code == codes.SUCCESS, r.status
    return flow


def _inference_requests(flow):
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2

    uai = flow["uai"]
    image = resources_pb2.Image(base64=flow["images"][7][1])
    inputs = [resources_pb2.Input(data=resources_pb2.Data(image=image))]
    query = resources_pb2.Query(ranks=[resources_pb2.Rank(annotation=resources_pb2.Annotation(
        data=resources_pb2.Data(image=image)))])
    return {
        "PostModelOutputs": service_pb2.PostModelOutputsRequest(user_app_id=uai, model_id="clf", inputs=inputs),
        "PostWorkflowResults": service_pb2.PostWorkflowResultsRequest(user_app_id=uai, workflow_id="classify",
                                                                      inputs=inputs),
        "PostInputsSearches": service_pb2.PostInputsSearchesRequest(
            user_app_id=uai, searches=[resources_pb2.Search(query=query)],
            pagination=service_pb2.Pagination(page=1, per_page=5)),
    }


def _essence(method: str, response) -> list:
    """What an inference answer says, without its generated ids."""
    if method == "PostModelOutputs":
        return [(c.id, c.name, round(c.value, 5)) for c in response.outputs[0].data.concepts]
    if method == "PostWorkflowResults":
        return [[(c.id, round(c.value, 5)) for c in o.data.concepts] for o in response.results[0].outputs]
    return [(h.input.id, round(h.score, 5)) for h in response.hits]


def test_workflow_results_and_searches_through_the_json_channel(searchable):
    stub, meta = searchable["stub"], searchable["meta"]
    answers = {m: getattr(stub, m)(req, metadata=meta) for m, req in _inference_requests(searchable).items()}
    assert {m: a.status.code for m, a in answers.items()} == dict.fromkeys(answers, codes.SUCCESS)
    outputs = _essence("PostModelOutputs", answers["PostModelOutputs"])
    assert _essence("PostWorkflowResults", answers["PostWorkflowResults"]) == [[(i, v) for i, _, v in outputs]]
    hits = answers["PostInputsSearches"].hits
    assert len(hits) == 5 and hits[0].input.id == searchable["ids"][7] and hits[0].score >= hits[-1].score


def test_grpc_answers_equal_the_json_ones(server, searchable):
    json_stub, meta = searchable["stub"], searchable["meta"]
    requests = _inference_requests(searchable)
    over_json = {m: _essence(m, getattr(json_stub, m)(req, metadata=meta)) for m, req in requests.items()}
    grpc_stub = _grpc_stub(server["grpc_port"])
    over_grpc = {}
    for method, request in requests.items():
        response = getattr(grpc_stub, method)(request, metadata=meta)
        assert response.status.code == codes.SUCCESS, (method, response.status)
        over_grpc[method] = _essence(method, response)
    assert over_grpc == over_json
    from clarifai_grpc.grpc.api import service_pb2

    bad = grpc_stub.PostModelOutputs(requests["PostModelOutputs"], metadata=_meta("dtk_0000_nope"))
    assert bad.status.code == codes.CONN_KEY_INVALID
    missing = grpc_stub.ListModels(service_pb2.ListModelsRequest(user_app_id=searchable["uai"]), metadata=meta)
    assert missing.status.code == codes.NOT_IMPLEMENTED


# --- the remote CLI: only DEEPTRAIN_API_URL / DEEPTRAIN_API_KEY, against the same server -------------------------

def test_the_remote_cli_runs_the_whole_flow_like_the_embedded_mode(server, tmp_path, fashion_small):
    import json

    from tests.remote_cli import run_remote_cli

    url, key, local = server["url"], server["key"], server["client"]

    def cli(*args: str) -> str:
        return run_remote_cli(url, key, *args, check=True, timeout=900).stdout

    cli("apps", "create", "remote")
    report = json.loads(cli("inputs", "import", "remote", str(fashion_small / "train"), "-f", "imagefolder",
                            "--split", "train", "--json"))
    local.create_app("embedded")
    reference = local.import_inputs("embedded", fashion_small / "train", format="imagefolder", split="train")
    assert (report["imported"], report["duplicates"], report["rejected"]) == (
        reference["imported"], reference["duplicates"], reference["rejected"]) and report["imported"] == 200
    cli("inputs", "import", "remote", str(fashion_small / "test"), "-f", "imagefolder", "--split", "test")
    cli("models", "create", "remote", "clf", "--task", "classification", "--template", "ResNext",
        "--param", "image_size=32", "--param", "num_epochs=2")
    done = run_remote_cli(url, key, "models", "train", "remote", "clf", "--json", check=True, timeout=900)
    trained = json.loads(done.stdout)
    assert trained["status"] == "trained"
    assert done.stderr.index("queued on the server") < done.stderr.index("epoch 1/2") < done.stderr.index("epoch 2/2")
    shown = json.loads(cli("models", "show", "remote", "clf", trained["id"], "--json"))
    assert shown == trained == json.loads(json.dumps(local.get_version("remote", "clf", trained["id"])))
    files = sorted((fashion_small / "test").rglob("*.png"))[:3]
    predicted = json.loads(cli("predict", "remote", "clf", *map(str, files), "--json"))
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = local.predict("remote", "clf", [f.read_bytes() for f in files], version_id=trained["id"])
    finally:
        torch.set_num_threads(before)
    for got, want in zip(predicted, expected):
        values = {c["id"]: c["value"] for c in want["concepts"]}
        assert {c["id"] for c in got["concepts"]} == set(values)
        assert all(abs(c["value"] - values[c["id"]]) <= 1e-5 for c in got["concepts"])
    # one trial: what this shows is the remote command running a real search as the embedded one would (the
    # search itself is tested in test_tune.py)
    tuned = json.loads(cli("tune", "remote", "clf", "--space", "lrate=loguniform:0.001:0.1", "--trials", "1",
                           "--param", "num_epochs=1", "--promote", "--json"))
    run = local.get_tune_run("remote", "clf", tuned["id"])
    assert tuned["status"] == run.status == "finished" and len(run.trials) == 1
    assert tuned["promoted"] == run.best_version == local.get_model("remote", "clf")["default_version"]
