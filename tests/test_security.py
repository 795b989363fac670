"""Tenant isolation and hostile input, tried as an attacker holding a valid key of another app would.

Two apps on one real server over loopback (Ray Serve), on local files + SQLite and on SeaweedFS S3 +
PostgreSQL: ``alpha`` (the attacker's key, an embedding model, its search index and a workflow) and
``beta`` (the victim). Every response the suite provokes passes a scanner that fails the test on a
server path, the storage root, the server's home or a stack trace; every hostile request is counted by
endpoint and outcome (a 5xx fails the test that sent it), and the counts are printed after the module.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from deeptrain.config import Settings
from deeptrain.sdk import Client
from tests import imagegen
from tests.conftest import BACKENDS, aws_env
from tests.test_serve import _free_port

pytestmark = pytest.mark.ray

ALPHA, BETA = "alpha", "beta"
EMBEDDING = {"image_size": 32, "batch_size": 20, "lrate": 0.05, "num_epochs": 1}
TIMEOUT_S = 5.0
TALLY: collections.Counter = collections.Counter()  # (backend, endpoint, outcome) -> hostile requests
EXPENSIVE_SIDE = 7900  # 62.4 million pixels: inside the default 64 million limit, ~0.5 s to decode and resize


@dataclass
class Deployment:
    backend: str
    client: Client
    http: httpx.Client
    version_id: str
    forbidden: list[str]
    beta_key: str

    def stored_url(self, app: str, key_suffix: str) -> str:
        return f"{self.client.ctx.storage.uri}/apps/{app}/{key_suffix}"

    def input_url(self, app: str, input_id: str) -> str:
        from deeptrain.services.inputs import get_input

        return self.client.ctx.storage.uri_for(get_input(self.client.ctx, app, input_id).storage_key)


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, format="PNG")
    return out.getvalue()


def _b64(data: bytes) -> dict:
    return {"base64": base64.b64encode(data).decode()}


def _scanner(forbidden: list[str]):
    def check(response: httpx.Response) -> None:
        response.read()
        text = response.text
        leaked = [s for s in forbidden if s and s in text]
        assert not leaked, f"{response.request.url.path} answered {response.status_code} naming {leaked}: {text[:300]}"
        assert "Traceback" not in text and "site-packages" not in text, text[:300]
    return check


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request, tmp_path_factory, ray_cluster, fashion_small):
    from serve.app import start, stop

    backend = request.param
    home = tmp_path_factory.mktemp(f"security-{backend}") / "home"
    env = {"DEEPTRAIN_HOME": str(home)}
    patch = pytest.MonkeyPatch()
    if backend == "s3":
        for k, v in aws_env(request.getfixturevalue("s3_server")).items():
            patch.setenv(k, v)
        name = f"sec_{uuid.uuid4().hex[:10]}"
        env["DEEPTRAIN_STORAGE"] = f"s3://{request.getfixturevalue('s3_bucket')}/{name}"
        env["DEEPTRAIN_DATABASE_URL"] = request.getfixturevalue("pg_server").create_database(name)
    settings = Settings.from_env(env=env, request_timeout_s=TIMEOUT_S)
    client = Client(settings)
    for app in (ALPHA, BETA):
        client.create_app(app)
    client.import_inputs(ALPHA, fashion_small / "train", format="imagefolder", split="train")
    client.import_inputs(ALPHA, fashion_small / "test", format="imagefolder", split="test")
    beta_images = tmp_path_factory.mktemp(f"beta-{backend}")
    for k in range(3):  # beta's own images, and one with the same bytes as an input of alpha
        (beta_images / "secret").mkdir(exist_ok=True)
        (beta_images / "secret" / f"s{k}.png").write_bytes(imagegen.png_bytes(color=(10 * k, 200, 90)))
    shared = next((fashion_small / "test").rglob("*.png"))
    (beta_images / "secret" / "shared.png").write_bytes(shared.read_bytes())
    assert client.import_inputs(BETA, beta_images, format="imagefolder")["imported"] == 4
    client.create_model(ALPHA, "emb", "embedding", "InceptionBatchNorm", EMBEDDING)
    version = client.train(ALPHA, "emb", workers=1)
    assert version["status"] == "trained", version["error"]
    client.build_search_index(ALPHA, "emb")
    client.create_workflow(ALPHA, "wf", ["embed:emb"])
    key = client.create_key(ALPHA, ["predict", "search"])["key"]
    beta_key = client.create_key(BETA, ["predict", "search"])["key"]
    storage = client.ctx.storage
    forbidden = [storage.uri, storage.root, str(settings.home), str(home.parent), "/tmp/pytest"]
    url = start(settings, "127.0.0.1", _free_port(), predictor_cpus=0)
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Key {key}"},
                      event_hooks={"response": [_scanner(forbidden)]}) as http:
        d = Deployment(backend, client, http, version["id"], forbidden, beta_key)
        for _ in range(10):  # the first request loads the version on the replica (from S3 too): not timed out
            if _outputs(d, _b64(shared.read_bytes())).status_code == 200:
                break
        yield d
    stop()
    patch.undo()


ENDPOINTS = ("outputs", "version_outputs", "workflows", "searches")


def _path(d: Deployment, endpoint: str) -> str:
    return {"searches": f"/v2/apps/{ALPHA}/searches", "workflows": f"/v2/apps/{ALPHA}/workflows/wf/results",
            "version_outputs": f"/v2/apps/{ALPHA}/models/emb/versions/{d.version_id}/outputs",
            "outputs": f"/v2/apps/{ALPHA}/models/emb/outputs"}[endpoint]


def _post(d: Deployment, endpoint: str, image: dict, *, input_id: str | None = None, headers=None,
          **config) -> httpx.Response:
    """One request to ``endpoint`` with ``image`` as its input (or its search query)."""
    inp = {"data": {"image": image}, **({"id": input_id} if input_id is not None else {})}
    if endpoint == "searches":
        body = {"query": {"image": image}, **config}
    elif endpoint == "workflows":
        body = {"inputs": [inp], **({"output_config": config} if config else {})}
    else:
        body = {"inputs": [inp], **({"model": {"output_info": {"output_config": config}}} if config else {})}
    return d.http.post(_path(d, endpoint), json=body, headers=headers)


def _outputs(d: Deployment, *images: dict) -> httpx.Response:
    return d.http.post(f"/v2/apps/{ALPHA}/models/emb/outputs",
                       json={"inputs": [{"data": {"image": image}} for image in images]})


def _tally(d: Deployment, endpoint: str, r: httpx.Response) -> httpx.Response:
    """Count a hostile request by endpoint and outcome; a 5xx fails the test there and then."""
    assert r.status_code < 500, (endpoint, r.status_code, r.text)
    TALLY[d.backend, endpoint, "2xx" if r.status_code < 300 else "4xx"] += 1
    return r


@pytest.fixture(scope="module", autouse=True)
def _print_tally(request):
    """After the module: the hostile requests tried, per backend, endpoint or importer, and outcome."""
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\nhostile requests (backend, endpoint or importer, outcome: count):")
        for key, n in sorted(TALLY.items()):
            print(f"  {' / '.join(key)}: {n}")


def _foreign_urls(d: Deployment) -> dict[str, str]:
    """URLs an attacker of alpha might send: beta's objects, alpha's non-input objects, and nonsense."""
    beta_input = d.client.list_inputs(BETA)[0]["id"]
    version = d.client.get_version(ALPHA, "emb", d.version_id)
    fake_sha = "ab" + "0" * 62
    uri = d.client.ctx.storage.uri
    return {
        "beta-input": d.input_url(BETA, beta_input),
        "beta-missing": d.stored_url(BETA, f"inputs/ab/{fake_sha}.png"),
        "beta-same-bytes-as-alpha": d.input_url(BETA, d.client.list_inputs(BETA)[-1]["id"]),
        "beta-folder": d.stored_url(BETA, "inputs"),
        "alpha-weights": f"{uri}/{version['artifacts']}/weights.safetensors",
        "alpha-manifest": f"{uri}/{version['artifacts']}/manifest.json",
        "alpha-report-png": f"{uri}/{version['artifacts']}/loss_lr.png",
        "alpha-dataset": d.stored_url(ALPHA, f"datasets/{version['dataset_version_id']}/_manifest.json"),
        "alpha-input-via-dotdot": f"{uri}/apps/{BETA}/../{ALPHA}/inputs/ab/{fake_sha}.png",
        "etc-passwd": "file:///etc/passwd",
        "other-bucket": f"s3://another-bucket/apps/{ALPHA}/inputs/ab/{fake_sha}.png",
        "sibling-root": f"{uri}-other/apps/{ALPHA}/inputs/ab/{fake_sha}.png",
        "http": "http://169.254.169.254/latest/meta-data/",
        "alpha-input-with-query": d.input_url(ALPHA, d.client.list_inputs(ALPHA)[0]["id"]) + "?v=1",
        "alpha-tmp-object": f"{uri}/.tmp/{fake_sha}-x.png",
        "uppercase-sha": d.input_url(ALPHA, d.client.list_inputs(ALPHA)[0]["id"]).upper(),
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_url_reaches_only_this_apps_inputs_and_every_refusal_is_the_same(deployment, endpoint):
    d = deployment
    answers = {}
    urls = _foreign_urls(d)
    assert len(urls) >= 15
    for name, url in urls.items():
        r = _tally(d, endpoint, _post(d, endpoint, {"url": url}))
        answers[name] = (r.status_code, r.json()["status"]["description"])
    refusal = answers["beta-missing"]
    assert refusal[0] == 404 and "does not name an input of app 'alpha'" in refusal[1], refusal
    assert {name: a for name, a in answers.items() if a != refusal} == {}, "a URL got another answer"
    own = d.input_url(ALPHA, d.client.list_inputs(ALPHA)[0]["id"])
    assert _post(d, endpoint, {"url": own}).status_code == 200  # the rule still lets the app's own inputs in


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hostile_inputs_are_clear_4xx_naming_the_input(deployment, endpoint):
    d = deployment
    beta_id = d.client.list_inputs(BETA)[0]["id"]
    cases = [  # (image, extra, expected status, fragment of the description)
        ({"input_id": beta_id}, {}, 404, f"input {beta_id!r} does not exist in app 'alpha'"),
        ({"input_id": "x" * 300}, {}, 400, "at most 256 characters"),
        ({"url": "file:///" + "a" * 3000}, {}, 400, "at most 2048 characters"),
        (_b64(imagegen.bomb_png()), {}, 400, "decompression bomb"),
        (_b64(imagegen.bomb_png(50_000, 50_000)), {}, 400, "decompression bomb"),
        (_b64(imagegen.png_bytes(size=(64, 48))[:-40]), {}, 400, "truncated or corrupt"),
        (_b64(imagegen.NOT_AN_IMAGE), {}, 400, "not an image"),
        ({"base64": "%%%"}, {}, 400, "not valid base64"),
        (_b64(b""), {}, 400, "empty file"),
        ({"base64": "aGk=", "url": "file:///etc/passwd"}, {}, 400, "exactly one of"),
    ]
    if endpoint == "searches":
        cases += [(_b64(imagegen.png_bytes()), {"top_k": 10**6}, 400, "top_k"),
                  (_b64(imagegen.png_bytes()), {"concept": "c" * 300}, 400, "at most 256 characters")]
    else:
        cases += [(_b64(imagegen.png_bytes()), {"max_concepts": 10**6}, 400, "max_concepts"),
                  (_b64(imagegen.png_bytes()), {"min_value": 7}, 400, "min_value")]
    assert len(cases) >= 12
    if endpoint == "searches":
        cases = [c for c in cases if "input_id" not in c[0]]  # a query names an input at query level
        r = _tally(d, endpoint, d.http.post(f"/v2/apps/{ALPHA}/searches", json={"query": {"input_id": beta_id}}))
        assert (r.status_code, beta_id in r.json()["status"]["description"]) == (404, True), r.text
    for image, extra, status, fragment in cases:
        r = _tally(d, endpoint, _post(d, endpoint, image, **extra))
        assert r.status_code == status, (image.keys(), r.text)
        description = r.json()["status"]["description"]
        assert fragment in description, description
        if status == 400 and "base64" in image and not extra and "exactly" not in fragment:
            assert description.startswith(("inputs[0]", "query")), description
    if endpoint != "searches":  # the caller's own id names the input in the error
        r = _tally(d, endpoint, _post(d, endpoint, _b64(b"junk"), input_id="my-photo-7"))
        assert "inputs[0] (id 'my-photo-7')" in r.json()["status"]["description"], r.text
        r = _tally(d, endpoint, _post(d, endpoint, _b64(imagegen.png_bytes()), input_id="i" * 257))
        assert r.status_code == 400, r.text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_keys_are_checked_before_the_body_is_read(deployment, endpoint):
    d = deployment
    path = _path(d, endpoint)
    garbage = b"{not json" + b"x" * 1000
    for headers, status in [({"Authorization": ""}, 401), ({"Authorization": "Key nope"}, 401),
                            ({"Authorization": "Bearer x"}, 401), ({"Authorization": f"Key {d.beta_key}"}, 403)]:
        r = _tally(d, endpoint, d.http.post(path, content=garbage, headers={**headers,
                                                                           "content-type": "application/json"}))
        assert r.status_code == status, r.text  # not the 400 a parsed body would give
    # beta's own key with a valid body: still refused on alpha's resources
    r = _tally(d, endpoint, _post(d, endpoint, _b64(imagegen.png_bytes()), headers={"Authorization": f"Key {d.beta_key}"}))
    assert r.status_code == 403, r.text


def _replica_pid() -> int:
    from ray.util.state import list_actors

    actors = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "Predictor" in a.class_name]
    assert len(actors) == 1, actors
    return actors[0].pid


def _peak_rss_growth(pid: int, action) -> tuple[float, object]:
    """(MB the process's peak RSS grew by during ``action``, its result): the peak is reset first (clear_refs 5)."""
    status = Path(f"/proc/{pid}/status")

    def kb(field: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1])

    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = kb("VmRSS")
    result = action()
    return (kb("VmHWM") - before) / 1024, result


@pytest.mark.parametrize("size", [(1, 200_000), (200_000, 1)], ids=["1x200000", "200000x1"])
def test_thin_images_are_predicted_in_bounded_memory(deployment, size, capsys):
    d = deployment
    data = _png(size)
    assert len(data) < 2000
    pid = _replica_pid()
    start = time.perf_counter()
    growth, r = _peak_rss_growth(pid, lambda: _tally(d, "outputs", _outputs(d, _b64(data))))
    seconds = time.perf_counter() - start
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"]["embeddings"][0]["num_dimensions"] == 256
    assert growth < 200, f"the replica's peak RSS grew by {growth:.0f} MB for a {len(data)}-byte image"
    with capsys.disabled():
        print(f"\n[{d.backend}] {size[0]}x{size[1]} PNG of {len(data)} bytes: 200 in {seconds:.2f} s, "
              f"replica peak RSS +{growth:.0f} MB")


def test_a_timed_out_request_frees_the_replica(deployment, capsys):
    d = deployment
    expensive = _b64(_png((EXPENSIVE_SIDE, EXPENSIVE_SIDE), "RGB"))
    ordinary = _b64(imagegen.png_bytes())
    start = time.perf_counter()
    r = _outputs(d, *[expensive] * 16)
    TALLY[d.backend, "outputs", "504 on purpose"] += 1
    took = time.perf_counter() - start
    assert r.status_code == 504 and "DEEPTRAIN_REQUEST_TIMEOUT_S" in r.json()["status"]["description"], r.text
    answers = []
    for _ in range(2):  # the next ordinary requests: answered, not stuck behind the abandoned work
        t = time.perf_counter()
        answers.append((_outputs(d, ordinary).status_code, time.perf_counter() - t))
    assert [status for status, _ in answers] == [200, 200], answers
    with capsys.disabled():
        print(f"\n[{d.backend}] 16 images of {EXPENSIVE_SIDE}x{EXPENSIVE_SIDE}: 504 after {took:.1f} s; the next "
              f"two ordinary requests answered in {', '.join(f'{s:.2f} s' for _, s in answers)}")


def test_a_bad_image_fails_only_its_own_request(deployment):
    """Concurrent requests batched together on the replica: the corrupt one is a 400, the others 200."""
    import concurrent.futures

    d = deployment
    good = _b64(imagegen.png_bytes())
    bad = _b64(imagegen.png_bytes(size=(64, 48))[:-40])  # passes the header check, fails to decode
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_outputs, d, bad if k == 3 else good) for k in range(8)]
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200, 200, 200, 400, 200, 200, 200, 200]


def test_docs_load_nothing_from_outside(deployment):
    d = deployment
    for page in ("/docs", "/redoc"):
        html = d.http.get(page).text
        assert "cdn." not in html and "https://" not in html.replace("https://fastapi.tiangolo.com", "")
        scripts = [s.split('"')[0] for s in html.split('src="')[1:]]
        assert scripts, html
        for src in scripts:
            assert src.startswith("/"), src
            assert d.http.get(src).status_code == 200, src


def _import_rows(d: Deployment, tmp_path: Path, fmt: str, rows: list[dict]) -> dict:
    path = tmp_path / f"rows.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text("url,concepts\n" + "".join(f"{r['url']},x\n" for r in rows))
    return d.client.import_inputs(ALPHA, path, format=fmt)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_url_rows_import_nothing_of_another_app(deployment, fmt, tmp_path):
    d = deployment
    urls = _foreign_urls(d)
    before = len(d.client.list_inputs(ALPHA))
    report = _import_rows(d, tmp_path, fmt, [{"url": u} for u in urls.values()])
    assert report["imported"] == 0 and report["duplicates"] == 0, report
    reasons = {r["reason"] for r in report["rejected"]}
    assert len(report["rejected"]) == len(urls) and len(reasons) == 1, reasons  # one answer for all
    assert "does not name an input of app 'alpha'" in reasons.pop()
    assert len(d.client.list_inputs(ALPHA)) == before
    text = json.dumps(report)
    assert not [s for s in d.forbidden[:3] if s in text.replace(str(tmp_path), "")]
    TALLY[d.backend, f"import {fmt} url rows", "refused"] += len(urls)


# --- importers: the same hostile files through every format -------------------------------------------------

IMPORT_FORMATS = ("imagefolder", "csv", "jsonl", "coco", "voc", "yolo")


def _hostile_files(folder: Path, outside: Path, beta_object: Path) -> list[str]:
    """Write the hostile files (and one good image, good.png) into ``folder``; return the hostile names."""
    folder.mkdir(parents=True, exist_ok=True)
    (outside / "outside.png").write_bytes(imagegen.png_bytes(color=(1, 2, 3)))
    files = {
        "empty.png": b"", "text.png": imagegen.NOT_AN_IMAGE, "trunc.jpg": imagegen.truncated_jpeg(),
        "cut.png": imagegen.png_bytes(size=(64, 48))[:-40], "bomb.png": imagegen.bomb_png(),
        "pillowbomb.png": imagegen.bomb_png(50_000, 50_000), "zero.png": imagegen.zero_size_png(),
    }
    ico = io.BytesIO()
    Image.new("RGB", (16, 16)).save(ico, format="ICO")
    files["icon.png"] = ico.getvalue()  # an image, in a format we do not take
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with (folder / "huge.png").open("wb") as f:  # 300 MiB by its size (sparse): refused before it is read
        f.truncate(300 * 2**20)
    links = {"passwd.png": Path("/etc/passwd"), "outside.png": outside / "outside.png", "beta.png": beta_object,
             "chain.png": folder / "passwd.png"}
    for name, target in links.items():
        (folder / name).symlink_to(target)
    (folder / "good.png").write_bytes(imagegen.png_bytes(color=(240, 10, 10), size=(40, 30)))
    return [*files, "huge.png", *links]


def _write_labels(fmt: str, root: Path, names: list[str]) -> Path:
    """Labels in ``fmt`` naming good.png and every hostile file (plus the paths only a label file can name)."""
    extra = ["../outside/outside.png", "/etc/passwd", "nope.png", "."]
    if fmt in ("csv", "jsonl"):
        rows = [{"path": n, "concepts": "c"} for n in ["good.png", *names, *extra]]
        path = root / f"labels.{fmt}"
        if fmt == "csv":
            path.write_text("path,concepts\n" + "".join(f"{r['path']},{r['concepts']}\n" for r in rows))
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    if fmt == "coco":
        images = [{"id": k, "file_name": n} for k, n in enumerate(["good.png", *names, *extra])]
        path = root / "coco.json"
        path.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
        return path
    if fmt == "voc":
        for k, n in enumerate(["good.png", *names, *extra]):
            (root / f"a{k:02d}.xml").write_text(f"<annotation><filename>{n}</filename></annotation>")
        return root
    raise AssertionError(fmt)


def _import_root(fmt: str, tmp_path: Path, beta_object: Path) -> tuple[Path, int]:
    """(the PATH to import, the number of hostile entries in it)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    if fmt == "imagefolder":
        root = tmp_path / "folder"
        names = _hostile_files(root / "cat", outside, beta_object)
        (root / "stray.png").write_bytes(imagegen.png_bytes())  # not inside a concept folder
        (root / "cat" / "deeper").mkdir()
        (root / "cat" / "deeper" / "x.png").write_bytes(imagegen.png_bytes())  # too deep
        (root / "linked-dir").symlink_to(outside, target_is_directory=True)  # not entered
        return root, len(names) + 2
    if fmt == "yolo":
        root = tmp_path / "yolo"
        names = _hostile_files(root / "images", outside, beta_object)
        (root / "labels").mkdir()
        (root / "classes.txt").write_text("tree\n")
        (root / "labels" / "good.txt").symlink_to("/etc/passwd")  # a label file linked out: refused
        (root / "images" / "good2.png").write_bytes(imagegen.png_bytes(color=(5, 250, 5)))
        (root / "labels" / "good2.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        (root / "images" / "bad-class.png").write_bytes(imagegen.png_bytes(color=(5, 5, 250)))
        (root / "labels" / "bad-class.txt").write_text("9 0.5 0.5 0.2 0.2\n")  # no class 9
        return root, len(names) + 2
    root = tmp_path / fmt
    names = _hostile_files(root, outside, beta_object)
    return _write_labels(fmt, root, names), len(names) + 4


def _peak_rss_growth_self(action) -> tuple[float, object]:
    import os

    return _peak_rss_growth(os.getpid(), action)


@pytest.mark.parametrize("fmt", IMPORT_FORMATS)
def test_importers_refuse_hostile_files_and_links_out(local_client, tmp_path, fmt):
    client = local_client
    client.create_app(BETA)
    client.add_input(BETA, imagegen.png_bytes(color=(99, 99, 99)), concepts=["secret"])
    from deeptrain.services.inputs import get_input

    beta_input = get_input(client.ctx, BETA, client.list_inputs(BETA)[0]["id"])
    beta_object = Path(client.ctx.storage.path(beta_input.storage_key))
    assert beta_object.is_file()
    client.create_app(ALPHA)
    path, hostile = _import_root(fmt, tmp_path, beta_object)
    growth, report = _peak_rss_growth_self(lambda: client.import_inputs(ALPHA, path, format=fmt))
    imported = client.list_inputs(ALPHA)
    assert report["imported"] == 1 and len(imported) == 1, report
    assert hostile >= 15 and len(report["rejected"]) >= hostile, (hostile, report["rejected"])
    assert growth < 150, f"importing grew the process's peak RSS by {growth:.0f} MB (the 300 MiB file was read?)"
    text = json.dumps(report)
    assert "root:x:0:0" not in text and str(beta_object) not in text and client.ctx.storage.root not in text
    assert all(i["sha256"] != beta_input.sha256 for i in imported)
    TALLY["importers", fmt, "refused"] += len(report["rejected"])


def test_yolo_data_yaml_aliases_and_oversized_label_files_are_refused(local_client, tmp_path):
    from deeptrain.errors import InvalidInput

    client = local_client
    client.create_app(ALPHA)
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(imagegen.png_bytes())
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "names: *i\n"
    (root / "data.yaml").write_text(laughs)
    with pytest.raises(InvalidInput, match="aliases are not allowed"):
        client.import_inputs(ALPHA, root, format="yolo")
    (root / "data.yaml").unlink()
    (root / "classes.txt").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="outside the import folder") as linked:
        client.import_inputs(ALPHA, root, format="yolo")
    assert "root:" not in str(linked.value)
    (root / "classes.txt").unlink()
    with (root / "classes.txt").open("wb") as f:
        f.truncate(64 * 2**20)
    with pytest.raises(InvalidInput, match="over the 4,194,304-byte limit"):
        client.import_inputs(ALPHA, root, format="yolo")
    assert client.list_inputs(ALPHA) == []


def test_label_files_read_whole_are_bounded_and_long_lines_too(tmp_path):
    from deeptrain.errors import InvalidInput
    from deeptrain.formats.tabular import MAX_LINE_CHARS

    client = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path / "home")}, max_label_file_bytes=10_000))
    client.create_app(ALPHA)
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": k, "file_name": f"{k}.png"} for k in range(1000)]}))
    with pytest.raises(InvalidInput, match="over the 10,000-byte limit for a coco file"):
        client.import_inputs(ALPHA, coco, format="coco")
    (tmp_path / "a.png").write_bytes(imagegen.png_bytes())
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(json.dumps({"path": "a.png", "metadata": {"x": "y" * (MAX_LINE_CHARS + 10)}}) + "\n"
                     + json.dumps({"path": "a.png"}) + "\n")
    report = client.import_inputs(ALPHA, jsonl, format="jsonl")
    assert report["imported"] == 1 and "over 1,048,576 characters" in report["rejected"][0]["reason"]
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("path,metadata\n" + "a.png," + "z" * (MAX_LINE_CHARS + 10) + "\n")
    with pytest.raises(InvalidInput, match="line 2 is over 1,048,576 characters"):
        client.import_inputs(ALPHA, csv_file, format="csv")


def test_cli_errors_name_no_server_path(deployment, tmp_path):
    """The CLI's errors (JSON and text) on the same hostile inputs: a cut image, another app's input and
    objects, a version that does not exist."""
    from tests.conftest import run_cli

    d = deployment
    cut = tmp_path / "cut.png"
    cut.write_bytes(imagegen.png_bytes(size=(64, 48))[:-40])
    rows = tmp_path / "rows.csv"
    rows.write_text("url,concepts\n" + "".join(f"{u},x\n" for u in _foreign_urls(d).values()))
    beta_id = d.client.list_inputs(BETA)[0]["id"]
    cases = [
        ["predict", ALPHA, "emb", str(cut)],
        ["predict", ALPHA, "emb", str(cut), "--version", "no-such-version"],
        ["inputs", "import", ALPHA, str(rows), "--format", "csv"],
        ["search", "query", ALPHA, "--input-id", beta_id],
        ["models", "report", ALPHA, "emb", "no-such-version"],
    ]
    for args in cases:
        for fmt in ([], ["--json"]):
            proc = run_cli(d.client.settings, *args, *fmt)
            out = proc.stdout + proc.stderr  # the caller's own files (tmp_path) may be named, not the server's
            assert proc.returncode != 0, (args, out)
            leaked = [s for s in d.forbidden[:4] if s and s in out]
            assert not leaked and "Traceback" not in out, (args, leaked, out[-500:])
    TALLY[d.backend, "cli", "refused"] += 2 * len(cases)
