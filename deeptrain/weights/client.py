"""``Client().weights``: the weights registry from the SDK (the ``deeptrain weights`` commands call it).

    client.weights.add("ResNext", "resnext50_32x4d-7cdf4587.pth")   # or an architecture, a file:// / s3:// URI
    client.weights.which("ResNext")   # what init_from=imagenet would use, and from where
    client.weights.list(); client.weights.remove("resnext50_32x4d")
"""

from __future__ import annotations

import os
from typing import Any

from deeptrain.services.context import Context
from deeptrain.weights.registry import DEFAULT_NAME, add_weights, list_weights, remove_weights
from deeptrain.weights.resolve import which_weights


class WeightsMethods:
    """The registry of backbone weights of this deployment (its object storage and database)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def add(self, target: str, file: str | os.PathLike[str], name: str = DEFAULT_NAME) -> dict[str, Any]:
        """Check a checkpoint against ``target``'s base (an architecture or a template), store it once, and
        make it what ``init_from=imagenet`` (``name``) uses; ``unchanged`` is true when it already was."""
        return add_weights(self.ctx, target, file, name)

    def list(self) -> list[dict[str, Any]]:
        return list_weights(self.ctx)

    def remove(self, target: str, name: str = DEFAULT_NAME) -> dict[str, Any]:
        return remove_weights(self.ctx, target, name)

    def which(self, target: str) -> dict[str, Any]:
        """Where ``init_from=imagenet`` would take ``target``'s weights from (``source`` none: the fix)."""
        return which_weights(self.ctx, target)
