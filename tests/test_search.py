"""Visual search on real Fashion-MNIST images: index, query (SDK, CLI, HTTP), incremental updates, errors.

One embedding model is trained for a few epochs for the module (the mechanics need
vectors without ties, not a good model; the precision@10 of a fully trained version is asserted by
``tests/test_learning.py``); the app also holds 60 of the official test images (6 per
class), which are the held-out queries.

The approximate index's own behaviour (the ``nprobe`` chosen from the recall target, kept through
storage and incremental builds, degenerate data) is tested on synthetic clustered vectors, with
``build_index``'s embedding step replaced by a table of vectors (``_VectorApp``): no Ray, a few seconds.
"""

from __future__ import annotations

import base64
import io
import json

from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from deeptrain.config import Settings
from deeptrain.errors import Conflict, InvalidInput, NotFound
from deeptrain.ids import slugify
from deeptrain.sample_data import (FASHION_MNIST_CLASSES, class_folder_name, load_fashion_mnist,
                                   write_fashion_mnist_folder)
from deeptrain.sdk import Client
from deeptrain.search import build as search_build
from deeptrain.search import load_index
from deeptrain.services import models as model_service
from tests.conftest import import_fashion, run_cli
from tests.test_serve import _b64, _free_port

ray = pytest.mark.ray  # the tests on the trained embedding model; the index's own tests need no cluster

TRAIN_PER_CLASS, QUERY_PER_CLASS = 200, 6
# a few epochs: a barely trained model maps many images to near-identical vectors (ties in every ranking)
EMBEDDING = {"image_size": 32, "batch_size": 32, "lrate": 0.1, "num_epochs": 4, "init_epochs": 3, "step_epochs": 1}


def _png(array) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode="L").save(out, format="PNG")
    return out.getvalue()


def _unseen_images(count: int) -> list[tuple[bytes, str]]:
    """(PNG bytes, concept id) of official test images the app does not hold (the last ones of the file)."""
    images, labels = load_fashion_mnist("test")
    return [(_png(images[i]), slugify(class_folder_name(FASHION_MNIST_CLASSES[labels[i]])))
            for i in range(len(images) - 1, len(images) - 1 - count, -1)]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, ray_cluster):
    """An app with a trained embedding version and its search index."""
    root = tmp_path_factory.mktemp("search-fashion")
    write_fashion_mnist_folder(root / "train", "train", per_class=TRAIN_PER_CLASS)
    write_fashion_mnist_folder(root / "test", "test", per_class=QUERY_PER_CLASS)
    settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("search") / "home")})
    client = Client(settings)
    import_fashion(client, root)
    client.create_model("fashion", "emb", "embedding", "InceptionBatchNorm", EMBEDDING)
    version = client.train("fashion", "emb", workers=1)
    assert version["status"] == "trained", version["error"]
    progress: list[tuple[int, int]] = []
    report = client.build_search_index("fashion", "emb", on_progress=lambda n, total: progress.append((n, total)))
    return client, version, report, progress


@pytest.fixture(scope="module")
def http(indexed):
    """The HTTP API on Ray Serve over loopback, and a key with the search scope."""
    from serve.app import start, stop

    client = indexed[0]
    url = start(client.settings, "127.0.0.1", _free_port(), predictor_cpus=0)
    key = client.create_key("fashion", ["search"])["key"]
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Key {key}"}) as h:
        yield h
    stop()


def _queries(client: Client) -> list[dict]:
    return [i for i in client.list_inputs("fashion") if i["split"] == "test"]


@ray
def test_index_holds_every_input(indexed):
    client, version, report, progress = indexed
    n = 10 * (TRAIN_PER_CLASS + QUERY_PER_CLASS)
    assert report["indexed"] == report["total"] == n and report["removed"] == 0
    assert report["version_id"] == version["id"] and report["dim"] == 256
    assert progress[0] == (0, n) and sum(k for k, _ in progress) == n
    info = client.search_index_info("fashion")
    assert (info["model_id"], info["version_id"], info["total"]) == ("emb", version["id"], n)


@ray
def test_hits_are_ranked_and_leave_the_query_out(indexed):
    client = indexed[0]
    for q in _queries(client):
        hits = client.search("fashion", input_id=q["id"], top_k=10)
        assert len(hits) == 10 and q["id"] not in {h["input_id"] for h in hits}
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)


@ray
def test_image_query_equals_the_indexed_vector(indexed):
    """Searching with a stored image's bytes finds itself (score 1) and then what its input id finds
    (compared by score: a briefly trained model has near-ties whose order is arbitrary)."""
    client = indexed[0]
    q = _queries(client)[0]
    by_image = client.search("fashion", client.get_input_bytes("fashion", q["id"]), top_k=11)
    me = [h for h in by_image if h["input_id"] == q["id"]]
    assert me and me[0]["score"] == pytest.approx(1.0, abs=1e-4)
    others = [h["score"] for h in by_image if h["input_id"] != q["id"]][:10]
    by_id = client.search("fashion", input_id=q["id"], top_k=10)
    assert [h["score"] for h in by_id] == pytest.approx(others, abs=1e-4)


@ray
def test_concept_filter(indexed):
    client = indexed[0]
    q = next(i for i in _queries(client) if i["concepts"] == ["trouser"])
    hits = client.search("fashion", input_id=q["id"], top_k=7, concept="sandal")
    assert len(hits) == 7 and all(h["concepts"] == ["sandal"] for h in hits)
    index = load_index(client.ctx, "fashion")  # brute force over the sandals' stored vectors
    v = index.vector_of(q["id"])[0]
    sandals = sorted(((float(index.vector_of(r["input_id"])[0] @ v), r["input_id"])
                      for r in index.rows.values() if "sandal" in r["concepts"]), reverse=True)
    assert [h["input_id"] for h in hits] == [i for _, i in sandals[:7]]


@ray
def test_bad_input_is_a_clear_error(indexed):
    client, version, _, _ = indexed
    q = _queries(client)[0]["id"]
    client.create_app("empty")
    client.create_model("fashion", "clf", "classification", "ResNext", {"image_size": 32})
    queued = model_service.new_version(client.ctx, "fashion", "emb", version["params"],
                                       version["dataset_version_id"], version["concepts"])
    cases = [
        (lambda: client.search("empty", input_id=q), NotFound, "app 'empty' has no search index yet"),
        (lambda: client.build_search_index("fashion", "clf"), InvalidInput, "model 'clf' is a classification model"),
        (lambda: client.build_search_index("fashion", "nope"), NotFound, "model 'nope'"),
        (lambda: client.build_search_index("fashion", "emb", queued["id"]), Conflict,
         f"version {queued['id']!r} of model 'emb' is queued, not trained"),
        (lambda: client.search("fashion", input_id=q, top_k=0), InvalidInput, "top_k must be an integer from 1"),
        (lambda: client.search("fashion", input_id=q, top_k=1001), InvalidInput, "got 1001"),
        (lambda: client.search("fashion", input_id="no-such-input"), NotFound, "input 'no-such-input'"),
        (lambda: client.search("fashion", input_id=q, concept="hat"), NotFound, "concept 'hat'"),
        (lambda: client.search("fashion", b"not an image"), InvalidInput, "query image"),
        (lambda: client.search("fashion", "/no/such/file.png"), InvalidInput, "/no/such/file.png"),
        (lambda: client.search("fashion"), InvalidInput, "exactly one of an image or an input id"),
    ]
    for call, error, fragment in cases:
        with pytest.raises(error) as info:
            call()
        assert fragment in str(info.value)


@ray
def test_cli(indexed):
    client = indexed[0]
    settings = client.settings
    q = _queries(client)[0]["id"]
    proc = run_cli(settings, "search", "query", "fashion", "--input-id", q, "--top-k", "3", "--json", check=True)
    assert json.loads(proc.stdout) == client.search("fashion", input_id=q, top_k=3)
    proc = run_cli(settings, "search", "index", "fashion", "--model", "emb", "--json", check=True)
    assert json.loads(proc.stdout)["indexed"] == 0  # up to date: nothing embedded, no Ray started
    for args, code, fragment in [
        (("search", "query", "fashion"), 2, "exactly one of --image PATH or --input-id ID"),
        (("search", "query", "fashion", "--input-id", q, "--top-k", "0"), 2, "top_k"),
        (("search", "index", "fashion", "--model", "nope"), 3, "nope"),
    ]:
        proc = run_cli(settings, *args, "--json")
        assert proc.returncode == code, proc.stdout + proc.stderr
        assert fragment in json.loads(proc.stdout)["error"]["message"]


def _post(h: httpx.Client, query: dict, headers: dict | None = None, **options) -> httpx.Response:
    return h.post("/v2/apps/fashion/searches", json={"query": query, **options}, headers=headers)


@ray
def test_deleting_the_indexed_model_or_version_is_refused_while_the_index_uses_it(indexed):
    client, version, _, _ = indexed
    for other in client.list_versions("fashion", "emb"):  # a queued one (test_bad_input_...) is refused before
        if other["status"] in ("queued", "training"):
            client.cancel("fashion", "emb", other["id"])
    with pytest.raises(Conflict, match="the search index of app 'fashion' is built with model 'emb'"):
        client.delete_model("fashion", "emb")
    with pytest.raises(Conflict, match=f"is built with version '{version['id']}' of model 'emb'.*--force"):
        client.delete_version("fashion", "emb", version["id"])
    assert client.get_version("fashion", "emb", version["id"])["status"] == "trained"
    assert len(client.search("fashion", input_id=_queries(client)[0]["id"])) == 10  # the index still answers


@ray
def test_http_search_equals_the_sdk(indexed, http):
    client = indexed[0]
    data, _ = _unseen_images(1)[0]
    r = _post(http, {"image": _b64(data)}, top_k=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"]["code"] == 10000 and body["model"]["id"] == "emb"
    sdk = client.search("fashion", data, top_k=10)
    assert [h["input"]["id"] for h in body["hits"]] == [h["input_id"] for h in sdk]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h["score"] for h in sdk], abs=1e-4)
    assert [[c["id"] for c in h["concepts"]] for h in body["hits"]] == [h["concepts"] for h in sdk]
    q = _queries(client)[0]["id"]
    r = _post(http, {"input_id": q}, top_k=5, concept="bag")
    assert r.status_code == 200, r.text
    assert [h["input"]["id"] for h in r.json()["hits"]] == [
        h["input_id"] for h in client.search("fashion", input_id=q, top_k=5, concept="bag")]
    assert "/v2/apps/{app_id}/searches" in http.get("/openapi.json").json()["paths"]
    upload = http.post("/v2/apps/fashion/searches", files=[("image", ("q.png", data, "image/png"))],
                       data={"top_k": "10"})
    assert upload.status_code == 200, upload.text
    assert [h["input"]["id"] for h in upload.json()["hits"]] == [h["input_id"] for h in sdk]
    two = http.post("/v2/apps/fashion/searches", files=[("image", ("q.png", data, "image/png"))] * 2)
    assert two.status_code == 400 and "exactly one 'image' file part, got 2" in two.json()["status"]["description"]


@ray
def test_http_errors(indexed, http):
    client = indexed[0]
    predict_only = client.create_key("fashion", ["predict"])["key"]
    ok = {"image": _b64(_unseen_images(1)[0][0])}
    cases = [
        (_post(http, ok, headers={"Authorization": f"Key {predict_only}"}), 403, "lacks the 'search' scope"),
        (_post(http, {"image": {"base64": base64.b64encode(b"not an image").decode()}}), 400, "query.image"),
        (_post(http, {"image": {"base64": "%%%"}}), 400, "not valid base64"),
        (_post(http, {"input_id": "no-such-input"}), 404, "no-such-input"),
        (_post(http, ok, top_k=0), 400, "top_k"),
        (_post(http, ok, concept="hat"), 404, "concept 'hat'"),
        (_post(http, {}), 400, "exactly one of image, input_id"),
        (http.post("/v2/apps/empty/searches", json={"query": {"input_id": "x"}}), 403, "not valid for app 'empty'"),
    ]
    for r, status, fragment in cases:
        assert r.status_code == status, (status, r.text)
        assert fragment in r.json()["status"]["description"], r.text


@ray
def test_incremental_indexing(indexed, http):
    """A rebuild embeds only new inputs and drops deleted ones; the gateway picks up the new index."""
    client, _, first, _ = indexed
    new = _unseen_images(5)
    for k, (data, concept) in enumerate(new):
        client.add_input("fashion", data, concepts=[concept], input_id=f"new-{k}")
    again = client.build_search_index("fashion", "emb")
    assert (again["indexed"], again["removed"], again["total"]) == (5, 0, first["total"] + 5)
    assert client.build_search_index("fashion", "emb")["indexed"] == 0
    client.delete_input("fashion", "new-4")
    after = client.build_search_index("fashion", "emb")
    assert (after["indexed"], after["removed"], after["total"]) == (0, 1, first["total"] + 4)
    hits = client.search("fashion", new[0][0], top_k=3)
    assert hits[0]["input_id"] == "new-0" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert "new-4" not in {h["input_id"] for h in client.search("fashion", new[4][0], top_k=3)}
    r = _post(http, {"image": _b64(new[0][0])}, top_k=3)
    assert r.status_code == 200 and r.json()["hits"][0]["input"]["id"] == "new-0", r.text


def test_a_large_index_is_approximate_with_high_recall():
    """From ``approx_min`` vectors the index is IVF: Recall@10 vs exact search stays high, a
    concept-filtered query stays exact, and ids survive serialization (reconstruct, remove)."""
    import faiss
    import numpy as np

    from deeptrain.search import SearchIndex, make_index, normalize

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, 64)).astype(np.float32)
    pick = rng.integers(0, len(centres), 20_000)
    vectors = normalize(centres[pick] + 0.6 * rng.standard_normal((len(pick), 64)))
    labels = np.arange(100, 100 + len(vectors), dtype=np.int64)  # ids are not positions
    built = make_index(vectors, labels, approx_min=10_000)
    index = faiss.deserialize_index(faiss.serialize_index(built))
    assert isinstance(faiss.downcast_index(index), faiss.IndexIVF)
    rows = {int(lab): {"input_id": f"in{lab}", "sha256": "", "concepts": [f"c{pick[i] % 5}"]}
            for i, lab in enumerate(labels)}
    searcher = SearchIndex({"artifacts": ""}, index, rows)
    assert np.allclose(searcher.vector_of("in150"), vectors[50], atol=1e-6)

    exact = faiss.IndexFlatIP(64)
    exact.add(vectors)
    queries = normalize(centres[rng.integers(0, len(centres), 200)] + 0.6 * rng.standard_normal((200, 64)))
    _, truth = exact.search(queries, 10)
    recall = np.mean([len({h["input_id"] for h in searcher.query(q, 10)} & {f"in{t + 100}" for t in row}) / 10
                      for q, row in zip(queries, truth)])
    assert recall >= 0.9, recall

    in_c3 = np.flatnonzero(pick % 5 == 3)
    scores = vectors[in_c3] @ queries[0]
    expected = [f"in{in_c3[i] + 100}" for i in np.argsort(-scores)[:10]]
    assert [h["input_id"] for h in searcher.query(queries[0], 10, concept="c3")] == expected

    index.remove_ids(np.array([150], dtype=np.int64))
    assert index.ntotal == len(vectors) - 1


def _clustered(n: int, dim: int = 64, noise: float = 1.5, seed: int = 0, centres: int = 200):
    """Normalized vectors around shared random centres; at noise 1.5 a query's neighbours spread over
    many of the index's lists (the nprobe that reaches a target is neither 1 nor every list)."""
    import numpy as np

    from deeptrain.search import normalize

    rng = np.random.default_rng(seed)
    c = np.random.default_rng(1000).standard_normal((centres, dim)).astype(np.float32)
    return normalize(c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, dim)))


def _recall_at_10(searcher, queries, vectors, labels) -> float:
    import faiss
    import numpy as np

    _, truth = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    return float(np.mean([len({searcher.by_input[h["input_id"]] for h in searcher.query(q, 10)}
                              & set(labels[t].tolist())) / 10 for q, t in zip(queries, truth)]))


def test_an_approximate_index_searches_the_fewest_lists_that_reach_the_recall_target():
    import faiss
    import numpy as np

    from deeptrain.search import SearchIndex, build_tuned
    from deeptrain.search.tuning import Z, held_out, recall

    vectors, labels = _clustered(20_000), np.arange(7, 20_007, dtype=np.int64)
    index, choice = build_tuned(vectors, labels, approx_min=10_000, recall_target=0.9)
    ivf = faiss.downcast_index(index)
    assert isinstance(ivf, faiss.IndexIVFFlat) and choice["kind"] == f"IVF{ivf.nlist},Flat"
    assert 1 < choice["nprobe"] == ivf.nprobe < ivf.nlist and choice["recall"] >= 0.9
    sample = held_out(vectors, labels)  # the same sample (seeded): one list fewer falls short of the target
    fewer = recall(index, sample, choice["nprobe"] - 1)
    assert fewer.mean() - Z * fewer.std() / np.sqrt(len(fewer)) < 0.9
    rows = {int(lab): {"input_id": f"in{lab}", "sha256": "", "concepts": []} for lab in labels}
    searcher = SearchIndex({"artifacts": ""}, index, rows)
    fresh = _clustered(300, seed=1)  # queries that are not in the index
    assert _recall_at_10(searcher, fresh, vectors, labels) >= 0.87
    _, stricter = build_tuned(vectors, labels, approx_min=10_000, recall_target=0.97)
    assert stricter["nprobe"] > choice["nprobe"] and stricter["recall"] >= 0.97


def test_a_query_for_many_hits_searches_more_lists():
    """An index tuned for 10 hits may search lists holding fewer than top_k vectors: more are searched."""
    import faiss
    import numpy as np

    from deeptrain.search import SearchIndex, build_tuned

    vectors = _clustered(20_000, noise=0.6)
    index, choice = build_tuned(vectors, np.arange(20_000, dtype=np.int64), approx_min=10_000)
    assert choice["nprobe"] == 1 and faiss.downcast_index(index).invlists.list_size(0) < 1000
    searcher = SearchIndex({"artifacts": ""}, index, {i: {"input_id": str(i), "sha256": "", "concepts": []}
                                                     for i in range(20_000)})
    hits = searcher.query(vectors[0], 1000)
    assert len(hits) == 1000 and hits[0]["input_id"] == "0"


class _VectorApp:
    """An app's inputs as ``build_index`` reads them, embedded by a table (input id -> vector) instead of a
    trained model on Ray: the index's side of a build, fast."""

    def __init__(self, monkeypatch, vectors):
        self.vectors = {f"in{i:06d}": v for i, v in enumerate(vectors)}
        self.embedded: list[str] = []
        monkeypatch.setattr(search_build, "_resolve_embedding_version",
                            lambda ctx, app, model, version: {"id": "v1", "artifacts": "unused"})
        monkeypatch.setattr(search_build, "iter_inputs", lambda ctx, app: [
            SimpleNamespace(id=i, sha256=f"sha-{i}", storage_key=i, annotations=[]) for i in self.vectors])
        monkeypatch.setattr(search_build, "embed_with_ray", self._embed)

    def _embed(self, ctx, artifacts, todo, batch_size, on_batch) -> None:
        import numpy as np

        ids = [i for i, _ in todo]
        self.embedded += ids
        for start in range(0, len(ids), 5000):
            on_batch(ids[start:start + 5000], np.stack([self.vectors[i] for i in ids[start:start + 5000]]))


def _build(settings: Settings) -> tuple[dict, dict, object]:
    """``build_index`` with these settings: its report, the app's manifest and the index loaded from storage."""
    from deeptrain.search import index_info
    from deeptrain.search.index_files import load_generation, read_pointer

    client = Client(settings)
    report = search_build.build_index(client.ctx, "big", "emb")
    pointer = read_pointer(client.ctx, "big")
    assert index_info(client.ctx, "big")["search_index"] == pointer["search_index"]
    return report, pointer, load_generation(client.ctx, pointer)


def test_the_chosen_search_survives_storage_and_incremental_builds(local_settings, monkeypatch):
    import faiss
    import numpy as np

    Client(local_settings).create_app("big")
    settings = local_settings.model_copy(update={"search_approx_min": 10_000, "search_recall_target": 0.9})
    app = _VectorApp(monkeypatch, _clustered(20_000))
    report, manifest, loaded = _build(settings)
    chosen = manifest["search_index"]
    assert report["total"] == 20_000 and chosen["recall_target"] == 0.9 and chosen["recall"] >= 0.9
    assert faiss.downcast_index(loaded.index).nprobe == chosen["nprobe"] > 1  # the index file keeps nprobe

    added = _clustered(50, seed=2)
    for k, v in enumerate(added):
        app.vectors[f"new{k}"] = v
    for k in range(30):
        del app.vectors[f"in{k:06d}"]
    app.embedded.clear()
    report, manifest, loaded = _build(settings)
    assert (report["indexed"], report["removed"], report["total"]) == (50, 30, 20_020)
    assert sorted(app.embedded) == sorted(f"new{k}" for k in range(50))
    assert manifest["search_index"] == chosen and manifest["trained_on"] == 20_000  # added to, not re-trained
    assert faiss.downcast_index(loaded.index).nprobe == chosen["nprobe"]
    hits = loaded.query(added[3], 3)
    assert hits[0]["input_id"] == "new3" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert "in000003" not in {h["input_id"] for h in loaded.query(_clustered(20_000)[3], 10)}
    assert np.allclose(loaded.vector_of("in000100"), app.vectors["in000100"], atol=1e-6)

    stricter = settings.model_copy(update={"search_recall_target": 0.97})  # a new target: chosen again
    report, manifest, loaded = _build(stricter)
    assert (report["indexed"], report["removed"], report["total"]) == (0, 0, 20_020)
    assert manifest["search_index"]["recall_target"] == 0.97 and manifest["search_index"]["recall"] >= 0.97
    assert manifest["search_index"]["nprobe"] > chosen["nprobe"] and manifest["generation"] == 3
    assert faiss.downcast_index(loaded.index).nprobe == manifest["search_index"]["nprobe"]


@pytest.mark.parametrize("case", ["one vector", "two vectors", "just above approx_min", "duplicates",
                                  "all identical", "zero vectors"])
def test_degenerate_data_still_builds_and_answers(case):
    import numpy as np

    from deeptrain.search import SearchIndex, build_tuned

    vectors = {"one vector": _clustered(1), "two vectors": _clustered(2), "just above approx_min": _clustered(1001),
               "duplicates": np.repeat(_clustered(400), 5, axis=0), "all identical": np.repeat(_clustered(1), 3000, 0),
               "zero vectors": np.concatenate([np.zeros((1500, 64), np.float32), _clustered(1500)])}[case]
    n = len(vectors)
    index, choice = build_tuned(vectors, np.arange(n, dtype=np.int64), approx_min=1, recall_target=0.95)
    assert choice["kind"].startswith("IVF") and 1 <= choice["nprobe"] <= choice["nlist"]
    assert choice.get("recall", 1.0) >= 0.95
    searcher = SearchIndex({"artifacts": ""}, index, {i: {"input_id": str(i), "sha256": "", "concepts": []}
                                                     for i in range(n)})
    hits = searcher.query(vectors[-1], 10)
    assert len(hits) == min(10, n) and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
