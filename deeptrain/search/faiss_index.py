"""The faiss index of one generation: normalized vectors, exact or approximate by size, queried by similarity.

Below ``approx_min`` vectors (``Settings.search_approx_min``) the index is exact (``IndexIDMap2(IndexFlatIP)``); from
there on an inverted file (``IVF<nlist>,Flat``, nlist = sqrt(N), searching nlist/8 lists),
re-trained once it holds ``RETRAIN_GROWTH`` times what it was trained on. ``SearchIndex``
pairs the index with its rows (faiss id -> input id, sha256, concepts) and answers queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeptrain.errors import InvalidInput

MAX_TOP_K = 1000
RETRAIN_GROWTH = 4  # rebuild an approximate index once it holds this many times what it was trained on


def normalize(vectors: Any) -> np.ndarray:
    """Rows L2-normalized, float32, C-contiguous (what faiss wants)."""
    if isinstance(vectors, np.ndarray) and vectors.dtype == object:  # a column of per-row arrays
        vectors = np.stack([np.asarray(v) for v in vectors])
    x = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def make_index(vectors: np.ndarray, labels: np.ndarray, approx_min: int):
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


def is_approximate(index) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(index), faiss.IndexIVF)


def needs_rebuild(index, total: int, trained_on: int, approx_min: int) -> bool:
    """Whether an index that will hold ``total`` vectors has outgrown its kind (exact, or IVF trained on fewer)."""
    if is_approximate(index):
        return total >= RETRAIN_GROWTH * trained_on
    return total >= approx_min


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
    return top_k


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
            params, candidates = self._only(labels), len(labels)
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

    def _only(self, labels: np.ndarray):
        """Search parameters that consider only these ids (an IVF index searches every list: the hits are exact)."""
        import faiss

        selector = faiss.IDSelectorBatch(labels)
        if is_approximate(self.index):
            ivf = faiss.downcast_index(self.index)
            return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist)
        return faiss.SearchParameters(sel=selector)
