"""The gateway's calls to the Predictor: one call per request, with the seconds left of the request's deadline.

A request's images travel together (the Predictor batches a lone image with concurrent requests' and runs
many as one forward), with the version's artifact prefix as an argument. The results come back checked:
``Timeout`` when any ran out of time (answered 504), else an ``InvalidInput`` naming every
image that could not be decoded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from deeptrain.errors import InvalidInput


class Timeout(Exception):
    """The request's ``request_timeout_s`` ran out (answered 504)."""


def checked_outputs(outs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The Predictor's results, or the error they hold: Timeout, else an InvalidInput naming every bad input."""
    if any(out.get("error") == "timeout" for out in outs):
        raise Timeout()
    bad = [f"{name}: {out['message']}" for name, out in zip(names, outs) if "error" in out]
    if bad:
        raise InvalidInput("; ".join(bad))
    return outs


async def predict(predictor, artifacts: str, images: list[bytes], names: list[str], deadline: float,
                  threshold: float | None = None, top_k: int | None = None) -> list[dict[str, Any]]:
    """One Predictor call for the request's images (batched there); raises Timeout at the request's deadline."""
    budget = deadline - time.monotonic()
    try:
        outs = await asyncio.wait_for(predictor.predict_many.remote(artifacts, images, threshold, top_k, budget),
                                      max(0.0, budget))
    except asyncio.TimeoutError:
        raise Timeout() from None
    return checked_outputs(outs, names)


def predict_blocking(predictor, artifacts: str, images: list[bytes], names: list[str], deadline: float,
                     threshold: float | None, top_k: int | None) -> list[dict[str, Any]]:
    """``predict`` from a worker thread: past the deadline nothing is sent and Timeout is raised."""
    budget = deadline - time.monotonic()
    if budget <= 0:
        raise Timeout()
    response = predictor.predict_many.remote(artifacts, images, threshold, top_k, budget)
    try:
        outs = response.result(timeout_s=max(0.001, deadline - time.monotonic()))
    except TimeoutError:
        raise Timeout() from None
    return checked_outputs(outs, names)
