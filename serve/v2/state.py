"""What the control-plane routes share, put on ``app.state.services`` by the gateway (or by a test that
serves the routers in process, without a Predictor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Request

from deeptrain import search as search_service
from deeptrain.errors import ClusterError
from deeptrain.jobs.ray_address import serving_address
from deeptrain.services.context import Context
from serve.caches import ReplicaCaches


def no_cluster() -> str:
    """The Jobs API address of a server without a Ray cluster (the control plane served in process)."""
    raise ClusterError("this server runs on no Ray cluster: training, tuning and search-index builds need "
                       "`deeptrain serve` on one")


@dataclass
class Services:
    ctx: Context
    predictor: Any = None  # the Predictor deployment's handle (None: no inference in this process)
    timeout_s: float = 60.0
    indexes: search_service.IndexCache = field(default_factory=search_service.IndexCache)
    # where the routes that start work (training, tuning, index builds) submit their Ray jobs
    job_address: Callable[[], str] = serving_address
    # key checks and model resolutions reused for Settings.serve_cache_ttl_s (serve/caches.py)
    caches: ReplicaCaches | None = None

    def __post_init__(self) -> None:
        if self.caches is None:
            self.caches = ReplicaCaches(self.ctx.settings.serve_cache_ttl_s)


def services(request: Request) -> Services:
    return request.app.state.services
