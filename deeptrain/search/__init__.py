"""Visual search: a faiss index of an app's inputs embedded by one trained embedding version.

Building (``build_index``) embeds every input of the app that the index does not hold
yet with Ray Data batch inference (``embedding``), through ``deeptrain.inference.predict_bytes``
— the path ``deeptrain predict`` and the Serve ``Predictor`` use, so an indexed vector equals
the served embedding of the same image. Vectors are L2-normalized float32 (inner product =
cosine similarity); each faiss id is a row of the sidecar Parquet table (``label, input_id,
sha256, concepts``). Below ``Settings.search_approx_min`` vectors (50,000) the index is exact
(``IndexIDMap2(IndexFlatIP)``); from there on it is approximate: an inverted file
(``IVF<nlist>,Flat``, nlist = sqrt(N), k-means trained on the vectors it is built from),
searching the fewest lists (``nprobe``) whose Recall@10 on held-out queries, measured while
it is built, reaches ``Settings.search_recall_target`` (``tuning``); ``bench/search_bench.py``
measures it at 100,000 and 1,000,000 vectors. An approximate index is rebuilt (re-trained)
when it has grown to 4 times the size it was trained on or the target changed; a
concept-filtered query searches every list, so it stays exact.

A second build is incremental: only inputs missing from the index (or whose bytes
changed) are embedded, deleted inputs are removed, and every row's concepts are
refreshed from the current labels. Each build writes a new generation and publishes the
manifests last (``index_files`` has the layout in object storage), so a reader never sees
half an index. The app's pointer names the version that ``search`` uses; its ``build_id``
changes with every build, which is how caches (``IndexCache``, the HTTP gateway's) notice
a new index.

Modules: ``faiss_index`` (the vectors: build, query), ``tuning`` (``nprobe`` from the recall
target), ``embedding`` (query images and Ray Data batch inference), ``index_files``
(generations in storage), ``cache`` (loaded indexes and models per process), ``build``
(``build_index``), ``query`` (``search``, ``index_info``).
"""

from deeptrain.search.build import BuildProgress, build_index
from deeptrain.search.cache import IndexCache, load_index
from deeptrain.search.embedding import EMBED_CPUS, embed_bytes
from deeptrain.search.faiss_index import (MAX_TOP_K, RETRAIN_GROWTH, SearchIndex, build_tuned, check_top_k,
                                          make_index, normalize)
from deeptrain.search.index_files import MANIFEST, read_pointer
from deeptrain.search.query import check_concept, index_info, query_source, search

__all__ = [
    "BuildProgress", "EMBED_CPUS", "IndexCache", "MANIFEST", "MAX_TOP_K",
    "RETRAIN_GROWTH", "SearchIndex", "build_index", "build_tuned", "check_concept", "check_top_k", "embed_bytes",
    "index_info", "load_index", "make_index", "normalize", "query_source", "read_pointer", "search",
]
