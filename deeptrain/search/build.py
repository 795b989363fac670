"""Building an app's search index (``build_index``): a first build, or an incremental update of the last one.

An update embeds only the inputs the index does not hold yet (or whose bytes changed),
removes deleted or changed ones and refreshes every row's concepts from the current labels;
it writes a new generation only when something changed. An approximate index is rebuilt
(re-trained, its ``nprobe`` chosen again from the recall target) once it has outgrown what it
was trained on, or when ``Settings.search_recall_target`` changed; what was chosen (kind,
``nprobe``, the recall measured at build) is the manifest's ``search_index``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from deeptrain.errors import InvalidInput
from deeptrain.search.embedding import embed_with_ray
from deeptrain.search.faiss_index import SearchIndex, build_tuned, is_approximate, needs_rebuild, normalize
from deeptrain.search.index_files import (MANIFEST, generation_keys, load_generation, publish, read_json,
                                          write_generation)
from deeptrain.services import models as model_service
from deeptrain.services.context import Context, search_version_prefix
from deeptrain.services.inputs import iter_inputs

BuildProgress = Callable[[int, int], None]  # (images embedded since the last call, images to embed)
Current = dict[str, tuple[str, str, list[str]]]  # input id -> (sha256, storage key, positive concepts)


def _positive_concepts(inp) -> list[str]:
    return sorted({a.concept_id for a in inp.annotations if a.value})


def _resolve_embedding_version(ctx: Context, app_id: str, model_id: str, version_id: str | None) -> dict[str, Any]:
    model = model_service.get_model(ctx, app_id, model_id)
    if model["task"] != "embedding":
        raise InvalidInput(f"model {model_id!r} is a {model['task']} model, not an embedding model: visual search "
                           f"needs a model created with --task embedding")
    return model_service.get_trained_version(ctx, app_id, model_id, version_id)


@dataclass
class _Update:
    """The index being built: rows kept and added, its faiss index (None before any vector) and new vectors."""

    current: Current
    rows: dict[int, dict[str, Any]]
    index: Any | None
    next_label: int
    trained_on: int
    choice: dict[str, Any]  # what the index is and how it searches (``build_tuned``'s record)
    rebuilt: bool = False
    new_labels: list[np.ndarray] = field(default_factory=list)
    new_vectors: list[np.ndarray] = field(default_factory=list)

    def missing(self) -> list[tuple[str, str]]:
        """(input id, storage key) of every current input the index does not hold."""
        indexed = {row["input_id"] for row in self.rows.values()}
        return [(input_id, key) for input_id, (_, key, _) in self.current.items() if input_id not in indexed]

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        labels = np.arange(self.next_label, self.next_label + len(ids), dtype=np.int64)
        self.new_labels.append(labels)
        self.new_vectors.append(vectors)
        for label, input_id in zip(labels.tolist(), ids):
            sha256, _, concepts = self.current[input_id]
            self.rows[label] = {"input_id": input_id, "sha256": sha256, "concepts": concepts}
        self.next_label += len(ids)

    def _outgrown(self, approx_min: int, recall_target: float) -> bool:
        """Whether the index must be made anew: it has outgrown its kind, or it was tuned for another target."""
        if is_approximate(self.index) and self.choice.get("recall_target") != recall_target:
            return True
        return needs_rebuild(self.index, len(self.rows), self.trained_on, approx_min)

    def merged(self, approx_min: int, recall_target: float):
        """The index with the new vectors in it: made anew (trained on every vector, searched with the
        ``nprobe`` reaching ``recall_target``) when there was none or ``_outgrown``; else added to."""
        if self.index is None and not self.new_vectors:
            return None
        dim = self.index.d if self.index is not None else self.new_vectors[0].shape[1]
        labels = np.concatenate(self.new_labels) if self.new_labels else np.zeros(0, np.int64)
        vectors = np.concatenate(self.new_vectors) if self.new_vectors else np.zeros((0, dim), np.float32)
        if self.index is not None and not self._outgrown(approx_min, recall_target):
            if len(labels):
                self.index.add_with_ids(vectors, labels)
            return self.index
        if self.index is not None:  # the vectors it holds join the new ones
            kept = np.array(sorted(set(self.rows) - set(labels.tolist())), dtype=np.int64)
            labels = np.concatenate([kept, labels])
            vectors = np.concatenate([normalize(self.index.reconstruct_batch(kept)) if len(kept)
                                      else np.zeros((0, dim), np.float32), vectors])
        self.index, self.choice = build_tuned(vectors, labels, approx_min, recall_target)
        self.trained_on, self.rebuilt = len(labels), True
        return self.index


def _start_update(old: SearchIndex | None, manifest: dict[str, Any] | None,
                  current: Current) -> tuple[_Update, list[int]]:
    """The update of the version's last generation (if any): its rows of unchanged inputs (concepts refreshed),
    its index without the others; and the labels of those others (deleted or changed inputs)."""
    rows: dict[int, dict[str, Any]] = {}
    stale: list[int] = []
    index = None
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
    next_label = int(manifest["next_label"]) if manifest else 0
    trained_on = int(manifest.get("trained_on", 0)) if manifest else 0
    choice = dict((manifest or {}).get("search_index") or {})  # none before this was recorded:
    if index is not None and not choice and not is_approximate(index):  # an exact one is what it is;
        choice = {"kind": "Flat"}  # an approximate one is re-tuned at this build (``_Update._outgrown``)
    return _Update(current, rows, index, next_label, trained_on, choice), stale


def _manifest(app_id: str, model_id: str, version: dict[str, Any], prefix: str, generation: int,
              update: _Update) -> dict[str, Any]:
    index = update.index
    index_key, rows_key = generation_keys(prefix, generation)
    return {
        "app_id": app_id, "model_id": model_id, "version_id": version["id"], "artifacts": version["artifacts"],
        "generation": generation, "build_id": uuid.uuid4().hex, "dim": int(index.d), "total": int(index.ntotal),
        "next_label": update.next_label, "trained_on": update.trained_on, "approximate": is_approximate(index),
        "search_index": update.choice, "index": index_key, "rows": rows_key, "updated_at": datetime.now(timezone.utc).isoformat(),
    }


def build_index(ctx: Context, app_id: str, model_id: str, version_id: str | None = None, batch_size: int = 64,
                *, on_progress: BuildProgress | None = None) -> dict[str, Any]:
    """Index (or update the index of) every input of the app with a trained embedding version.

    Without ``version_id``: the model's default version, else its newest trained one.
    Makes this version the app's search index. Returns ``indexed`` (inputs embedded now),
    ``removed`` (deleted or changed inputs dropped), ``total`` and ``seconds``.
    """
    start = time.perf_counter()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
    version = _resolve_embedding_version(ctx, app_id, model_id, version_id)
    prefix = search_version_prefix(app_id, model_id, version["id"])
    manifest = read_json(ctx, f"{prefix}/{MANIFEST}")
    old = load_generation(ctx, manifest) if manifest is not None else None
    current = {inp.id: (inp.sha256, inp.storage_key, _positive_concepts(inp)) for inp in iter_inputs(ctx, app_id)}
    update, stale = _start_update(old, manifest, current)
    todo = update.missing()
    if on_progress:
        on_progress(0, len(todo))

    def on_batch(ids: list[str], vectors: np.ndarray) -> None:
        update.add(ids, vectors)
        if on_progress:
            on_progress(len(ids), len(todo))

    if todo:
        embed_with_ray(ctx, version["artifacts"], todo, batch_size, on_batch)
    index = update.merged(ctx.settings.search_approx_min, ctx.settings.search_recall_target)
    if index is None:
        raise InvalidInput(f"app {app_id!r} has no inputs to index")
    changed = bool(todo or stale) or old is None or update.rebuilt or any(old.rows[k]["concepts"] != r["concepts"]
                                                        for k, r in update.rows.items())
    if changed:
        generation = (int(manifest["generation"]) + 1) if manifest else 1
        manifest = _manifest(app_id, model_id, version, prefix, generation, update)
        write_generation(ctx, prefix, manifest, index, update.rows)
    assert manifest is not None
    publish(ctx, app_id, prefix, manifest, changed)
    return {"app_id": app_id, "model_id": model_id, "version_id": version["id"], "indexed": len(todo),
            "removed": len(stale), "total": int(index.ntotal), "dim": int(index.d),
            "seconds": round(time.perf_counter() - start, 3)}
