"""What a serving replica reuses between requests: the check of an API key and the resolution of a model to
the version it serves (with the app's concept names), each for ``Settings.serve_cache_ttl_s`` seconds.

Without them every prediction paid three metadata-store lookups, each through a worker thread, before its
image reached a model. With them a warm request reads two dicts on the event loop. The bound is the TTL:
a key revoked (or a version promoted, a model deleted) is seen by every replica at most that many seconds
later — ``tests/test_serve.py`` revokes and promotes with warm caches and waits no longer than it.

Only successes are kept: an unknown, revoked or malformed key is looked up again every time (so a caller
cannot fill the cache with made-up keys, and a key created a moment ago works at once), and so is a model
that does not exist. A replica that itself revokes a key, promotes a version or deletes an app, a model or a
version forgets everything it reused at once. Entries are per replica, bounded in number (LRU past ``MAX_ENTRIES``), and keyed by
the SHA-256 of the key, never the key itself.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Hashable, TypeVar

from cachetools import TTLCache

MAX_ENTRIES = 4096
T = TypeVar("T")


class Reuse:
    """A TTL cache of successful lookups, read and written on the event loop (no lock: one thread uses it)."""

    def __init__(self, ttl_s: float, maxsize: int = MAX_ENTRIES, timer: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._cache: TTLCache | None = TTLCache(maxsize, ttl_s, timer=timer) if ttl_s > 0 else None
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        found = None if self._cache is None else self._cache.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: Hashable, value: T) -> T:
        if self._cache is not None:
            self._cache[key] = value
        return value

    def clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()

    def stats(self) -> dict[str, Any]:
        return {"ttl_s": self.ttl_s, "entries": 0 if self._cache is None else len(self._cache),
                "hits": self.hits, "misses": self.misses}


def key_digest(authorization: str | None) -> str | None:
    """The cache key of an ``Authorization`` header: its SHA-256 (None when there is no header)."""
    return None if not authorization else hashlib.sha256(authorization.strip().encode()).hexdigest()


class ReplicaCaches:
    """The two caches of one gateway replica."""

    def __init__(self, ttl_s: float):
        self.keys = Reuse(ttl_s)  # sha256(Authorization) -> the key's dict
        self.models = Reuse(ttl_s)  # (app, model, version or None) -> (model, version, concept names)

    def forget(self) -> None:
        """After this replica revoked a key or deleted an app, a model or a version: effective here at once
        (other replicas: within the TTL)."""
        self.keys.clear()
        self.models.clear()

    def stats(self) -> dict[str, Any]:
        return {"keys": self.keys.stats(), "models": self.models.stats()}
