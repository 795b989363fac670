"""Embeddings for search: a query image in this process, an app's inputs with Ray Data batch inference.

Both go through ``deeptrain.inference.predict_bytes`` (the path ``deeptrain predict`` and the
Serve ``Predictor`` use), so an indexed vector equals the served embedding of the same image.
The Ray Data pipeline is ``from_items`` over (input id, storage key) rows and ``map_batches``
with a callable class that loads the version once per actor and reads the original bytes
from object storage.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from deeptrain.search.faiss_index import normalize
from deeptrain.services.context import Context

EMBED_CPUS = 0.5  # per Ray Data actor: leaves room on a 2-core machine (Ray Data starves otherwise)


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


def embed_with_ray(ctx: Context, artifacts: str, todo: list[tuple[str, str]], batch_size: int,
                   on_batch: Callable[[list[str], np.ndarray], None]) -> None:
    """Embed the (input id, storage key) pairs of ``todo`` with the version at ``artifacts``;
    ``on_batch(input ids, normalized vectors)`` gets each batch as it is done."""
    import ray.data

    from deeptrain.cluster import ensure_ray, worker_env

    ensure_ray()
    ds = ray.data.from_items([{"input_id": i, "storage_key": k} for i, k in todo],
                             override_num_blocks=max(1, min(len(todo) // batch_size, 64)))
    ds = ds.map_batches(_Embedder, fn_constructor_kwargs={"storage_uri": ctx.storage.uri, "artifacts": artifacts},
                        batch_size=batch_size, batch_format="numpy", num_cpus=EMBED_CPUS,
                        compute=ray.data.ActorPoolStrategy(size=1),
                        runtime_env={"env_vars": worker_env(ctx.settings)})
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
        on_batch([str(i) for i in batch["input_id"]], normalize(batch["embedding"]))
