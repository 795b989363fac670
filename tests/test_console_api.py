"""The control-plane routes the web console needs, in process (no Ray) over real Fashion-MNIST images: input
filters (concept, split, labelled) in every combination against what the labels say, the counts, thumbnails
(size and aspect, as data URLs and as the image route's PNG), hostile query values (400 naming the
parameter), another app's key (no leak), the templates listing for every registered template, and resuming a
version (trained: 400; without a cluster: the cluster error)."""

from __future__ import annotations

import base64
import io
import itertools
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deeptrain.config import Settings
from deeptrain.params import HyperParams
from deeptrain.services import keys
from deeptrain.services import models as model_service
from deeptrain.services.context import Context
from deeptrain.templates import all_templates
from deeptrain.wire import codes
from serve.v2.control import control_api
from serve.v2.render_models import TYPE_OF_TASK
from serve.v2.state import Services

A1 = "/v2/apps/a1"
SPLITS = ("train", "validation", "test", None)
N = 40  # Fashion-MNIST inputs f00..f39, plus "wide": one of them enlarged to 280x140, no split, no label


def _label(i: int, label: int) -> tuple[list[dict], list[dict]]:
    """Input i's (concepts, regions): none, a negative "bag" only, a "bag" box, a positive class plus a
    positive "bag", a positive class only, by i % 5."""
    kind = i % 5
    if kind == 1:
        return [{"id": "bag", "value": 0.0}], []
    if kind == 2:
        box = {"top_row": 0.1, "left_col": 0.2, "bottom_row": 0.7, "right_col": 0.8}
        return [], [{"region_info": {"bounding_box": box}, "data": {"concepts": [{"id": "bag", "value": 1.0}]}}]
    if kind == 3:
        return [{"id": f"class-{label}", "value": 1.0}, {"id": "bag", "value": 1.0}], []
    if kind == 4:
        return [{"id": f"class-{label}", "value": 1.0}], []
    return [], []


def expected_ids(concept: str | None, split: str | None, labelled: bool | None) -> list[str]:
    """The ids a filter keeps, from how the inputs were labelled (``_label``)."""
    rows = [(f"f{i:02d}", SPLITS[i % 4], i % 5) for i in range(N)] + [("wide", None, 0)]
    keep = []
    for input_id, input_split, kind in rows:
        if concept is not None and not (concept == "bag" and kind in (2, 3)):
            continue
        if split is not None and (input_split or "none") != split:
            continue
        if labelled is not None and (kind in (2, 3, 4)) != labelled:
            continue
        keep.append(input_id)
    return sorted(keep)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Apps a1 (the 41 inputs) and a2 (empty), a user key and an a2 key with every scope but admin."""
    from deeptrain.sample_data import load_fashion_mnist

    home = tmp_path_factory.mktemp("console-api") / "home"
    ctx = Context.from_settings(Settings.from_env(env={"DEEPTRAIN_HOME": str(home)}))
    http = TestClient(control_api(Services(ctx)), raise_server_exceptions=False)
    user = {"Authorization": f"Key {keys.create_user_key(ctx)['key']}"}
    for app in ("a1", "a2"):
        assert http.post("/v2/apps", json={"apps": [{"id": app}]}, headers=user).status_code == 200
    images, labels = load_fashion_mnist("test")
    seen: dict[bytes, int] = {}
    for img, label in zip(images, labels):
        seen.setdefault(_png(Image.fromarray(img, mode="L")), int(label))
        if len(seen) == N + 1:
            break
    pngs = list(seen.items())
    inputs, originals = [], {}
    for i, (data, label) in enumerate(pngs[:N]):
        concepts, regions = _label(i, label)
        item = {"id": f"f{i:02d}", "data": {"image": {"base64": base64.b64encode(data).decode()},
                                           "concepts": concepts, "regions": regions}}
        if SPLITS[i % 4]:
            item["split"] = SPLITS[i % 4]
        inputs.append(item)
        originals[f"f{i:02d}"] = data
    wide = _png(Image.open(io.BytesIO(pngs[N][0])).resize((280, 140)))
    inputs.append({"id": "wide", "data": {"image": {"base64": base64.b64encode(wide).decode()}}})
    originals["wide"] = wide
    r = http.post(f"{A1}/inputs", json={"inputs": inputs}, headers=user)
    assert r.status_code == 200 and r.json()["status"]["code"] == codes.SUCCESS, r.text
    other_key = keys.create_key(ctx, "a2", ("inputs", "train", "predict"))
    other = {"Authorization": f"Key {other_key['key']}"}
    return SimpleNamespace(http=http, ctx=ctx, user=user, other=other, other_id=other_key["id"],
                           originals=originals)


def _refusal(world, r) -> str:
    """A refusal's text without the refused key's own id (random hex, which may contain any short id)."""
    assert r.status_code in (403, 404) and set(r.json()) == {"status"}, r.text
    return r.text.replace(world.other_id, "<key>")


def _get(world, path: str, headers=None, **params):
    return world.http.get(path, params=params, headers=headers or world.user)


def _decoded(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):])))


# --- A1: filters, counts, thumbnails ------------------------------------------------------------------------

FILTERS = list(itertools.product((None, "bag", "no-such-concept"), ("train", "validation", "test", "none", None),
                                 (None, True, False)))


@pytest.mark.parametrize("concept,split,labelled", FILTERS)
def test_filters_keep_exactly_the_inputs_their_labels_say_in_id_order(world, concept, split, labelled):
    params = {k: v for k, v in {"concept_id": concept, "split": split,
                                "labelled": None if labelled is None else str(labelled).lower()}.items() if v}
    want = expected_ids(concept, split, labelled)
    listed = _get(world, f"{A1}/inputs", per_page=1000, **params)
    assert listed.status_code == 200, listed.text
    assert [i["id"] for i in listed.json()["inputs"]] == want
    counts = _get(world, f"{A1}/inputs/counts", **params).json()["counts"]
    assert counts["matching"] == len(want)


def test_filtered_pages_split_the_matching_inputs_in_id_order(world):
    want = expected_ids("bag", None, True)
    pages = [[i["id"] for i in _get(world, f"{A1}/inputs", concept_id="bag", labelled="true", page=p,
                                    per_page=3).json()["inputs"]] for p in range(1, 7)]
    assert all(len(p) == 3 for p in pages[:5]) and len(want) == 16
    assert list(itertools.chain(*pages)) == want


def test_counts_give_the_apps_total_labelled_and_splits(world):
    counts = _get(world, f"{A1}/inputs/counts").json()["counts"]
    labelled = len(expected_ids(None, None, True))
    assert counts == {"matching": N + 1, "total": N + 1, "labelled": labelled, "unlabelled": N + 1 - labelled,
                      "splits": {"train": 10, "validation": 10, "test": 10, "none": 11}}
    narrowed = _get(world, f"{A1}/inputs/counts", split="test", labelled="false").json()["counts"]
    assert narrowed["matching"] == len(expected_ids(None, "test", False)) and narrowed["total"] == N + 1


@pytest.mark.parametrize("empty", ["concept_id", "split", "labelled"])
def test_an_empty_filter_value_filters_nothing(world, empty):
    assert _get(world, f"{A1}/inputs/counts", **{empty: ""}).json()["counts"]["matching"] == N + 1


@pytest.mark.parametrize("size", [16, 24, 96, 256])
def test_list_thumbnails_fit_the_size_keep_the_aspect_and_never_enlarge(world, size):
    r = _get(world, f"{A1}/inputs", thumbnail=size, per_page=60)
    inputs = {i["id"]: i for i in r.json()["inputs"]}
    assert len(inputs) == N + 1 and all(i["thumbnail"] for i in inputs.values())
    assert _decoded(inputs["f00"]["thumbnail"]).size == (min(28, size),) * 2
    assert _decoded(inputs["wide"]["thumbnail"]).size == (size, size // 2)
    assert "thumbnail" not in _get(world, f"{A1}/inputs", per_page=2).json()["inputs"][0]


def test_a_thumbnail_shows_the_stored_image(world):
    r = _get(world, f"{A1}/inputs", ids=["f07"], thumbnail=28)
    original = Image.open(io.BytesIO(world.originals["f07"]))
    assert list(_decoded(r.json()["inputs"][0]["thumbnail"]).getdata()) == list(original.getdata())


@pytest.mark.parametrize("size,expected", [(16, (16, 8)), (100, (100, 50)), (1024, (280, 140))])
def test_the_image_route_gives_a_png_thumbnail_with_size_and_the_original_without(world, size, expected):
    sized = _get(world, f"{A1}/inputs/wide/image", size=size)
    assert sized.status_code == 200 and sized.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(sized.content)).size == expected
    plain = _get(world, f"{A1}/inputs/wide/image")
    assert plain.content == world.originals["wide"]
    for r in (sized, plain):
        assert r.headers["cache-control"] == "private, max-age=3600"


BAD = [
    ("/inputs", {"split": "training"}, "split"),
    ("/inputs", {"split": "TEST; drop"}, "split"),
    ("/inputs/counts", {"split": "nope"}, "split"),
    ("/inputs", {"labelled": "maybe"}, "labelled"),
    ("/inputs/counts", {"labelled": "2"}, "labelled"),
    ("/inputs", {"thumbnail": "8"}, "thumbnail"),
    ("/inputs", {"thumbnail": "257"}, "thumbnail"),
    ("/inputs", {"thumbnail": "big"}, "thumbnail"),
    ("/inputs", {"thumbnail": "96", "per_page": "500"}, "per_page"),
    ("/inputs/f00/image", {"size": "15"}, "size"),
    ("/inputs/f00/image", {"size": "1025"}, "size"),
    ("/inputs/f00/image", {"size": "1e3"}, "size"),
]


@pytest.mark.parametrize("path,params,name", BAD)
def test_bad_query_values_answer_400_naming_the_parameter(world, path, params, name):
    r = _get(world, A1 + path, **params)
    assert r.status_code == 400, r.text
    assert name in r.json()["status"]["description"] and "invalid request body" not in r.text


@pytest.mark.parametrize("path", ["/inputs?concept_id=bag", "/inputs/counts?split=train",
                                  "/inputs?thumbnail=32", "/inputs/f00/image?size=32", "/inputs/f00/image"])
def test_another_apps_key_reads_nothing_of_the_app(world, path):
    text = _refusal(world, world.http.get(A1 + path, headers=world.other))
    assert "f00" not in text and "bag" not in text


def test_an_app_key_on_the_short_form_sees_its_own_app_only(world):
    counts = _get(world, "/v2/inputs/counts", headers=world.other).json()["counts"]
    assert counts == {"matching": 0, "total": 0, "labelled": 0, "unlabelled": 0,
                      "splits": {"train": 0, "validation": 0, "test": 0, "none": 0}}
    assert _get(world, "/v2/inputs", headers=world.other, thumbnail=32).json()["inputs"] == []
    assert _get(world, "/v2/inputs/f00/image", headers=world.other, size=32).status_code == 404


# --- A3: templates ------------------------------------------------------------------------------------------

def _listed(world, headers=None, path="/v2/templates") -> list[dict]:
    r = world.http.get(path, headers=headers or world.user)
    assert r.status_code == 200, r.text
    return r.json()["templates"]


@pytest.mark.parametrize("template", all_templates(), ids=lambda t: f"{t.task}-{t.name}")
def test_templates_list_each_template_with_its_params_and_constraints(world, template):
    listed = [t for t in _listed(world) if (t["task"], t["name"]) == (template.task, template.name)]
    assert len(listed) == 1
    t = listed[0]
    assert (t["model_type_id"], t["description"], t["reference"]) == (TYPE_OF_TASK[template.task],
                                                                      template.description, template.reference)
    assert (t["reference_num_params"], t["min_image_size"], t["defaults"]) == (
        template.reference_num_params, template.min_image_size, dict(template.defaults))
    params = {p["name"]: p for p in t["params"]}
    assert set(params) == set(HyperParams.model_fields)
    assert all({"name", "type", "default", "range", "description", "source", "template_default"} <= set(p)
               for p in params.values())
    image = params["image_size"]
    assert (image["minimum"], image["maximum"], image["multiple_of"]) == (max(32, template.min_image_size), 1024, 16)
    assert image["default"] == template.defaults.get("image_size", HyperParams().image_size)
    assert image["template_default"] == ("image_size" in template.defaults)
    assert (params["batch_size"]["minimum"], params["batch_size"]["maximum"]) == (1, 4096)
    assert params["precision"]["enum"] == ["fp32", "bf16", "fp16"] and "minimum" not in params["precision"]
    assert params["lrate"]["exclusive_minimum"] == 0 and params["lrate"]["nullable"] is True
    assert params["momentum"]["exclusive_maximum"] == 1 and params["momentum"]["minimum"] == 0
    assert params["use_gpu"]["nullable"] is True and "minimum" not in params["use_gpu"]
    assert not {"minimum", "maximum", "enum", "nullable"} & set(params["logreg"])


def test_templates_answer_any_valid_key_in_both_forms_and_refuse_none(world):
    assert _listed(world, world.other) == _listed(world, path="/v2/users/me/templates")
    assert len(_listed(world)) == len(all_templates())
    assert world.http.get("/v2/templates").status_code == 401
    assert world.http.get("/v2/templates", headers={"Authorization": "Key nope"}).status_code == 401


# --- A4: resume ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(world):
    from deeptrain.services import datasets as dataset_service

    r = world.http.post(f"{A1}/models", headers=world.user, json={"model": {
        "id": "clf", "model_type_id": "visual-classifier", "metadata": {"params": {"image_size": 32}}}})
    assert r.status_code == 200, r.text
    return dataset_service.snapshot(world.ctx, "a1")["id"]


def _version(world, dataset: str, status: str) -> dict:
    v = model_service.new_version(world.ctx, "a1", "clf", {"image_size": 32, "num_epochs": 1}, dataset, ["bag"])
    model_service.update_version(world.ctx, "a1", "clf", v["id"], status="training")
    return model_service.update_version(world.ctx, "a1", "clf", v["id"], status=status)


def test_resuming_a_trained_version_answers_400_and_changes_nothing(world, model):
    v = _version(world, model, "trained")
    r = world.http.post(f"{A1}/models/clf/versions/{v['id']}/resume", headers=world.user)
    assert r.status_code == 400 and "already trained" in r.json()["status"]["description"]
    assert model_service.get_version(world.ctx, "a1", "clf", v["id"])["status"] == "trained"


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_resuming_without_a_cluster_answers_the_cluster_error(world, model, status):
    v = _version(world, model, status)
    r = world.http.post(f"{A1}/models/clf/versions/{v['id']}/resume", headers=world.user)
    assert (r.status_code, r.json()["status"]["code"]) == (503, codes.CLUSTER_INTERNAL_FAILURE)
    assert "no Ray cluster" in r.json()["status"]["description"]
    assert model_service.get_version(world.ctx, "a1", "clf", v["id"])["status"] == status


def test_resume_of_an_unknown_version_or_with_another_apps_key_reveals_nothing(world, model):
    v = _version(world, model, "failed")
    assert world.http.post(f"{A1}/models/clf/versions/nope/resume", headers=world.user).status_code == 404
    text = _refusal(world, world.http.post(f"{A1}/models/clf/versions/{v['id']}/resume", headers=world.other))
    assert v["id"] not in text
    short = world.http.post(f"/v2/models/clf/versions/{v['id']}/resume", headers=world.other)
    assert short.status_code == 404 and v["id"] not in _refusal(world, short)


def test_an_unauthenticated_request_is_refused_before_its_query_is_checked(world):
    assert world.http.get(f"{A1}/inputs", params={"split": "bogus", "thumbnail": "1"}).status_code == 401


def test_a_page_whose_stored_image_is_gone_still_lists_with_a_null_thumbnail(world):
    from deeptrain.services import inputs as input_service

    http, user = world.http, world.user
    assert http.post("/v2/apps", json={"apps": [{"id": "a3"}]}, headers=user).status_code == 200
    posted = [{"id": i, "data": {"image": {"base64": base64.b64encode(world.originals[i]).decode()}}}
              for i in ("f01", "f02")]
    assert http.post("/v2/apps/a3/inputs", json={"inputs": posted}, headers=user).status_code == 200
    world.ctx.storage.delete(input_service.get_input(world.ctx, "a3", "f01").storage_key)
    r = _get(world, "/v2/apps/a3/inputs", thumbnail=64)
    assert r.status_code == 200 and [i["thumbnail"] is None for i in r.json()["inputs"]] == [True, False]


@pytest.mark.parametrize("max_pixels,refused", [(28 * 28, False), (28 * 28 - 1, True)])
def test_thumbnails_refuse_images_over_the_pixel_limit_before_decoding(world, max_pixels, refused):
    from deeptrain.errors import InvalidInput
    from deeptrain.images_thumbnail import thumbnail_png

    if refused:
        with pytest.raises(InvalidInput, match="pixel limit"):
            thumbnail_png(world.originals["f00"], 16, max_pixels)
    else:
        assert Image.open(io.BytesIO(thumbnail_png(world.originals["f00"], 16, max_pixels))).size == (16, 16)


def test_thumbnails_refuse_a_bomb_and_a_corrupt_file(world):
    from deeptrain.errors import InvalidInput
    from deeptrain.images_thumbnail import thumbnail_png
    from tests.imagegen import bomb_png, truncated_jpeg

    for data in (bomb_png(), truncated_jpeg()):
        with pytest.raises(InvalidInput):
            thumbnail_png(data, 64, world.ctx.settings.max_image_pixels)
