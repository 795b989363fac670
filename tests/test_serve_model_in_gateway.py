"""``build_app(model_in_gateway=True)`` (``deeptrain serve --model-in-gateway``): the model runs in the gateway's
replica, one hop from the proxy. The same answers as the two-hop layout's, batches under load, and the workflow
route's calls from a worker thread (``LocalResponse.result``)."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from deeptrain.config import Settings
from deeptrain.sdk import Client
from tests.ray_nodes import free_port

pytestmark = pytest.mark.ray

APP = "onehop"


@pytest.fixture(scope="module")
def one_hop(tmp_path_factory, ray_cluster, fashion_small):
    from serve.app import start, stop

    client = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("onehop") / "home")}))
    client.create_app(APP)
    client.import_inputs(APP, fashion_small / "train", format="imagefolder", split="train")
    client.import_inputs(APP, fashion_small / "test", format="imagefolder", split="test")
    client.create_model(APP, "clf", "classification", "ResNext",
                        {"image_size": 32, "num_epochs": 1, "batch_size": 20, "num_items_per_epoch": 40,
                         "lrate": 0.05})
    version = client.train(APP, "clf", workers=1)
    key = client.create_key(APP, ["predict"])["key"]
    url = start(client.settings, "127.0.0.1", free_port(), predictor_cpus=0, model_in_gateway=True)
    try:
        with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Key {key}"}) as http:
            yield client, version, http
    finally:
        stop()


def _body(*datas: bytes) -> dict:
    return {"inputs": [{"data": {"image": {"base64": base64.b64encode(d).decode()}}} for d in datas]}


def test_the_gateway_runs_the_model_and_answers_as_offline(one_hop, fashion_small):
    from ray import serve

    client, version, http = one_hop
    apps = serve.status().applications["deeptrain"].deployments
    assert set(apps) == {"Gateway"}  # no Predictor deployment: one hop
    datas = [f.read_bytes() for f in sorted((fashion_small / "test").rglob("*.png"))[:3]]
    r = http.post(f"/v2/apps/{APP}/models/clf/versions/{version['id']}/outputs", json=_body(*datas))
    assert r.status_code == 200, r.text
    offline = client.predict(APP, "clf", datas, version_id=version["id"])
    for out, ref in zip(r.json()["outputs"], offline):
        scores = {c["id"]: c["value"] for c in out["data"]["concepts"]}
        for c in ref["concepts"]:
            assert scores[c["id"]] == pytest.approx(c["value"], abs=1e-4)


def test_concurrent_requests_form_batches_in_the_gateway(one_hop, fashion_small):
    from ray import serve

    client, version, http = one_hop
    gateway = serve.get_deployment_handle("Gateway", app_name="deeptrain")
    datas = [f.read_bytes() for f in sorted((fashion_small / "test").rglob("*.png"))[:8]]
    path = f"/v2/apps/{APP}/models/clf/versions/{version['id']}/outputs"
    before = gateway.predictor_stats.remote().result()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda k: http.post(path, json=_body(datas[k % 8])).status_code, range(96)))
    after = gateway.predictor_stats.remote().result()
    assert set(codes) == {200}
    batches, items = after["batches"] - before["batches"], after["items"] - before["items"]
    assert items == 96 and items / batches > 1, (before, after)


def test_a_workflow_calls_the_model_from_a_worker_thread(one_hop, fashion_small):
    client, version, http = one_hop
    client.create_workflow(APP, "classify", [f"classify:clf:{version['id']}"])
    data = sorted((fashion_small / "test").rglob("*.png"))[0].read_bytes()
    r = http.post(f"/v2/apps/{APP}/workflows/classify/results", json={**_body(data), "output_config": {}})
    assert r.status_code == 200, r.text
    [result] = r.json()["results"]
    offline = client.predict(APP, "clf", [data], version_id=version["id"])[0]
    served = {c["id"]: c["value"] for c in result["outputs"][0]["data"]["concepts"]}
    top = max(offline["concepts"], key=lambda c: c["value"])
    assert served[top["id"]] == pytest.approx(top["value"], abs=1e-4)
