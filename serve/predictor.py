"""The Predictor deployment: model versions loaded on demand, batched forward passes, per-image errors and deadlines.

``serve.multiplexed``'s model cache keeps the most recently used versions loaded per replica (LRU,
``Settings.serve_max_models`` bounds the memory), ``serve/batcher.py`` groups concurrent images
of one version into one forward pass. Predictions go through ``deeptrain.inference``
(``prepare`` + ``predict_prepared``), the path the CLI, SDK and offline evaluation use, so a
served output equals the offline one for the same version and image.

Each image is its own item of a batch, and fails or times out alone: one that cannot be
decoded answers ``{"error": "invalid", ...}``, one whose caller's time is up
(``budget_s`` from the gateway, counted from when the replica received it) answers
``{"error": "timeout"}`` and is neither decoded nor run through the model. So a request
that timed out does not keep the replica busy past its deadline, and the requests batched
with a bad image are answered normally.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, NamedTuple

from ray import serve

from deeptrain.config import Settings
from deeptrain.errors import InvalidInput
from deeptrain.services.context import Context
from serve.batcher import Batcher

# the decorator below needs it when this module is imported: in a replica, that is the driver's
# setting, which reaches the replica's environment through Settings.as_env()
MAX_MODELS_PER_REPLICA = Settings.from_env().serve_max_models


class Item(NamedTuple):
    artifacts: str  # the version's artifact prefix
    loaded: Any  # that version, loaded (``get_model``)
    data: bytes
    threshold: float | None
    top_k: int | None
    deadline: float  # time.monotonic() on the replica


def predict_items(loaded, items: list[Item]) -> list[dict[str, Any]]:
    """One result per item: the prediction, or ``{"error": "invalid"|"timeout", "message"}``. Runs in a thread."""
    from deeptrain.inference import predict_prepared, prepare

    results: list[dict[str, Any] | None] = [None] * len(items)
    prepared: dict[int, Any] = {}
    for i, item in enumerate(items):
        if time.monotonic() > item.deadline:
            results[i] = {"error": "timeout", "message": "the request's time ran out before this image was decoded"}
            continue
        try:
            prepared[i] = prepare(loaded, item.data)
        except InvalidInput as exc:
            results[i] = {"error": "invalid", "message": str(exc)}
    groups: dict[tuple[float | None, int | None], list[int]] = {}
    for i in prepared:
        groups.setdefault((items[i].threshold, items[i].top_k), []).append(i)
    for (threshold, top_k), idx in groups.items():
        live = [i for i in idx if time.monotonic() <= items[i].deadline]
        for i in set(idx) - set(live):
            results[i] = {"error": "timeout", "message": "the request's time ran out before the model ran"}
        outs = predict_prepared(loaded, [prepared[i] for i in live], threshold=threshold, top_k=top_k)
        for i, out in zip(live, outs):
            results[i] = out
    return results  # type: ignore[return-value]


def _cpu_timed(cpu: list[float], loaded, items: list[Item]) -> list[dict[str, Any]]:
    """``predict_items``, adding the CPU time of the thread that ran it to ``cpu[0]``."""
    begin = time.thread_time()
    try:
        return predict_items(loaded, items)
    finally:
        cpu[0] += time.thread_time() - begin


# one forward pass takes at most this many images: the batches self.batcher forms from concurrent requests, and the
# chunks of a request with many inputs (Clarifai allows 128 a request). Measured with bench/serve_bench.py.
MAX_BATCH = 32


class BatchCounter:
    """Batch sizes this replica ran (``Predictor.stats``): the proof batches form under load."""

    def __init__(self) -> None:
        self.batches = self.items = 0
        self.seconds = 0.0  # in forward passes (decode and preprocessing included)
        self.cpu_seconds = 0.0  # CPU time of the threads that ran them (a team forward: its calling thread's)
        self.sizes: dict[int, int] = {}
        self.on_lanes = self.running = self.most_at_once = 0  # forwards run on a lane; at once now; at most

    def started(self) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)

    def add(self, size: int, seconds: float, on_lane: bool, cpu_seconds: float = 0.0) -> None:
        self.batches, self.items, self.seconds = self.batches + 1, self.items + size, self.seconds + seconds
        self.cpu_seconds += cpu_seconds
        self.sizes[size] = self.sizes.get(size, 0) + 1
        self.on_lanes, self.running = self.on_lanes + on_lane, self.running - 1

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "items": self.items, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
                "mean_batch_size": self.items / self.batches if self.batches else 0.0,
                "sizes": dict(sorted(self.sizes.items())), "on_lanes": self.on_lanes,
                "most_at_once": self.most_at_once}


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class Predictor:
    """Loads versions on demand (LRU per replica) and predicts on batches of images.

    One call per request (``predict_many``): a request of one image joins the batch ``self.batcher`` forms
    from concurrent requests of its version; a request of several runs as its own forwards. Either way a forward
    takes ``forward_size`` images (by image size). A version with an inference graph (``deeptrain.inference_graph``:
    classification and embedding) runs its forwards on ``lanes``, one torch thread each, as many side by side as
    the replica has threads; another (a detector) runs one forward at a time on all of them (``self.team``)."""

    def __init__(self, settings_env: dict[str, str], torch_threads: int | None = None):
        import ray
        import torch

        # as many threads as CPUs reserved for the replica (at least one): one per core of the node
        # oversubscribes it whenever anything else runs there (other replicas, the gateway, the proxy);
        # measured with bench/serve_bench.py on 2 cores: 2 threads 13.9 images/s at concurrency 32, 1 thread 20.6
        if torch_threads is None:
            torch_threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0)))
        self.threads = torch_threads
        self.ctx = Context.from_settings(Settings.from_env(env=settings_env))
        self.counter = BatchCounter()
        self.lanes_free = asyncio.Semaphore(self.threads)  # forwards on the lanes now, at most one a lane
        self.pending = 0  # forward passes running or waiting
        self.team_turn = asyncio.Lock()  # a forward on all threads waits for every lane, one such forward at a time
        # lone images of concurrent requests, batched: a batch forms whenever a lane is free, of at most one
        # forward of its version (a larger one would hold every answer until its last forward ends)
        self.batcher = Batcher(self._batched, lambda item: self.forward_size(item.loaded), concurrency=self.threads)
        # Loading a version and the forwards of eager models run on ONE thread with all the threads: OpenMP gives
        # each thread that runs a parallel region a team of its own, and once a process has more OpenMP threads
        # than cores, libgomp's idle threads stop spinning and sleep after every operator (GOMP's "throttled"
        # wait; measured, ResNext at 128 px on 2 cores: 22.6 ms a forward on one thread, 35-43 ms once a second
        # thread had run one). A lane's thread runs no team: one torch thread, no parallel region.
        self.team = ThreadPoolExecutor(1, thread_name_prefix="torch", initializer=torch.set_num_threads,
                                       initargs=(self.threads,))
        self.lanes = ThreadPoolExecutor(self.threads, thread_name_prefix="torch-lane",
                                        initializer=torch.set_num_threads, initargs=(1,))

    async def on_team(self, fn, *args):
        """``fn(*args)`` on the replica's all-threads torch thread."""
        return await asyncio.get_running_loop().run_in_executor(self.team, fn, *args)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_model(self, artifacts: str):
        from deeptrain.artifacts import load_model
        from deeptrain.inference import predict_model

        def load():
            loaded = load_model(self.ctx.storage, artifacts)
            predict_model(loaded)  # its inference graph, built here rather than in the first request's forward
            return loaded
        return await self.on_team(load)

    def forward_size(self, loaded) -> int:
        """Images per forward pass for this version: ``Settings.serve_max_batch_pixels`` / image_size², within
        1..MAX_BATCH. On CPU a batch past the caches is slower per image than a small one (measured on 2 cores,
        images/s of ResNext with flips: 13.3 at 256 px one at a time vs 4.2 sixteen at a time; 52 at 128 px
        four at a time vs 20 at 32; at 32 px the more the better)."""
        size = int(loaded.manifest["preprocessing"]["image_size"])
        return max(1, min(MAX_BATCH, self.ctx.settings.serve_max_batch_pixels // (size * size)))

    @asynccontextmanager
    async def _place(self, on_lane: bool) -> AsyncIterator[ThreadPoolExecutor]:
        """Where a forward pass runs, once it may: a free lane, or the all-threads thread with every lane held."""
        self.pending += 1
        try:
            if on_lane:
                async with self.lanes_free:
                    yield self.lanes
                return
            async with self.team_turn:
                for _ in range(self.threads):
                    await self.lanes_free.acquire()
                try:
                    yield self.team
                finally:
                    for _ in range(self.threads):
                        self.lanes_free.release()
        finally:
            self.pending -= 1

    async def _forward(self, loaded, items: list[Item], alone: bool) -> list[dict[str, Any]]:
        """One forward pass. A version with an inference graph whose passes take several images runs on a free
        lane, unless the pass is ``alone`` (its request's only one, no request queued, no other pass running or
        waiting): then on all threads, the fastest for one pass. Other versions — a pass of one image (image_size²
        over half of ``serve_max_batch_pixels``: past 128 px by default), a detector — run on all threads: measured,
        ResNext at 256 px on 2 cores, two one-thread lanes served 11.4 images/s where the model alone on two
        threads makes 14.3."""
        from deeptrain.inference import runs_on_one_thread

        lanes_pay = runs_on_one_thread(loaded) and self.forward_size(loaded) > 1
        on_lane = lanes_pay and not (alone and self.pending == 0)
        async with self._place(on_lane) as executor:
            begin, cpu = time.perf_counter(), [0.0]
            self.counter.started()
            try:
                out = await asyncio.get_running_loop().run_in_executor(executor, _cpu_timed, cpu, loaded, items)
            finally:
                self.counter.add(len(items), time.perf_counter() - begin, on_lane, cpu[0])
        return out

    async def _run(self, loaded, items: list[Item], alone: bool) -> list[dict[str, Any]]:
        """``items`` in forward passes of ``forward_size``, as many at once as there are free lanes; ``alone``:
        no other request waits for this replica's batcher."""
        step = self.forward_size(loaded)
        chunks = [items[start:start + step] for start in range(0, len(items), step)]
        alone = alone and len(chunks) == 1
        parts = await asyncio.gather(*(self._forward(loaded, chunk, alone) for chunk in chunks))
        return [out for part in parts for out in part]

    async def _batched(self, items: list[Item]) -> list[dict[str, Any]]:
        """A batch of lone images (``self.batcher``), each version's in forward passes of its own."""
        by_version: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_version.setdefault(item.artifacts, []).append(i)
        results: list[dict[str, Any]] = [{}] * len(items)
        for artifacts, idx in by_version.items():
            outs = await self._run(items[idx[0]].loaded, [items[i] for i in idx],
                                   alone=len(by_version) == 1 and self.batcher.waiting() == 0)
            for i, out in zip(idx, outs):
                results[i] = out
        return results

    async def predict_many(self, artifacts: str, images: list[bytes], threshold: float | None = None,
                           top_k: int | None = None, budget_s: float | None = None) -> list[dict[str, Any]]:
        """The prediction (or ``{"error": ...}``) of version ``artifacts`` for each image, in order; ``budget_s``:
        the seconds the caller still waits.

        The version travels as an argument (the replica's ``get_model`` LRU loads it), not as Serve's
        multiplexed model id: routing then does not depend on which replica holds which version (measured:
        no change in throughput on its own); with several replicas each loads the versions it is asked for
        (``serve_max_models``)."""
        budget = self.ctx.settings.request_timeout_s if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        loaded = await self.get_model(artifacts)
        items = [Item(artifacts, loaded, data, threshold, top_k, deadline) for data in images]
        if len(items) == 1:
            return [await self.batcher.submit(items[0])]
        return await self._run(loaded, items, alone=self.batcher.waiting() == 0)

    def stats(self) -> dict[str, Any]:
        """The batch sizes this replica ran so far."""
        return self.counter.as_dict()
