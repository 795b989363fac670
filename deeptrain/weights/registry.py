"""The weights registry: a backbone's weights stored once for the whole cluster.

``add`` reads any timm / torchvision / safetensors checkpoint of the backbone, checks its key names and
shapes against the model's base (``architecture.conform``), converts the base tensors to safetensors under
the model's names and stores them content-addressed at ``weights/<architecture>/<sha256>.safetensors`` (the
same bytes twice: stored once, and the second ``add`` changes nothing). A row per (architecture, name) says
which file ``init_from=imagenet`` (name ``imagenet``) uses; Ray workers on any node read it from storage.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.services.context import Context
from deeptrain.store import BaseWeights
from deeptrain.templates import templates_of_architecture
from deeptrain.weights.architecture import architecture_of, conform

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

WEIGHTS_PREFIX = "weights"
DEFAULT_NAME = "imagenet"


class WeightsError(InvalidInput):
    """Weights that cannot be found or do not fit; the message says how to fix it."""


def storage_key(architecture: str, sha256: str) -> str:
    return f"{WEIGHTS_PREFIX}/{architecture}/{sha256}.safetensors"


def _row_dict(ctx: Context, row: BaseWeights, **extra: Any) -> dict[str, Any]:
    return {"architecture": row.architecture, "name": row.name, "sha256": row.sha256,
            "uri": ctx.storage.uri_for(row.storage_key), "source": row.source, "num_tensors": row.num_tensors,
            "size_bytes": row.size_bytes, "created_at": row.created_at.isoformat(),
            "templates": [f"{t.task}/{t.name}" for t in templates_of_architecture(row.architecture)], **extra}


def _check_name(name: str) -> str:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidInput(f"invalid weights name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    return name


def encode(tensors: "dict[str, Tensor]") -> bytes:
    """safetensors bytes of the tensors, keys sorted: the same tensors always give the same bytes."""
    from safetensors.torch import save

    return save({k: tensors[k] for k in sorted(tensors)})


def store_tensors(ctx: Context, architecture: str, tensors: "dict[str, Tensor]", source: str,
                  name: str = DEFAULT_NAME) -> dict[str, Any]:
    """Store conformed base tensors (once per content) and point (architecture, name) at them."""
    _check_name(name)
    data = encode(tensors)
    sha256 = hashlib.sha256(data).hexdigest()
    key = storage_key(architecture, sha256)
    with ctx.store.session() as s:
        row = s.get(BaseWeights, (architecture, name))
        if row is not None and row.sha256 == sha256 and ctx.storage.exists(key):
            return _row_dict(ctx, row, unchanged=True)
    if not ctx.storage.exists(key):
        ctx.storage.put_bytes(key, data)
    with ctx.store.session() as s:
        row = s.get(BaseWeights, (architecture, name))
        if row is None:
            row = BaseWeights(architecture=architecture, name=name)
            s.add(row)
        row.sha256, row.storage_key, row.source = sha256, key, source
        row.num_tensors, row.size_bytes = len(tensors), len(data)
        s.flush()
        return _row_dict(ctx, row, unchanged=False)


def add_weights(ctx: Context, target: str, path: str | os.PathLike[str], name: str = DEFAULT_NAME,
                source: str | None = None) -> dict[str, Any]:
    """Register a checkpoint (a path or a ``file://``/``s3://`` URI) as ``target``'s weights; ``target`` is
    an architecture (``resnext50_32x4d``) or a template (``ResNext``, ``detection/InceptionV2``)."""
    from deeptrain.training.init_from import InitFromError, read_source, state_dict_from_bytes

    architecture = architecture_of(target)
    text = os.fspath(path)
    try:
        data, file_path = read_source(text)
        state_dict = state_dict_from_bytes(data, file_path, text)
    except InitFromError as exc:
        raise WeightsError(str(exc).replace("init_from ", "weights file ", 1)) from None
    tensors = conform(state_dict, architecture, os.path.basename(file_path) or text)
    origin = source or f"file {os.path.basename(file_path)} (sha256 {hashlib.sha256(data).hexdigest()})"
    return store_tensors(ctx, architecture, tensors, origin, name)


def get_weights(ctx: Context, architecture: str, name: str = DEFAULT_NAME) -> dict[str, Any] | None:
    with ctx.store.session() as s:
        row = s.get(BaseWeights, (architecture, name))
        return None if row is None else _row_dict(ctx, row)


def list_weights(ctx: Context) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        rows = s.scalars(select(BaseWeights).order_by(BaseWeights.architecture, BaseWeights.name)).all()
        return [_row_dict(ctx, r) for r in rows]


def remove_weights(ctx: Context, target: str, name: str = DEFAULT_NAME) -> dict[str, Any]:
    """Drop the row; the stored file goes too unless another row uses it. Versions already planned
    from it keep their record (its sha256) but cannot be resumed from a removed file."""
    architecture = architecture_of(target)
    with ctx.store.session() as s:
        row = s.get(BaseWeights, (architecture, name))
        if row is None:
            raise NotFound(f"no weights {name!r} registered for {architecture} (see `deeptrain weights list`)",
                           "weights")
        removed = _row_dict(ctx, row)
        s.delete(row)
        s.flush()
        shared = s.scalars(select(BaseWeights).where(BaseWeights.storage_key == row.storage_key)).first()
    if shared is None:
        ctx.storage.delete(row.storage_key)
    return removed
