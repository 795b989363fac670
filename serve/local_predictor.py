"""The Predictor in the gateway's own process: one hop from the HTTP proxy to the model instead of two.

``build_app(..., model_in_gateway=True)`` gives each Gateway replica a Predictor of its own (the same class,
batching and LRU of versions, ``serve/predictor.py``) instead of a handle to the Predictor deployment: the
request's image bytes are not pickled to another process, and one Ray call per request is saved. The
Gateway then reserves the CPUs the Predictor would have, and scales with it. ``LocalPredictor`` is called
like a deployment handle (``predictor.predict_many.remote(...)``, awaited on the replica's loop or
``.result(timeout_s)`` from a worker thread), so the routes do not know which layout serves them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine


class LocalResponse:
    """What ``.remote()`` returns: awaitable on the replica's loop, or ``result()`` from another thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, call: Callable[[], Coroutine[Any, Any, Any]]):
        self.loop, self.call = loop, call

    def __await__(self):
        return self.call().__await__()

    def result(self, timeout_s: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(self.call(), self.loop)
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError:
            future.cancel()
            raise


class LocalMethod:
    def __init__(self, owner: LocalPredictor, name: str):
        self.owner, self.name = owner, name

    def remote(self, *args: Any, **kwargs: Any) -> LocalResponse:
        method = getattr(self.owner.predictor, self.name)

        async def call() -> Any:
            out = method(*args, **kwargs)
            return await out if asyncio.iscoroutine(out) else out
        return LocalResponse(self.owner.loop, call)


class LocalPredictor:
    """A Predictor object in this process, behind the handle's calling convention. Built on the replica's
    event loop (a Serve constructor runs there), which ``result()`` from worker threads schedules onto."""

    def __init__(self, settings_env: dict[str, str], torch_threads: int | None = None):
        from serve.predictor import Predictor

        self.loop = asyncio.get_running_loop()
        self.predictor = Predictor.func_or_class(settings_env, torch_threads)
        self.predict_many = LocalMethod(self, "predict_many")
        self.stats = LocalMethod(self, "stats")
