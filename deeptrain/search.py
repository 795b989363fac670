"""Visual search: a faiss index of an app's inputs embedded by one trained embedding version.

Building (``build_index``) embeds every input of the app that the index does not hold
yet with Ray Data batch inference: ``ray.data.from_items`` over (input id, storage key)
rows, ``map_batches`` with a callable class that loads the version once per actor,
reads the original bytes from object storage and embeds them through
``deeptrain.inference.predict_bytes`` — the path ``deeptrain predict`` and the Serve
``Predictor`` use, so an indexed vector equals the served embedding of the same image.
Vectors are L2-normalized float32 (inner product = cosine similarity); each faiss id is
a row of the sidecar Parquet table (``label, input_id, sha256, concepts``). Below
``DEEPTRAIN_SEARCH_APPROX_MIN`` vectors (50,000) the index is exact
(``IndexIDMap2(IndexFlatIP)``); from there on it is approximate: an inverted file
(``IVF<nlist>,Flat``, nlist = sqrt(N), k-means trained on the vectors it is built from,
searching ``nprobe`` = nlist/8 lists), which ``bench/serve_bench.py`` measures at 100,000
vectors. An approximate index is rebuilt (re-trained) when it has grown to 4 times the
size it was trained on; a concept-filtered query searches every list, so it stays exact.

A second build is incremental: only inputs missing from the index (or whose bytes
changed) are embedded, deleted inputs are removed, and every row's concepts are
refreshed from the current labels. Objects, under the app's prefix::

    apps/<app>/search/<model>/<version>/index-<gen>.faiss   the faiss index (generation <gen>)
    apps/<app>/search/<model>/<version>/rows-<gen>.parquet  faiss id -> input id, sha256, concepts
    apps/<app>/search/<model>/<version>/manifest.json       the version's newest generation
    apps/<app>/search/index.json                            the app's search index (pointer)

Each build writes a new generation and publishes the manifests last (every write is
atomic), so a reader never sees half an index; the generation before is kept for
readers still loading it. The pointer names the version that ``search`` uses; its
``build_id`` changes with every build, which is how caches (``IndexCache``, the HTTP
gateway's) notice a new index.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.services import models as model_service
from deeptrain.services.context import Context, app_prefix, require_app
from deeptrain.services.inputs import get_input_bytes, iter_inputs
from deeptrain.store import Concept

MAX_TOP_K = 1000
POINTER = "index.json"
MANIFEST = "manifest.json"
EMBED_CPUS = 0.5  # per Ray Data actor: leaves room on a 2-core machine (Ray Data starves otherwise)
APPROX_MIN_VECTORS = int(os.environ.get("DEEPTRAIN_SEARCH_APPROX_MIN", 50_000))
RETRAIN_GROWTH = 4  # rebuild an approximate index once it holds this many times what it was trained on

BuildProgress = Callable[[int, int], None]  # (images embedded since the last call, images to embed)


def search_prefix(app_id: str) -> str:
    return f"{app_prefix(app_id)}/search"


def version_prefix(app_id: str, model_id: str, version_id: str) -> str:
    return f"{search_prefix(app_id)}/{model_id}/{version_id}"


# --- embeddings ------------------------------------------------------------------------


def normalize(vectors: Any) -> np.ndarray:
    """Rows L2-normalized, float32, C-contiguous (what faiss wants)."""
    if isinstance(vectors, np.ndarray) and vectors.dtype == object:  # a column of per-row arrays
        vectors = np.stack([np.asarray(v) for v in vectors])
    x = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def embed_bytes(loaded, images: Sequence[bytes], names: Sequence[str] | None = None) -> np.ndarray:
    """Normalized embeddings of encoded images through ``deeptrain.inference`` (the serving path)."""
    from deeptrain.inference import predict_bytes

    if not images:
        return np.zeros((0, 0), dtype=np.float32)
    return normalize([out["embedding"] for out in predict_bytes(loaded, list(images), names=names)])


class _Embedder:
    """Ray Data ``map_batches`` callable: loads the version once per actor, embeds batches of inputs."""

    def __init__(self, storage_uri: str, artifacts: str):
        from deeptrain.artifacts import load_model
        from deeptrain.storage import Storage

        self.storage = Storage(storage_uri)
        self.loaded = load_model(self.storage, artifacts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = [self.storage.get_bytes(str(key)) for key in batch["storage_key"]]
        return {"input_id": batch["input_id"], "embedding": embed_bytes(self.loaded, images)}


def _embed_with_ray(ctx: Context, artifacts: str, todo: list[tuple[str, str]], batch_size: int,
                    on_batch: Callable[[list[str], np.ndarray], None]) -> None:
    import ray.data

    from deeptrain.jobs.cluster import ensure_ray, worker_env

    ensure_ray()
    ds = ray.data.from_items([{"input_id": i, "storage_key": k} for i, k in todo],
                             override_num_blocks=max(1, min(len(todo) // batch_size, 64)))
    ds = ds.map_batches(_Embedder, fn_constructor_kwargs={"storage_uri": ctx.storage.uri, "artifacts": artifacts},
                        batch_size=batch_size, batch_format="numpy", num_cpus=EMBED_CPUS,
                        compute=ray.data.ActorPoolStrategy(size=1),
                        runtime_env={"env_vars": worker_env(ctx.settings.as_env())})
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
        on_batch([str(i) for i in batch["input_id"]], normalize(batch["embedding"]))


# --- the index -------------------------------------------------------------------------


def make_index(vectors: np.ndarray, labels: np.ndarray, approx_min: int = APPROX_MIN_VECTORS):
    """A faiss index over normalized vectors with these ids: exact below ``approx_min`` vectors, else IVF."""
    import faiss

    n, dim = vectors.shape
    if n < approx_min:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    else:
        nlist = max(1, int(math.sqrt(n)))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = max(1, nlist // 8)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by id
    index.add_with_ids(vectors, labels)
    return index


def _is_approximate(index) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(index), faiss.IndexIVF)


def _needs_rebuild(index, total: int, trained_on: int) -> bool:
    if _is_approximate(index):
        return total >= RETRAIN_GROWTH * trained_on
    return total >= APPROX_MIN_VECTORS


@dataclass
class SearchIndex:
    """One generation of an index: faiss index + rows (faiss id -> input id, sha256, concepts)."""

    manifest: dict[str, Any]
    index: Any  # faiss.IndexIDMap2
    rows: dict[int, dict[str, Any]]

    def __post_init__(self) -> None:
        self.by_input = {row["input_id"]: label for label, row in self.rows.items()}

    @property
    def artifacts(self) -> str:
        return self.manifest["artifacts"]

    @property
    def total(self) -> int:
        return int(self.index.ntotal)

    def vector_of(self, input_id: str) -> np.ndarray | None:
        label = self.by_input.get(input_id)
        return None if label is None else normalize(self.index.reconstruct(label))

    def query(self, vector: Any, top_k: int = 10, concept: str | None = None,
              exclude: str | None = None) -> list[dict[str, Any]]:
        """The ``top_k`` nearest inputs (best first), optionally only those labelled ``concept``."""
        import faiss

        top_k = check_top_k(top_k)
        v = normalize(vector)
        if v.shape[1] != self.index.d:
            raise InvalidInput(f"query vector has {v.shape[1]} dimensions, the index {self.index.d}")
        skip = self.by_input.get(exclude) if exclude is not None else None
        params, candidates = None, self.total
        if concept is not None:
            labels = np.array([lab for lab, row in self.rows.items() if concept in row["concepts"] and lab != skip],
                              dtype=np.int64)
            if not len(labels):
                return []
            selector = faiss.IDSelectorBatch(labels)
            if _is_approximate(self.index):  # every list: the filtered hits are exact
                ivf = faiss.downcast_index(self.index)
                params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist)
            else:
                params = faiss.SearchParameters(sel=selector)
            candidates = len(labels)
        k = min(top_k + (skip is not None), candidates)
        if k <= 0:
            return []
        scores, labels = self.index.search(v, k, params=params)
        hits = []
        for score, label in zip(scores[0].tolist(), labels[0].tolist()):
            if label < 0 or label == skip:
                continue
            row = self.rows[label]
            hits.append({"input_id": row["input_id"], "score": float(score), "concepts": list(row["concepts"])})
        return hits[:top_k]


def _read_rows(data: bytes) -> dict[int, dict[str, Any]]:
    # ParquetFile reads on this thread; pq.read_table's dataset scanner may drop the last reference to
    # the source on one of Arrow's pool threads after it returns, and releasing Python bytes there needs the
    # GIL, which a finalizing interpreter never gives back (the process aborts at exit: "terminate called
    # without an active exception").
    table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    return {int(r["label"]): {"input_id": r["input_id"], "sha256": r["sha256"], "concepts": list(r["concepts"] or [])}
            for r in table.to_pylist()}


def _rows_parquet(rows: dict[int, dict[str, Any]]) -> bytes:
    labels = sorted(rows)
    table = pa.table({
        "label": pa.array(labels, pa.int64()),
        "input_id": pa.array([rows[k]["input_id"] for k in labels], pa.string()),
        "sha256": pa.array([rows[k]["sha256"] for k in labels], pa.string()),
        "concepts": pa.array([rows[k]["concepts"] for k in labels], pa.list_(pa.string())),
    })
    out = pa.BufferOutputStream()
    pq.write_table(table, out)
    return out.getvalue().to_pybytes()


def _load(ctx: Context, manifest: dict[str, Any]) -> SearchIndex:
    import faiss

    data = ctx.storage.get_bytes(manifest["index"])
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    return SearchIndex(manifest, index, _read_rows(ctx.storage.get_bytes(manifest["rows"])))


def _read_json(ctx: Context, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(ctx.storage.get_bytes(key))
    except NotFound:
        return None


def read_pointer(ctx: Context, app_id: str) -> dict[str, Any]:
    """The app's search index (which version, which generation); NotFound when none was built."""
    with ctx.store.session() as s:
        require_app(s, app_id)
    pointer = _read_json(ctx, f"{search_prefix(app_id)}/{POINTER}")
    if pointer is None:
        raise NotFound(f"app {app_id!r} has no search index yet: build one with "
                       f"`deeptrain search index {app_id} --model <embedding model>`")
    return pointer


class IndexCache:
    """Loaded indexes per app, reloaded when the app's pointer names another build (thread-safe)."""

    def __init__(self, max_apps: int = 8):
        self.max_apps = max_apps
        self._entries: OrderedDict[tuple[str, str], SearchIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ctx: Context, app_id: str) -> SearchIndex:
        pointer = read_pointer(ctx, app_id)
        key = (ctx.storage.uri, app_id)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached.manifest.get("build_id") == pointer.get("build_id"):
                self._entries.move_to_end(key)
                return cached
        loaded = _load(ctx, pointer)
        with self._lock:
            self._entries[key] = loaded
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_apps:
                self._entries.popitem(last=False)
        return loaded


_INDEXES = IndexCache()


def load_index(ctx: Context, app_id: str) -> SearchIndex:
    """The app's current search index (cached per process until the pointer changes)."""
    return _INDEXES.get(ctx, app_id)


# --- building --------------------------------------------------------------------------


def _positive_concepts(inp) -> list[str]:
    return sorted({a.concept_id for a in inp.annotations if a.value})


def _resolve_embedding_version(ctx: Context, app_id: str, model_id: str, version_id: str | None) -> dict[str, Any]:
    model = model_service.get_model(ctx, app_id, model_id)
    if model["task"] != "embedding":
        raise InvalidInput(f"model {model_id!r} is a {model['task']} model, not an embedding model: visual search "
                           f"needs a model created with --task embedding")
    return model_service.get_trained_version(ctx, app_id, model_id, version_id)


def build_index(ctx: Context, app_id: str, model_id: str, version_id: str | None = None, batch_size: int = 64,
                *, on_progress: BuildProgress | None = None) -> dict[str, Any]:
    """Index (or update the index of) every input of the app with a trained embedding version.

    Without ``version_id``: the model's default version, else its newest trained one.
    Makes this version the app's search index. Returns ``indexed`` (inputs embedded now),
    ``removed`` (deleted or changed inputs dropped), ``total`` and ``seconds``.
    """
    import faiss

    start = time.perf_counter()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
    version = _resolve_embedding_version(ctx, app_id, model_id, version_id)
    prefix = version_prefix(app_id, model_id, version["id"])
    manifest = _read_json(ctx, f"{prefix}/{MANIFEST}")
    old = _load(ctx, manifest) if manifest is not None else None

    current = {inp.id: (inp.sha256, inp.storage_key, _positive_concepts(inp)) for inp in iter_inputs(ctx, app_id)}
    rows: dict[int, dict[str, Any]] = {}
    stale: list[int] = []
    if old is not None:
        for label, row in old.rows.items():
            now = current.get(row["input_id"])
            if now is None or now[0] != row["sha256"]:
                stale.append(label)
            else:
                rows[label] = {**row, "concepts": now[2]}
        index = old.index
        if stale:
            index.remove_ids(np.array(stale, dtype=np.int64))
    else:
        index = None
    indexed_ids = {row["input_id"] for row in rows.values()}
    todo = [(input_id, key) for input_id, (_, key, _) in current.items() if input_id not in indexed_ids]

    next_label = int(manifest["next_label"]) if manifest else 0
    trained_on = int(manifest.get("trained_on", 0)) if manifest else 0
    if on_progress:
        on_progress(0, len(todo))
    new_labels: list[np.ndarray] = []
    new_vectors: list[np.ndarray] = []

    def add(ids: list[str], vectors: np.ndarray) -> None:
        nonlocal next_label
        labels = np.arange(next_label, next_label + len(ids), dtype=np.int64)
        new_labels.append(labels)
        new_vectors.append(vectors)
        for label, input_id in zip(labels.tolist(), ids):
            sha256, _, concepts = current[input_id]
            rows[label] = {"input_id": input_id, "sha256": sha256, "concepts": concepts}
        next_label += len(ids)
        if on_progress:
            on_progress(len(ids), len(todo))

    if todo:
        _embed_with_ray(ctx, version["artifacts"], todo, batch_size, add)
    if new_vectors:
        labels, vectors = np.concatenate(new_labels), np.concatenate(new_vectors)
        if index is None or _needs_rebuild(index, len(rows), trained_on):
            if index is not None:  # the vectors it holds join the new ones
                kept = np.array(sorted(set(rows) - set(labels.tolist())), dtype=np.int64)
                labels = np.concatenate([kept, labels])
                vectors = np.concatenate([normalize([index.reconstruct(int(k)) for k in kept])
                                          if len(kept) else np.zeros((0, vectors.shape[1]), np.float32), vectors])
            index = make_index(vectors, labels)
            trained_on = len(labels)
        else:
            index.add_with_ids(vectors, labels)
    if index is None:
        raise InvalidInput(f"app {app_id!r} has no inputs to index")

    changed = bool(todo or stale) or old is None or any(old.rows[k]["concepts"] != r["concepts"]
                                                        for k, r in rows.items())
    if changed:
        generation = (int(manifest["generation"]) + 1) if manifest else 1
        manifest = {
            "app_id": app_id, "model_id": model_id, "version_id": version["id"], "artifacts": version["artifacts"],
            "generation": generation, "build_id": uuid.uuid4().hex, "dim": int(index.d), "total": int(index.ntotal),
            "next_label": next_label, "trained_on": trained_on, "approximate": _is_approximate(index),
            "index": f"{prefix}/index-{generation:05d}.faiss",
            "rows": f"{prefix}/rows-{generation:05d}.parquet",
            "updated_at": datetime.now(timezone.utc).isoformat(),
        }
        ctx.storage.put_bytes(manifest["index"], faiss.serialize_index(index).tobytes())
        ctx.storage.put_bytes(manifest["rows"], _rows_parquet(rows))
        ctx.storage.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
    assert manifest is not None
    pointer = _read_json(ctx, f"{search_prefix(app_id)}/{POINTER}")
    if pointer is None or pointer.get("build_id") != manifest["build_id"]:
        ctx.storage.put_bytes(f"{search_prefix(app_id)}/{POINTER}", json.dumps(manifest, indent=2).encode())
    if changed and manifest["generation"] > 2:  # keep the generation before for readers still loading it
        for key in (f"{prefix}/index-{manifest['generation'] - 2:05d}.faiss",
                    f"{prefix}/rows-{manifest['generation'] - 2:05d}.parquet"):
            ctx.storage.delete(key)
    return {"app_id": app_id, "model_id": model_id, "version_id": version["id"], "indexed": len(todo),
            "removed": len(stale), "total": int(index.ntotal), "dim": int(index.d),
            "seconds": round(time.perf_counter() - start, 3)}


# --- querying --------------------------------------------------------------------------


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
    return top_k


def check_concept(ctx: Context, app_id: str, concept: str | None) -> None:
    if concept is None:
        return
    with ctx.store.session() as s:
        require_app(s, app_id)
        if s.get(Concept, (app_id, concept)) is None:
            known = s.scalars(select(Concept.id).where(Concept.app_id == app_id).order_by(Concept.id)).all()
            raise NotFound(f"concept {concept!r} does not exist in app {app_id!r} "
                           f"(concepts: {', '.join(known) or 'none'})")


def query_source(ctx: Context, app_id: str, index: SearchIndex, image: bytes | None = None,
                 input_id: str | None = None, where: str = "query image") -> tuple[np.ndarray | None, bytes | None]:
    """What to search with: the stored vector of an indexed input, else image bytes to embed (header checked;
    decoded once, when embedded)."""
    from deeptrain.images import check_header

    if (image is None) == (input_id is None):
        raise InvalidInput("give exactly one of an image or an input id to search with")
    if input_id is not None:
        vector = index.vector_of(input_id)
        if vector is not None:
            return vector, None
        try:
            image = get_input_bytes(ctx, app_id, input_id)  # added since the last build: embed it now
        except NotFound:
            raise NotFound(f"input {input_id!r} does not exist in app {app_id!r}") from None
        return None, image
    try:
        check_header(image, max_bytes=ctx.settings.max_image_bytes, max_pixels=ctx.settings.max_image_pixels)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    return None, image


_MODELS: OrderedDict[tuple[str, str], Any] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _loaded_model(ctx: Context, artifacts: str):
    from deeptrain.artifacts import load_model

    key = (ctx.storage.uri, artifacts)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    loaded = load_model(ctx.storage, artifacts)
    with _MODELS_LOCK:
        _MODELS[key] = loaded
        while len(_MODELS) > 2:
            _MODELS.popitem(last=False)
    return loaded


def search(ctx: Context, app_id: str, image: bytes | None = None, input_id: str | None = None, top_k: int = 10,
           concept: str | None = None) -> list[dict[str, Any]]:
    """Nearest inputs of the app to an image or a stored input (itself excluded), best first.

    Each hit is ``{"input_id", "score" (cosine similarity), "concepts"}``; ``concept``
    keeps only inputs labelled with it.
    """
    top_k = check_top_k(top_k)
    index = load_index(ctx, app_id)
    check_concept(ctx, app_id, concept)
    vector, data = query_source(ctx, app_id, index, image, input_id)
    if vector is None:
        vector = embed_bytes(_loaded_model(ctx, index.artifacts), [data], ["query image"])  # type: ignore[list-item]
    return index.query(vector, top_k, concept, exclude=input_id)


def index_info(ctx: Context, app_id: str) -> dict[str, Any]:
    """The app's search index pointer (model, version, size, when built)."""
    pointer = read_pointer(ctx, app_id)
    return {k: pointer[k] for k in ("app_id", "model_id", "version_id", "generation", "dim", "total", "updated_at")}

