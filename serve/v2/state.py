"""What the control-plane routes share, put on ``app.state.services`` by the gateway (or by a test that
serves the routers in process, without a Predictor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from deeptrain import search as search_service
from deeptrain.services.context import Context


@dataclass
class Services:
    ctx: Context
    predictor: Any = None  # the Predictor deployment's handle (None: no inference in this process)
    timeout_s: float = 60.0
    indexes: search_service.IndexCache = field(default_factory=search_service.IndexCache)


def services(request: Request) -> Services:
    return request.app.state.services
