"""``build_app(model_in_gateway=True)`` (``deeptrain serve --model-in-gateway``): the model runs in the gateway's
replica, one hop from the proxy. The same answers as the two-hop layout's, batches under load, and the workflow
route's calls from a worker thread (``LocalResponse.result``) — behind each ingress (``serve/ingress.py``): Ray
Serve's HTTP proxy, and HAProxy on a Ray restarted for it (HAProxy really takes the requests: its own counters)."""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deeptrain.config import Settings
from deeptrain.errors import InvalidInput
from deeptrain.sdk import Client
from tests.conftest import ray_restarted_with
from tests.ray_nodes import free_port

pytestmark = pytest.mark.ray

APP = "onehop"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_cluster, fashion_small):
    client = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("onehop") / "home")}))
    client.create_app(APP)
    client.import_inputs(APP, fashion_small / "train", format="imagefolder", split="train")
    client.import_inputs(APP, fashion_small / "test", format="imagefolder", split="test")
    client.create_model(APP, "clf", "classification", "ResNext",
                        {"image_size": 32, "num_epochs": 1, "batch_size": 20, "num_items_per_epoch": 40,
                         "lrate": 0.05})
    return client, client.train(APP, "clf", workers=1)


@pytest.fixture(scope="module", params=["proxy", "haproxy"])
def ingress(request, ray_cluster):
    """The ingress; for HAProxy the session's Ray restarted with ``serve.ingress.haproxy_env`` (restored after),
    HAProxy's files in a folder of its own: ``(name, that folder or None)``."""
    if request.param == "proxy":
        yield "proxy", None
        return
    from serve.ingress import haproxy_env

    state = Path(tempfile.mkdtemp(prefix="dt-hap-"))  # short: HAProxy's socket paths are at most 97 characters
    try:
        with ray_restarted_with(haproxy_env(state)):
            yield "haproxy", state
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def one_hop(trained, ingress):
    from serve.app import start, stop

    client, version = trained
    key = client.create_key(APP, ["predict"])["key"]
    url = start(client.settings, "127.0.0.1", free_port(), predictor_cpus=0, model_in_gateway=True,
                ingress=ingress[0])
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


def test_a_workflow_calls_the_model_from_a_worker_thread(one_hop, ingress, fashion_small):
    client, version, http = one_hop
    client.create_workflow(APP, f"classify-{ingress[0]}", [f"classify:clf:{version['id']}"])
    data = sorted((fashion_small / "test").rglob("*.png"))[0].read_bytes()
    r = http.post(f"/v2/apps/{APP}/workflows/classify-{ingress[0]}/results", json={**_body(data), "output_config": {}})
    assert r.status_code == 200, r.text
    [result] = r.json()["results"]
    offline = client.predict(APP, "clf", [data], version_id=version["id"])[0]
    served = {c["id"]: c["value"] for c in result["outputs"][0]["data"]["concepts"]}
    top = max(offline["concepts"], key=lambda c: c["value"])
    assert served[top["id"]] == pytest.approx(top["value"], abs=1e-4)


def _haproxy_requests() -> int:
    """HTTP requests HAProxy's frontend took so far (its stats page, CSV: ``req_tot`` of ``http_frontend``)."""
    from serve.ingress import stats_ports

    page = httpx.get(f"http://127.0.0.1:{stats_ports()['stats']}/stats;csv", timeout=10)
    page.raise_for_status()
    rows = csv.DictReader(io.StringIO(page.text.lstrip("# ")))
    return next(int(row["req_tot"]) for row in rows if row["pxname"] == "http_frontend" and row["svname"] == "FRONTEND")


@pytest.mark.parametrize("ingress", ["haproxy"], indirect=True)
def test_haproxy_takes_the_requests_and_keeps_its_files_in_its_folder(one_hop, ingress, fashion_small):
    _, state = ingress
    client, version, http = one_hop
    data = sorted((fashion_small / "test").rglob("*.png"))[0].read_bytes()
    before = _haproxy_requests()
    for _ in range(3):
        # one connection each: HAProxy counts a kept-alive connection's last request only once the connection
        # sends another or closes
        r = http.post(f"/v2/apps/{APP}/models/clf/outputs", json=_body(data), headers={"Connection": "close"})
        assert r.status_code == 200, r.text
    assert _haproxy_requests() >= before + 3
    assert list(state.rglob("haproxy.cfg")), "HAProxy's config in the folder deeptrain gave it"
    assert os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "").startswith(str(state))


@pytest.mark.parametrize("ingress", ["proxy"], indirect=True)
def test_an_unknown_ingress_or_haproxy_on_a_ray_not_started_for_it_is_refused(ingress, trained):
    from serve.app import start

    client, _ = trained
    with pytest.raises(InvalidInput, match="unknown ingress 'nginx'"):
        start(client.settings, "127.0.0.1", free_port(), ingress="nginx")
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        pytest.fail("this test runs on the session's Ray, started without HAProxy")
    with pytest.raises(InvalidInput, match="RAY_SERVE_ENABLE_HA_PROXY=1"):
        start(client.settings, "127.0.0.1", free_port(), ingress="haproxy")
