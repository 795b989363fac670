"""Choosing an approximate index's search parameter from a recall target, measured while it is built.

A fixed ``nprobe`` is either wasteful (nlist/8 lists scanned where 1 or 2 reach 0.99 on
well-clustered embeddings: 83 queries/s at 1,000,000 vectors) or too low on data whose
neighbours spread over many lists. So the build measures instead: a sample of the indexed
vectors (``SAMPLE``) are the queries, each one's exact top-``K`` (itself left out, as a
search by input id leaves it out) is computed by brute force over the vectors, and
``nprobe`` is the smallest whose Recall@``K`` reaches the target — doubled until it does,
then bisected. "Reaches" means the mean minus two standard errors over the sampled queries
(the sample's own noise is the margin), so a lucky sample does not pick too few lists.

Recall counts a hit as correct when its score is at least the ``K``-th exact score: equal
vectors (duplicates) are interchangeable, and an IVF-Flat index scores exactly, so this
is the recall of the similarities a user sees, not of which of several tied ids is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

K = 10  # the recall is Recall@K, the default top_k of a query
SAMPLE = 500  # queries measured at build time (the margin shrinks with more, the build slows)
SCORE_TOLERANCE = 1e-5  # brute force (BLAS) and the index (SIMD) round inner products differently
Z = 2.0  # standard errors below the mean the recall must still reach the target


@dataclass(frozen=True)
class HeldOut:
    """Queries sampled from the indexed vectors, their ids and the exact ``k``-th best score of each
    among the other vectors."""

    queries: np.ndarray
    labels: np.ndarray
    threshold: np.ndarray
    k: int


def held_out(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> HeldOut | None:
    """``SAMPLE`` of the vectors as queries with their exact threshold scores (None: fewer than 2 vectors)."""
    import faiss

    n = len(vectors)
    k = min(K, n - 1)
    if k < 1:
        return None
    pick = np.random.default_rng(seed).choice(n, min(n, SAMPLE), replace=False)
    queries = np.ascontiguousarray(vectors[pick])
    scores, _ = faiss.knn(queries, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # itself included
    return HeldOut(queries, labels[pick], scores[:, k], k)  # the (k+1)-th with itself = the k-th without


def recall(index, sample: HeldOut, nprobe: int) -> np.ndarray:
    """Per-query Recall@k of ``index`` searched with ``nprobe`` lists, each query itself left out."""
    import faiss

    params = faiss.SearchParametersIVF(nprobe=int(nprobe))
    scores, ids = index.search(sample.queries, sample.k + 1, params=params)
    own = ids == sample.labels[:, None]
    # each row's first k results other than the query itself (its own id is dropped wherever it is ranked)
    keep = np.cumsum(~own, axis=1) <= sample.k
    hits = (~own) & keep & (ids >= 0) & (scores >= sample.threshold[:, None] - SCORE_TOLERANCE)
    return hits.sum(axis=1) / sample.k


@dataclass(frozen=True)
class Tuned:
    """The chosen ``nprobe`` and the Recall@k measured with it on the held-out queries."""

    nprobe: int
    recall: float
    queries: int

    def as_dict(self, target: float) -> dict[str, Any]:
        return {"nprobe": self.nprobe, "recall_target": target, "recall": round(self.recall, 4),
                "recall_queries": self.queries}


def tune_nprobe(index, sample: HeldOut, target: float) -> Tuned:
    """The smallest ``nprobe`` whose recall on ``sample`` reaches ``target`` (with its margin);
    every list (``nlist``: exact for IVF-Flat) when none fewer does."""
    import faiss

    nlist = faiss.downcast_index(index).nlist
    measured: dict[int, np.ndarray] = {}

    def reaches(nprobe: int) -> bool:
        if nprobe not in measured:
            measured[nprobe] = recall(index, sample, nprobe)
        r = measured[nprobe]
        return bool(r.mean() - Z * r.std() / np.sqrt(len(r)) >= target)

    failing, passing = 0, 1
    while passing < nlist and not reaches(passing):
        failing, passing = passing, min(2 * passing, nlist)
    while passing - failing > 1:
        middle = (failing + passing) // 2
        failing, passing = (failing, middle) if reaches(middle) else (middle, passing)
    if passing not in measured:
        reaches(passing)
    return Tuned(passing, float(measured[passing].mean()), len(sample.queries))
