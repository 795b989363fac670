"""The faiss index of one generation: normalized vectors, exact or approximate by size, queried by similarity.

Below ``approx_min`` vectors (``Settings.search_approx_min``) the index is exact (``IndexIDMap2(IndexFlatIP)``); from
there on an inverted file (``IVF<nlist>,Flat``, nlist = sqrt(N): at 1,000,000 clustered 256-d vectors it
trained in 6 s against 23 s for 4·sqrt(N), and answered faster at the same recall) whose ``nprobe`` (lists searched)
is the smallest reaching the recall target on held-out queries, measured while it is built
(``tuning``); it is re-trained once it holds ``RETRAIN_GROWTH`` times what it was trained on.
IVF-Flat keeps the vectors themselves (remove and reconstruct by id, exact scores): 1,000 MiB per
million 256-d vectors. ``faiss.write_index`` keeps ``nprobe``, so a loaded index searches as built.
``SearchIndex`` pairs the index with its rows (faiss id -> input id, sha256, concepts) and answers queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeptrain.errors import InvalidInput
from deeptrain.search.tuning import K as RECALL_K
from deeptrain.search.tuning import held_out, tune_nprobe

DEFAULT_RECALL_TARGET = 0.95  # Settings.search_recall_target's default
MAX_TOP_K = 1000
RETRAIN_GROWTH = 4  # rebuild an approximate index once it holds this many times what it was trained on


def normalize(vectors: Any) -> np.ndarray:
    """Rows L2-normalized, float32, C-contiguous (what faiss wants)."""
    if isinstance(vectors, np.ndarray) and vectors.dtype == object:  # a column of per-row arrays
        vectors = np.stack([np.asarray(v) for v in vectors])
    x = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def make_index(vectors: np.ndarray, labels: np.ndarray, approx_min: int,
               recall_target: float = DEFAULT_RECALL_TARGET):
    """A faiss index over normalized vectors with these ids: exact below ``approx_min`` vectors, else IVF."""
    return build_tuned(vectors, labels, approx_min, recall_target)[0]


def build_tuned(vectors: np.ndarray, labels: np.ndarray, approx_min: int,
                recall_target: float = DEFAULT_RECALL_TARGET) -> tuple[Any, dict[str, Any]]:
    """``make_index``'s index and what was chosen for it: ``kind`` (the faiss factory string), and for
    IVF ``nlist``, ``nprobe``, ``recall_target`` and the ``recall`` measured at build (``tuning``)."""
    import faiss

    n, dim = vectors.shape
    if n < approx_min:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        index.add_with_ids(vectors, labels)
        return index, {"kind": "Flat"}
    nlist = max(1, int(math.sqrt(n)))
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)  # on faiss's sample of 256 vectors per list at most
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by id
    index.add_with_ids(vectors, labels)
    choice: dict[str, Any] = {"kind": f"IVF{nlist},Flat", "nlist": nlist}
    sample = held_out(vectors, labels)
    if sample is None:  # a single vector: nothing to measure, its one list is the index
        index.nprobe = nlist
        return index, {**choice, "nprobe": nlist, "recall_target": recall_target}
    tuned = tune_nprobe(index, sample, recall_target)
    index.nprobe = tuned.nprobe
    return index, {**choice, **tuned.as_dict(recall_target)}


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
        scores, labels = self.index.search(v, k, params=self._probing(k) if params is None else params)
        hits = []
        for score, label in zip(scores[0].tolist(), labels[0].tolist()):
            if label < 0 or label == skip:
                continue
            row = self.rows[label]
            hits.append({"input_id": row["input_id"], "score": float(score), "concepts": list(row["concepts"])})
        return hits[:top_k]

    def _probing(self, k: int):
        """Search parameters for ``k`` results: an IVF index tuned for Recall@10 scans proportionally
        more lists for more results (else its few lists may hold fewer than ``k`` vectors); None: as built."""
        if k <= RECALL_K or not is_approximate(self.index):
            return None
        import faiss

        ivf = faiss.downcast_index(self.index)
        return faiss.SearchParametersIVF(nprobe=min(ivf.nlist, math.ceil(ivf.nprobe * k / RECALL_K)))

    def _only(self, labels: np.ndarray):
        """Search parameters that consider only these ids (an IVF index searches every list: the hits are exact)."""
        import faiss

        selector = faiss.IDSelectorBatch(labels)
        if is_approximate(self.index):
            ivf = faiss.downcast_index(self.index)
            return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist)
        return faiss.SearchParameters(sel=selector)
