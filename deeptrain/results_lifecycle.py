"""Typed results of the data lifecycle: deleting models and versions with their objects, garbage collection.

``Result`` classes like those of ``deeptrain.results`` (dicts checked by pydantic, readable as attributes).
"""

from __future__ import annotations

from typing import Optional

from deeptrain.results import Deleted, Number
from deeptrain.result_base import Result

__all__ = ["GcItem", "GcResult", "ModelDeleted", "VersionDeleted"]


class ModelDeleted(Deleted):
    """A deleted model: its versions and tuning runs went with it, and their stored objects."""

    versions_deleted: int
    objects_deleted: int
    bytes_deleted: int


class VersionDeleted(Deleted):
    """A deleted model version and its stored objects (weights, checkpoints, report, search builds)."""

    model_id: str
    default_unset: bool  # it was the model's default version, which is now unset
    objects_deleted: int
    bytes_deleted: int


class GcItem(Result):
    """One thing garbage collection removed (or would remove): an object, or every object under a prefix."""

    key: str
    kind: str  # input, dataset, model_version, tune_run, search_index, app, temporary
    objects: int
    bytes: int


class GcResult(Result):
    """What ``gc`` removed (``dry_run``: would remove); ``skipped_recent`` counts unreferenced things younger
    than ``grace_s``, left for a write that may still be in progress."""

    app_id: Optional[str]
    dry_run: bool
    grace_s: Number
    garbage: list[GcItem]  # removed, or with dry_run to be removed
    objects: int
    bytes: int
    skipped_recent: int
