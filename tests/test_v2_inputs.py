"""The Clarifai-compatible inputs and annotations routes, in process (no Ray), on SQLite + local files: real
images (generated PNGs, Fashion-MNIST), per-input import outcomes, pagination, patches, annotations, hostile
requests. Every answer is parsed with the official client's protobuf classes (a wrong JSON type for a known
field raises there)."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import pytest
from clarifai_grpc.grpc.api import service_pb2
from clarifai_grpc.grpc.api.status import status_pb2
from fastapi.testclient import TestClient
from google.protobuf import json_format
from PIL import Image

from deeptrain.services import keys
from deeptrain.services.context import Context
from serve.v2.control import control_api
from serve.v2.state import Services
from tests.imagegen import NOT_AN_IMAGE, bomb_png, png_bytes, truncated_jpeg

APP = "/v2/users/me/apps/a1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parsed(body: dict, message=service_pb2.MultiInputResponse):
    """``body`` read by the official client's parser (raises on a wrong JSON type)."""
    return json_format.ParseDict(body, message(), ignore_unknown_fields=True)


@pytest.fixture
def api(local_settings):
    ctx = Context.from_settings(local_settings)
    http = TestClient(control_api(Services(ctx)))
    user = {"Authorization": f"Key {keys.create_user_key(ctx)['key']}"}
    for app in ("a1", "a2"):
        assert http.post("/v2/users/me/apps", json={"apps": [{"id": app}]}, headers=user).status_code == 200

    def post(inputs, path=APP, headers=user, **extra):
        return http.post(f"{path}/inputs", json={"inputs": inputs, "user_app_id": {"user_id": "me"}, **extra},
                         headers=headers)

    return SimpleNamespace(http=http, ctx=ctx, user=user, post=post)


@pytest.fixture(scope="module")
def fashion_pngs():
    """140 distinct real Fashion-MNIST images as PNG bytes, with their class index."""
    from deeptrain.sample_data import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    out, seen = [], set()
    for img, label in zip(images, labels):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        if buf.getvalue() not in seen:
            seen.add(buf.getvalue())
            out.append((buf.getvalue(), int(label)))
        if len(out) == 140:
            return out
    raise AssertionError("fewer than 140 distinct images")


def image(data: bytes, *concepts, **fields) -> dict:
    return {"data": {"image": {"base64": b64(data)}, "concepts": list(concepts)}, **fields}


def color(i: int) -> bytes:
    return png_bytes((i % 256, i // 256, 7))


def test_post_inputs_imports_real_images_with_labels_boxes_and_metadata(api, fashion_pngs):
    inputs = [image(data, {"id": f"class-{label}", "name": f"Class {label}", "value": 1.0}, {"id": "other", "value": 0.0},
                    id=f"f{i}") for i, (data, label) in enumerate(fashion_pngs[:8])]
    box = {"top_row": 0.1, "left_col": 0.2, "bottom_row": 0.6, "right_col": 0.9}
    inputs[0]["data"]["regions"] = [{"region_info": {"bounding_box": box}, "data": {"concepts": [{"name": "Shoe Box", "value": 1}]}}]
    inputs[0]["data"]["metadata"] = {"source": "camera 3", "n": 2}
    r = api.post(inputs)
    assert r.status_code == 200 and r.json()["status"]["code"] == 10000
    answer = parsed(r.json())
    assert [i.id for i in answer.inputs] == [f"f{i}" for i in range(8)]
    assert {i.status.code for i in answer.inputs} == {30000}
    assert r.json()["inputs"][3]["data"]["metadata"]["deeptrain"]["outcome"] == "imported"

    got = api.http.get(f"{APP}/inputs/f0", headers=api.user)
    one = parsed(got.json(), service_pb2.SingleInputResponse).input
    label = fashion_pngs[0][1]
    assert {(c.id, c.name, c.value) for c in one.data.concepts} == {(f"class-{label}", f"Class {label}", 1.0),
                                                                       ("other", "other", 0.0)}
    region = one.data.regions[0]
    assert (region.data.concepts[0].id, region.data.concepts[0].name) == ("shoe-box", "Shoe Box")
    assert region.region_info.bounding_box.top_row == pytest.approx(0.1)
    assert region.region_info.bounding_box.right_col == pytest.approx(0.9)
    assert one.data.metadata["source"] == "camera 3" and one.data.image.image_info.width == 28
    assert one.data.metadata["deeptrain"]["negatives"] == ["other"]
    assert one.created_at.seconds > 0
    assert "file://" not in got.text and str(api.ctx.settings.home) not in got.text  # no storage URL or path


def test_post_inputs_takes_128_inputs_and_refuses_129(api, fashion_pngs):
    batch = [image(data, {"id": "x", "value": 1.0}) for data, _ in fashion_pngs[:129]]
    refused = api.post(batch)
    assert refused.status_code == 400 and refused.json()["status"]["code"] == 30104  # INPUT_INVALID_ARGUMENT
    parsed(refused.json())
    r = api.post(batch[:128])
    assert r.status_code == 200 and len(parsed(r.json()).inputs) == 128
    count = api.http.get(f"{APP}/inputs/status", headers=api.user)
    assert parsed(count.json(), service_pb2.SingleInputCountResponse).counts.processed == 128


def test_duplicates_answer_30100_with_the_existing_id(api):
    first = api.post([image(color(1), {"id": "cat", "value": 1.0}, id="orig")])
    assert first.json()["inputs"][0]["id"] == "orig"
    again = api.post([image(color(1), {"id": "dog", "value": 1.0}, id="other-id"), image(color(2)), image(color(2))])
    assert again.status_code == 200 and again.json()["status"]["code"] == 10000
    items = parsed(again.json()).inputs
    assert [(i.id, i.status.code) for i in items][0] == ("orig", 30100)
    assert items[2].status.code == 30100 and items[2].id == items[1].id and items[1].status.code == 30000
    note = again.json()["inputs"][0]["data"]["metadata"]["deeptrain"]
    assert note["existing_id"] == "orig" and note["differing_labels"] is True and note["updated"] is False
    updated = api.post([image(color(1), {"id": "dog", "value": 1.0})], update_labels=True)
    assert updated.json()["inputs"][0]["data"]["metadata"]["deeptrain"]["updated"] is True
    stored = api.http.get(f"{APP}/inputs/orig", headers=api.user).json()["input"]["data"]["concepts"]
    assert [c["id"] for c in stored] == ["dog"]


def region(concept_value: float) -> dict:
    box = {"top_row": 0.1, "left_col": 0.1, "bottom_row": 0.5, "right_col": 0.5}
    return {"region_info": {"bounding_box": box}, "data": {"concepts": [{"id": "c", "value": concept_value}]}}


REJECTED = [  # (input, per-input code, words of the reason)
    ({"data": {"image": {"base64": b64(truncated_jpeg())}}}, 30104, "truncated or corrupt"),
    ({"data": {"image": {"base64": b64(NOT_AN_IMAGE)}}}, 30101, "not an image"),
    ({"data": {"image": {"base64": b64(bomb_png())}}}, 30104, "decompression bomb"),
    ({"data": {"image": {"url": "https://example.com/cat.jpg"}}}, 30106, "image.url is not supported"),
    ({"data": {}}, 30104, "no image"),
    ({"data": {"image": {"base64": "%%%not base64%%%"}}}, 30104, "not valid base64"),
    ({"id": "../../etc/passwd", "data": {"image": {"base64": b64(color(50))}}}, 30104, "invalid input id"),
    ({"data": {"image": {"base64": b64(color(51))}}, "split": "holdout"}, 30104, "split"),
    ({"data": {"image": {"base64": b64(color(52))}, "regions": [region(0.0)]}}, 30104, "must be positive"),
    ({"data": {"image": {"base64": b64(color(53))}, "concepts": [{"value": 1.0}]}}, 30104, "an id or a name"),
    ({"data": {"image": {"base64": b64(color(54))}, "concepts": [{"id": "!!!", "value": 1.0}]}}, 30104, "no letters"),
]


def test_rejected_inputs_say_why_beside_the_imported_ones(api):
    r = api.post([image(color(9), id="good"), *(bad for bad, _, _ in REJECTED)])
    assert r.status_code == 200 and r.json()["status"]["code"] == 10010
    items = parsed(r.json()).inputs
    assert (items[0].id, items[0].status.code) == ("good", 30000)
    for item, (_, code, words) in zip(items[1:], REJECTED):
        assert item.status.code == code and words in item.status.description, (item.status, words)
    notes = [i["data"]["metadata"]["deeptrain"] for i in r.json()["inputs"]]
    assert [n["index"] for n in notes] == list(range(len(REJECTED) + 1))
    assert {n["outcome"] for n in notes[1:]} == {"rejected"}
    listed = api.http.get(f"{APP}/inputs", headers=api.user).json()["inputs"]
    assert [i["id"] for i in listed] == ["good"]  # nothing of a rejected input was stored


def test_a_request_whose_inputs_are_all_rejected_fails_with_10020(api):
    r = api.post([bad for bad, _, _ in REJECTED[:3]])
    assert r.status_code == 400 and r.json()["status"]["code"] == 10020
    assert "truncated or corrupt" in r.json()["status"]["details"]
    assert len(parsed(r.json()).inputs) == 3


def test_list_inputs_page_by_page_and_by_ids(api):
    api.post([image(color(i), id=f"in-{i}") for i in range(7)])
    seen = []
    for page, size in ((1, 3), (2, 3), (3, 1), (4, 0)):
        r = api.http.get(f"{APP}/inputs", params={"page": page, "per_page": 3, "user_app_id.user_id": "me"},
                         headers=api.user)
        got = [i.id for i in parsed(r.json()).inputs]
        assert len(got) == size
        seen += got
    assert seen == sorted(f"in-{i}" for i in range(7))
    r = api.http.get(f"{APP}/inputs", params=[("ids", "in-5"), ("ids", "in-1"), ("ids", "nope")], headers=api.user)
    assert [i.id for i in parsed(r.json()).inputs] == ["in-1", "in-5"]
    for bad in ({"page": 0}, {"per_page": 1001}, {"per_page": "x"}):
        assert api.http.get(f"{APP}/inputs", params=bad, headers=api.user).status_code == 400


def test_get_input_and_its_image_bytes(api):
    data = color(77)
    api.post([image(data, id="pic")])
    got = api.http.get(f"{APP}/inputs/pic/image", headers=api.user)
    assert got.status_code == 200 and got.content == data and got.headers["content-type"] == "image/png"
    url = api.http.get(f"{APP}/inputs/pic", headers=api.user).json()["input"]["data"]["image"]["url"]
    assert api.http.get(url, headers=api.user).content == data
    for path in (f"{APP}/inputs/nope", f"{APP}/inputs/nope/image", f"{APP}/inputs/..%2F..%2Fetc%2Fpasswd",
                 f"{APP}/inputs/..%2F..%2F..%2Fetc%2Fpasswd/image", f"{APP}/inputs/%2E%2E/image"):
        missing = api.http.get(path, headers=api.user)  # a decoded "/" makes the path another route's: 11101
        assert missing.status_code == 404 and missing.json()["status"]["code"] in (30102, 11101), path
        parsed(missing.json(), service_pb2.SingleInputResponse)
        assert "root:" not in missing.text


def test_delete_one_input_then_many(api):
    api.post([image(color(i), id=f"d{i}") for i in range(4)])
    r = api.http.delete(f"{APP}/inputs/d0", headers=api.user)
    assert r.status_code == 200 and parsed(r.json(), status_pb2.BaseResponse).status.code == 10000
    assert api.http.get(f"{APP}/inputs/d0/image", headers=api.user).status_code == 404
    refused = api.http.request("DELETE", f"{APP}/inputs", json={"ids": ["d1", "d0"]}, headers=api.user)
    assert refused.status_code == 404 and refused.json()["status"]["code"] == 30102
    assert api.http.get(f"{APP}/inputs/d1", headers=api.user).status_code == 200  # all or nothing
    r = api.http.request("DELETE", f"{APP}/inputs", json={"ids": ["d1", "d2"], "user_app_id": {}}, headers=api.user)
    assert r.status_code == 200
    assert [i["id"] for i in api.http.get(f"{APP}/inputs", headers=api.user).json()["inputs"]] == ["d3"]
    assert api.post([image(color(1), id="again")]).json()["inputs"][0]["status"]["code"] == 30000  # bytes gone


def patch(api, action, concepts=(), metadata=None):
    data = {"concepts": list(concepts), **({"metadata": metadata} if metadata is not None else {})}
    r = api.http.patch(f"{APP}/inputs", json={"inputs": [{"id": "p", "data": data}], "action": action},
                       headers=api.user)
    assert r.status_code == 200, r.json()
    one = parsed(r.json()).inputs[0]
    meta = {k: v for k, v in r.json()["inputs"][0]["data"]["metadata"].items() if k != "deeptrain"}
    return {(c.id, c.value) for c in one.data.concepts}, meta


def test_patch_inputs_merges_overwrites_and_removes(api):
    api.post([image(color(3), {"id": "a", "value": 1.0}, id="p")])
    assert api.http.post(f"{APP}/inputs", json={"inputs": []}, headers=api.user).status_code == 400
    assert patch(api, "merge", [{"id": "b", "value": 0.0}], {"x": {"y": 1}}) == ({("a", 1.0), ("b", 0.0)}, {"x": {"y": 1}})
    assert patch(api, "merge", [{"id": "b", "value": 1.0}], {"x": {"z": 2}}) == ({("a", 1.0), ("b", 1.0)},
                                                                               {"x": {"y": 1, "z": 2}})
    assert patch(api, "overwrite", [{"id": "c", "value": 1.0}], {"k": "v"}) == ({("c", 1.0)}, {"k": "v"})
    assert patch(api, "remove", [{"id": "c"}], {"k": ""}) == (set(), {})
    bad = api.http.patch(f"{APP}/inputs", json={"inputs": [{"id": "p"}], "action": "replace"}, headers=api.user)
    assert bad.status_code == 400 and bad.json()["status"]["code"] == 30104
    gone = api.http.patch(f"{APP}/inputs", json={"inputs": [{"id": "nope", "data": {}}]}, headers=api.user)
    assert gone.status_code == 404 and gone.json()["status"]["code"] == 30102


def annotations(api, **params):
    r = api.http.get(f"{APP}/annotations", params=params, headers=api.user)
    return parsed(r.json(), service_pb2.MultiAnnotationResponse).annotations


def test_annotations_add_list_patch_and_delete(api):
    api.post([image(color(5), id="i1"), image(color(6), id="i2")])
    box = {"top_row": 0.25, "left_col": 0.0, "bottom_row": 1.0, "right_col": 0.5}
    body = {"annotations": [{"input_id": "i1", "data": {"concepts": [{"id": "cat", "value": 1.0}, {"id": "dog", "value": 0.0}]}},
                            {"input_id": "i2", "data": {"regions": [{"region_info": {"bounding_box": box},
                                                                     "data": {"concepts": [{"id": "cat", "value": 1.0}]}}]}}]}
    r = api.http.post(f"{APP}/annotations", json=body, headers=api.user)
    made = parsed(r.json(), service_pb2.MultiAnnotationResponse).annotations
    assert [(a.input_id, a.status.code) for a in made] == [("i1", 24150), ("i1", 24150), ("i2", 24150)]
    assert made[2].data.regions[0].region_info.bounding_box.bottom_row == 1.0
    assert [a.id for a in annotations(api, input_ids="i1")] == [made[0].id, made[1].id]
    assert len(annotations(api, per_page=2, page=2)) == 1

    change = {"annotations": [{"id": made[1].id, "input_id": "i1", "data": {"concepts": [{"id": "dog", "value": 1.0}]}},
                              {"id": made[2].id, "data": {"regions": [{"region_info": {"bounding_box": {**box, "top_row": 0.5}}}]}}],
              "action": "merge"}
    r = api.http.patch(f"{APP}/annotations", json=change, headers=api.user)
    patched = parsed(r.json(), service_pb2.MultiAnnotationResponse).annotations
    assert patched[0].data.concepts[0].value == 1.0 and patched[1].data.regions[0].region_info.bounding_box.top_row == 0.5
    r = api.http.patch(f"{APP}/annotations", json={"annotations": [{"id": made[0].id}], "action": "remove"}, headers=api.user)
    assert r.status_code == 200 and r.json()["annotations"] == []
    assert api.http.get(f"{APP}/inputs/i1", headers=api.user).json()["input"]["data"]["concepts"] == [
        {"id": "dog", "name": "dog", "value": 1.0}]

    r = api.http.delete(f"{APP}/inputs/i2/annotations/{made[2].id}", headers=api.user)
    assert r.status_code == 200 and annotations(api, input_ids="i2") == []
    again = api.http.delete(f"{APP}/inputs/i1/annotations/{made[2].id}", headers=api.user)
    assert again.status_code == 404
    r = api.http.request("DELETE", f"{APP}/inputs/annotations", json={"input_ids": ["i1"]}, headers=api.user)
    assert r.status_code == 200 and annotations(api) == []


@pytest.mark.parametrize(("body", "code"), [
    ({"annotations": [{"input_id": "nope", "data": {"concepts": [{"id": "a", "value": 1}]}}]}, 30102),
    ({"annotations": [{"input_id": "i1", "data": {}}]}, 24155),
    ({"annotations": [{"input_id": "i1", "data": {"regions": [region(1.0) | {"region_info": {"bounding_box": {
        "top_row": 0.9, "bottom_row": 0.1, "left_col": 0, "right_col": 1}}}]}}]}, 24155),
    ({"annotations": [{"input_id": "i1", "data": {"regions": [region(0.0)]}}]}, 24155),
    ({"annotations": [{"input_id": "i1", "data": {"concepts": [{"id": "a", "value": 1}]}}] * 129}, 24155),
])
def test_bad_annotations_are_refused_whole(api, body, code):
    api.post([image(color(5), id="i1")])
    r = api.http.post(f"{APP}/annotations", json=body, headers=api.user)
    assert r.json()["status"]["code"] == code and r.status_code in (400, 404)
    assert annotations(api) == []


def test_an_app_key_reaches_neither_another_apps_inputs_nor_their_data(api):
    api.post([image(color(8), {"id": "secret", "value": 1.0}, id="private")])
    other = keys.create_key(api.ctx, "a2", ["inputs"])["key"]
    b = {"Authorization": f"Key {other}"}
    annotation_id = api.http.get(f"{APP}/annotations", headers=api.user).json()["annotations"][0]["id"]
    calls = [("GET", f"{APP}/inputs", None), ("GET", f"{APP}/inputs/private", None),
             ("GET", f"{APP}/inputs/private/image", None), ("DELETE", f"{APP}/inputs/private", None),
             ("DELETE", f"{APP}/inputs", {"ids": ["private"]}), ("PATCH", f"{APP}/inputs", {"inputs": [{"id": "private"}]}),
             ("POST", f"{APP}/inputs", {"inputs": [image(color(9))]}), ("GET", f"{APP}/annotations", None),
             ("DELETE", f"{APP}/inputs/private/annotations/{annotation_id}", None),
             ("DELETE", "/v2/apps/a1/annotations", {"ids": [annotation_id]}), ("GET", "/v2/apps/a1/inputs/status", None)]
    for method, path, body in calls:
        r = api.http.request(method, path, json=body, headers=b)
        assert (r.status_code, r.json()["status"]["code"]) == (403, 11002), (method, path)
        assert "secret" not in r.text and "private" not in r.text.replace(path, "")
    for path in ("/v2/inputs/private", "/v2/inputs/private/image"):  # the key's own app: no such input
        r = api.http.get(path, headers=b)
        assert (r.status_code, r.json()["status"]["code"]) == (404, 30102) and "secret" not in r.text
    r = api.http.request("DELETE", f"/v2/inputs/private/annotations/{annotation_id}", headers=b)
    assert r.status_code == 404
    r = api.http.request("DELETE", "/v2/annotations", json={"ids": [annotation_id]}, headers=b)
    assert r.status_code == 404
    assert api.http.get(f"{APP}/inputs/private", headers=api.user).json()["input"]["data"]["concepts"][0]["id"] == "secret"
    assert len(annotations(api)) == 1


@pytest.mark.parametrize("inputs", [
    [{"id": "x" * 100_000, "data": {}}],
    [{"data": {"image": {"base64": "", "url": "u" * 100_000}}}],
    [{"data": {"concepts": [{"id": "c" * 100_000}]}}],
    [{"data": {"concepts": [{"id": "c"}] * 300}}],
    "not a list",
])
def test_hostile_bodies_are_refused_as_bad_requests(api, inputs):
    r = api.post(inputs)
    assert (r.status_code, r.json()["status"]["code"]) == (400, 30104)  # JSON of the wrong shape: invalid argument
    assert api.http.get(f"{APP}/inputs", headers=api.user).json()["inputs"] == []


def test_hostile_ids_in_paths_and_queries_find_nothing(api):
    api.post([image(color(4), id="real")])
    for path in (f"{APP}/inputs/real%00", f"{APP}/inputs/{'r' * 129}", f"{APP}/inputs/real/annotations/1%20OR%201",
                 f"{APP}/inputs/real/annotations/99999999999999999999999"):
        r = api.http.request("DELETE" if "annotations" in path else "GET", path, headers=api.user)
        assert r.status_code in (400, 404), path
    r = api.http.get(f"{APP}/inputs", params=[("ids", "' OR 1=1 --")] * 3, headers=api.user)
    assert r.json()["inputs"] == []
    assert len(annotations(api, ids="1 OR 1=1")) == 0
    r = api.http.get(f"{APP}/inputs", params=[("ids", str(i)) for i in range(1001)], headers=api.user)
    assert r.status_code == 400
    assert api.http.get("/v2/users/me/apps/..%2Fa2/inputs", headers=api.user).status_code in (400, 404)


def test_a_concept_named_by_its_id_is_that_concept_even_where_a_slug_differs(api):
    api.http.post(f"{APP}/concepts", json={"concepts": [{"id": "my_concept", "name": "Mine", "value": 0.0}]},
                  headers=api.user)
    api.post([image(color(11), {"id": "my_concept", "value": 1.0}, id="u1")])
    again = api.post([image(color(11), {"id": "my_concept", "value": 1.0})])  # same labels: not "differing"
    assert again.json()["inputs"][0]["data"]["metadata"]["deeptrain"]["differing_labels"] is False
    concepts = api.http.get(f"{APP}/inputs/u1", headers=api.user).json()["input"]["data"]["concepts"]
    assert concepts == [{"id": "my_concept", "name": "Mine", "value": 1.0}]
    assert [c["id"] for c in api.http.get(f"{APP}/concepts", headers=api.user).json()["concepts"]] == ["my_concept"]
