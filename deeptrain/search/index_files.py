"""An app's search index in object storage: where each generation lives, reading it, publishing a new one.

Objects, under the app's prefix::

    apps/<app>/search/<model>/<version>/index-<gen>.faiss   the faiss index (generation <gen>)
    apps/<app>/search/<model>/<version>/rows-<gen>.parquet  faiss id -> input id, sha256, concepts
    apps/<app>/search/<model>/<version>/manifest.json       the version's newest generation
    apps/<app>/search/index.json                            the app's search index (pointer)

A generation's objects are written first and the manifests last (every write is atomic),
so a reader never sees half an index; the generation before is kept for readers still
loading it.

The keys are named in ``services.context`` (``search_prefix``, ``search_version_prefix``,
``search_pointer_key``): the services that delete models and collect garbage use them too.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deeptrain.errors import NotFound
from deeptrain.search.faiss_index import SearchIndex
from deeptrain.services.context import Context, require_app, search_pointer_key

MANIFEST = "manifest.json"


def generation_keys(prefix: str, generation: int) -> tuple[str, str]:
    """The keys of generation ``generation``'s faiss index and rows under a version's ``prefix``."""
    return f"{prefix}/index-{generation:05d}.faiss", f"{prefix}/rows-{generation:05d}.parquet"


def read_json(ctx: Context, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(ctx.storage.get_bytes(key))
    except NotFound:
        return None


def read_pointer(ctx: Context, app_id: str) -> dict[str, Any]:
    """The app's search index (which version, which generation); NotFound when none was built."""
    with ctx.store.session() as s:
        require_app(s, app_id)
    pointer = read_json(ctx, search_pointer_key(app_id))
    if pointer is None:
        raise NotFound(f"app {app_id!r} has no search index yet: build one with "
                       f"`deeptrain search index {app_id} --model <embedding model>`")
    return pointer


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


def load_generation(ctx: Context, manifest: dict[str, Any]) -> SearchIndex:
    """The generation a version manifest (or the app's pointer) names."""
    import faiss

    data = ctx.storage.get_bytes(manifest["index"])
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    return SearchIndex(manifest, index, _read_rows(ctx.storage.get_bytes(manifest["rows"])))


def write_generation(ctx: Context, prefix: str, manifest: dict[str, Any], index,
                     rows: dict[int, dict[str, Any]]) -> None:
    """Write a new generation's index and rows, then the version's manifest naming it."""
    import faiss

    ctx.storage.put_bytes(manifest["index"], faiss.serialize_index(index).tobytes())
    ctx.storage.put_bytes(manifest["rows"], _rows_parquet(rows))
    ctx.storage.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=2).encode())


def publish(ctx: Context, app_id: str, prefix: str, manifest: dict[str, Any], new_generation: bool) -> None:
    """Make ``manifest`` the app's search index (the pointer); after a new generation, delete the one
    before the previous (the previous stays for readers still loading it)."""
    key = search_pointer_key(app_id)
    pointer = read_json(ctx, key)
    if pointer is None or pointer.get("build_id") != manifest["build_id"]:
        ctx.storage.put_bytes(key, json.dumps(manifest, indent=2).encode())
    if new_generation and manifest["generation"] > 2:
        for old in generation_keys(prefix, manifest["generation"] - 2):
            ctx.storage.delete(old)
