"""In-process caches of the search path: loaded indexes per app, loaded models that embed query images.

An index is reloaded when the app's pointer names another build (its ``build_id`` changes
with every build), so a process notices a new index on its next query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from deeptrain.search.faiss_index import SearchIndex
from deeptrain.search.index_files import load_generation, read_pointer
from deeptrain.services.context import Context


class IndexCache:
    """Loaded indexes per app, reloaded when the app's pointer names another build (thread-safe)."""

    def __init__(self, max_apps: int = 8):
        self.max_apps = max_apps
        self._entries: OrderedDict[tuple[str, str], SearchIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ctx: Context, app_id: str) -> SearchIndex:
        pointer = read_pointer(ctx, app_id)
        key = (ctx.storage.uri, app_id)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached.manifest.get("build_id") == pointer.get("build_id"):
                self._entries.move_to_end(key)
                return cached
        loaded = load_generation(ctx, pointer)
        with self._lock:
            self._entries[key] = loaded
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_apps:
                self._entries.popitem(last=False)
        return loaded


_INDEXES = IndexCache()


def load_index(ctx: Context, app_id: str) -> SearchIndex:
    """The app's current search index (cached per process until the pointer changes)."""
    return _INDEXES.get(ctx, app_id)


_MODELS: OrderedDict[tuple[str, str], Any] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def loaded_model(ctx: Context, artifacts: str):
    """The version at ``artifacts``, loaded once per process (the two most recently used are kept)."""
    from deeptrain.artifacts import load_model

    key = (ctx.storage.uri, artifacts)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    loaded = load_model(ctx.storage, artifacts)
    with _MODELS_LOCK:
        _MODELS[key] = loaded
        while len(_MODELS) > 2:
            _MODELS.popitem(last=False)
    return loaded
