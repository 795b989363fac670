"""The HTTP API on a real Ray Serve app, over loopback, against versions trained on real images."""

from __future__ import annotations

import base64
import socket

import httpx
import pytest

from deeptrain.config import Settings
from deeptrain.sdk import Client
from deeptrain.services import models as model_service
from tests import imagegen
from tests.conftest import import_fashion

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, ray_cluster, fashion_small):
    """A classifier trained for one epoch, and the API serving its store and storage."""
    from serve.app import start, stop

    settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("serve") / "home")})
    client = Client(settings)
    import_fashion(client, fashion_small)
    client.create_model("fashion", "clf", "classification", "ResNext",
                        {"image_size": 32, "num_epochs": 1, "batch_size": 20, "lrate": 0.05})
    version = client.train("fashion", "clf", workers=1)
    key = client.create_key("fashion", ["predict"])["key"]
    url = start(settings, "127.0.0.1", _free_port(), predictor_cpus=0)
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Key {key}"}) as http:
        yield client, version, http
    stop()


def _b64(data: bytes) -> dict:
    return {"base64": base64.b64encode(data).decode()}


def _post(http, path: str, *images: dict, headers: dict | None = None, **model) -> httpx.Response:
    body = {"inputs": [{"data": {"image": image}} for image in images]}
    if model:
        body["model"] = {"output_info": {"output_config": model}}
    return http.post(path, json=body, headers=headers)


def test_prediction_equals_the_offline_path(served, fashion_small):
    client, version, http = served
    files = sorted((fashion_small / "test").rglob("*.png"))[:3]
    datas = [f.read_bytes() for f in files]
    r = _post(http, f"/v2/apps/fashion/models/clf/versions/{version['id']}/outputs", *map(_b64, datas))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"]["code"] == 10000 and len(body["outputs"]) == 3
    offline = client.predict("fashion", "clf", datas, version_id=version["id"])
    for out, ref in zip(body["outputs"], offline):
        assert out["model"]["model_version"]["id"] == version["id"]
        served_scores = {c["id"]: c["value"] for c in out["data"]["concepts"]}
        assert served_scores.keys() == {c["id"] for c in ref["concepts"]}
        for c in ref["concepts"]:
            assert served_scores[c["id"]] == pytest.approx(c["value"], abs=1e-5)


def test_inputs_by_id_and_by_stored_url_and_output_config(served):
    client, version, http = served
    inp = client.list_inputs("fashion", limit=1)[0]
    url = client.ctx.storage.uri_for(_storage_key(client, inp["id"]))
    r = _post(http, "/v2/apps/fashion/models/clf/outputs", {"input_id": inp["id"]}, {"url": url}, max_concepts=2)
    assert r.status_code == 200, r.text
    a, b = r.json()["outputs"]
    assert a["input"]["id"] == inp["id"] and len(a["data"]["concepts"]) == 2
    assert a["data"]["concepts"] == b["data"]["concepts"]  # the same stored image both ways


def _storage_key(client, input_id: str) -> str:
    from deeptrain.services.inputs import get_input

    return get_input(client.ctx, "fashion", input_id).storage_key


@pytest.mark.parametrize("image,fragment", [
    ({"base64": base64.b64encode(b"not an image at all").decode()}, "inputs[0]"),
    (_b64(imagegen.truncated_jpeg()), "inputs[0]"),
    (_b64(imagegen.bomb_png()), "inputs[0]"),
    (_b64(b""), "inputs[0]"),
    ({"base64": "%%%not-base64"}, "not valid base64"),
    ({"input_id": "no-such-input"}, "no-such-input"),
    ({"url": "file:///etc/passwd"}, "not inside the service's storage"),
    ({"base64": "aGk=", "input_id": "x"}, "exactly one of base64, url, input_id"),
], ids=["not-image", "truncated", "bomb", "empty", "bad-base64", "unknown-input", "outside-url", "two-sources"])
def test_bad_images_are_clear_4xx_and_the_server_stays_up(served, image, fragment):
    _, version, http = served
    r = _post(http, f"/v2/apps/fashion/models/clf/versions/{version['id']}/outputs", image)
    assert 400 <= r.status_code < 500, r.text
    assert fragment in r.json()["status"]["description"]
    assert http.get("/healthz").json() == {"status": "ok"}


def test_bad_requests(served):
    client, version, http = served
    ok_image = _b64(imagegen.png_bytes())
    cases = [
        (_post(http, "/v2/apps/fashion/models/nope/outputs", ok_image), 404, "nope"),
        (_post(http, "/v2/apps/fashion/models/clf/versions/v404/outputs", ok_image), 404, "v404"),
        (_post(http, "/v2/apps/nope/models/clf/outputs", ok_image), 403, "not valid for app 'nope'"),
        (http.post("/v2/apps/fashion/models/clf/outputs", json={"inputs": []}), 400, "inputs"),
        (http.post("/v2/apps/fashion/models/clf/outputs", content=b"{not json",
                   headers={"content-type": "application/json"}), 400, "invalid request body"),
        (http.post("/v2/apps/fashion/models/clf/outputs", content=b"x" * (65 * 2**20)), 413, "request body over"),
        (_post(http, "/v2/apps/fashion/models/clf/outputs", ok_image, max_concepts=0), 400, "max_concepts"),
    ]
    training = model_service.new_version(client.ctx, "fashion", "clf", version["params"],
                                         version["dataset_version_id"], version["concepts"])
    model_service.update_version(client.ctx, "fashion", "clf", training["id"], status="training")
    cases.append((_post(http, f"/v2/apps/fashion/models/clf/versions/{training['id']}/outputs", ok_image),
                  409, "training, not trained"))
    for r, status, fragment in cases:
        assert r.status_code == status, (status, r.text)
        assert fragment in r.json()["status"]["description"], r.text
    assert http.get("/readyz").status_code == 200


def test_api_keys(served):
    client, version, http = served
    path = f"/v2/apps/fashion/models/clf/versions/{version['id']}/outputs"
    image = _b64(imagegen.png_bytes())
    client.create_app("other")
    other = client.create_key("other", ["predict"])["key"]
    read_only = client.create_key("fashion", ["read"])["key"]
    revoked = client.create_key("fashion", ["predict"])
    assert _post(http, path, image, headers={"Authorization": f"Key {revoked['key']}"}).status_code == 200
    client.revoke_key("fashion", revoked["id"])
    assert all("key" not in k for k in client.list_keys("fashion"))  # shown once, never listed
    cases = [
        ({"Authorization": ""}, 401, "missing API key"),
        ({"Authorization": "Bearer abc"}, 401, "malformed Authorization header"),
        ({"Authorization": "Key dtk_0000_wrong"}, 401, "unknown API key"),
        ({"Authorization": f"Key {revoked['key']}"}, 401, "revoked"),
        ({"Authorization": f"Key {other}"}, 403, "not valid for app 'fashion'"),
        ({"Authorization": f"Key {read_only}"}, 403, "lacks the 'predict' scope"),
    ]
    for headers, status, fragment in cases:
        r = _post(http, path, image, headers=headers)
        assert r.status_code == status, (headers, r.text)
        assert fragment in r.json()["status"]["description"]


def test_openapi_document(served):
    _, _, http = served
    doc = http.get("/openapi.json").json()
    assert {"/v2/apps/{app_id}/models/{model_id}/versions/{version_id}/outputs",
            "/v2/apps/{app_id}/models/{model_id}/outputs", "/healthz", "/readyz"} <= set(doc["paths"])
    assert http.get("/docs").status_code == 200


def test_deploy_config_is_valid_and_builds():
    """serve/config.yaml passes Serve's own schema and its import path builds the app."""
    import importlib
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load((Path(__file__).parents[1] / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.parse_obj(doc)
    [app] = schema.applications
    module, attr = app.import_path.split(":")
    built = getattr(importlib.import_module(module), attr)(app.args)
    assert type(built).__name__ == "Application"
    assert {d.name for d in app.deployments} == {"Gateway", "Predictor"}


def test_keys_cli_and_bad_input(local_settings):
    import json

    from tests.conftest import run_cli

    run_cli(local_settings, "apps", "create", "a1", check=True)
    created = json.loads(run_cli(local_settings, "keys", "create", "a1", "--scope", "predict", "--scope", "read",
                                 "--json", check=True).stdout)
    assert created["key"].startswith(f"dtk_{created['id']}_") and created["scopes"] == ["predict", "read"]
    listed = json.loads(run_cli(local_settings, "keys", "list", "a1", "--json", check=True).stdout)
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    for args, code, fragment in [
        (("keys", "create", "a1", "--scope", "admin"), 2, "invalid scopes ['admin']"),
        (("keys", "create", "nope"), 3, "nope"),
        (("keys", "revoke", "a1", "ffffffff"), 3, "ffffffff"),
    ]:
        proc = run_cli(local_settings, *args, "--json")
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert fragment in json.loads(proc.stdout)["error"]["message"]
    revoked = json.loads(run_cli(local_settings, "keys", "revoke", "a1", created["id"], "--json", check=True).stdout)
    assert revoked["revoked_at"] is not None
