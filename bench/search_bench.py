"""Search at the scale of a real app: the index ``deeptrain.search`` builds, its speed, recall and memory.

For each size: clustered vectors (1,000 Gaussian clusters, the generator ``bench/serve_bench.py``
used), the index ``make_index`` builds for them (kind, ``nprobe`` and the recall measured while
building), the build time, queries/s one at a time through ``SearchIndex.query`` (the path a
search request takes), Recall@10 against exact search on fresh queries, the serialized index's
bytes (and per million vectors), the process's RSS growth (index and rows: measured in-process,
so a size after a larger one understates it, reusing memory that one freed; run one size per
process for that figure), and exact search one query at a time with bare faiss as the baseline.
``search_figures(n, dim, queries, seed)`` is the function other benches import. Run from a
checkout whose ``deeptrain`` is the one imported (``PYTHONPATH=.`` in a second worktree).

    .venv/bin/python bench/search_bench.py --vectors 1000000 100000 --dim 256 --queries 1000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

EXACT_QUERIES = 200  # exact search one at a time is slow at 1,000,000 vectors: this many are timed


def clustered(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` indexed vectors and ``queries`` fresh ones, normalized, around 1,000 shared random centres."""
    from deeptrain.search import normalize

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)

    def draw(k: int) -> np.ndarray:
        return normalize(centres[rng.integers(0, len(centres), k)] + 0.6 * rng.standard_normal((k, dim)))

    return draw(n), draw(queries)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rows(n: int, seed: int) -> dict[int, dict]:
    """Rows shaped like a real index's: a 32-character input id, a sha256 (hex), no concepts."""
    rng = np.random.default_rng(seed + 1)
    hexes = rng.integers(0, 2**63, (n, 6), dtype=np.int64)
    return {i: {"input_id": f"{h[0]:016x}{h[1]:016x}", "sha256": "".join(f"{v:016x}" for v in h[2:]),
                "concepts": []} for i, h in enumerate(hexes.tolist())}


def _one_at_a_time(search, queries: np.ndarray) -> tuple[float, list]:
    start = time.perf_counter()
    answers = [search(q) for q in queries]
    return len(queries) / (time.perf_counter() - start), answers


def search_figures(n: int, dim: int, queries: int, seed: int = 0, approx_min: int = 50_000,
                   recall_target: float | None = None) -> dict:
    """The figures of the index ``deeptrain.search`` builds for ``n`` clustered vectors of ``dim`` dimensions."""
    import faiss

    from deeptrain.config import Settings
    from deeptrain.search import SearchIndex
    from deeptrain.search.faiss_index import build_tuned

    target = Settings.model_fields["search_recall_target"].default if recall_target is None else recall_target
    vectors, q = clustered(n, dim, queries, seed)
    before = _rss()
    start = time.perf_counter()
    index, choice = build_tuned(vectors, np.arange(n, dtype=np.int64), approx_min, target)
    build_s = time.perf_counter() - start
    searcher = SearchIndex({"artifacts": ""}, index, _rows(n, seed))
    rss_growth = _rss() - before
    index_bytes = len(faiss.serialize_index(index))
    _, truth = faiss.knn(q, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    qps, hits = _one_at_a_time(lambda v: searcher.query(v, 10), q)
    recall = float(np.mean([len({searcher.by_input[h["input_id"]] for h in hit} & set(t.tolist())) / 10
                            for hit, t in zip(hits, truth)]))
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    exact_qps, _ = _one_at_a_time(lambda v: exact.search(v[None], 10), q[:EXACT_QUERIES])
    return {"vectors": n, "dim": dim, "queries": queries, "index": choice, "build_s": round(build_s, 2),
            "qps": round(qps, 1), "recall@10": round(recall, 4), "index_bytes": index_bytes,
            "index_bytes_per_million": round(index_bytes * 1e6 / n), "rss_growth_bytes": rss_growth,
            "exact_qps": round(exact_qps, 1), "cores": os.cpu_count()}


def _line(f: dict) -> str:
    params = ", ".join(f"{k} {v}" for k, v in f["index"].items() if k != "kind")
    return (f"{f['vectors']:>9,} x {f['dim']}: {f['index']['kind']} ({params}) | build {f['build_s']:.1f} s | "
            f"{f['qps']:,.0f} queries/s one at a time, Recall@10 {f['recall@10']:.4f} | "
            f"index {f['index_bytes'] / 2**20:,.0f} MiB ({f['index_bytes_per_million'] / 2**20:,.0f} MiB per million), "
            f"RSS +{f['rss_growth_bytes'] / 2**20:,.0f} MiB with rows | exact: {f['exact_qps']:,.1f} queries/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, nargs="+", default=[1_000_000, 100_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--recall-target", type=float, help="default: Settings.search_recall_target's")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = []
    for n in args.vectors:
        figures.append(search_figures(n, args.dim, args.queries, recall_target=args.recall_target))
        print(_line(figures[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
