"""Inputs and their annotations: importing a path or URL (the pipeline itself: ``services.import_pipeline``;
reading, deleting and exporting: ``services.input_reads``; the functions of both are importable from here).
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from deeptrain.errors import NotFound
from deeptrain.formats import FORMATS, get_format
from deeptrain.services.context import Context
from deeptrain.services.import_pipeline import BATCH_SIZE, ImportReport, ProgressFn, import_records, input_key
from deeptrain.services.input_reads import (count_inputs, delete_input, delete_inputs, export_inputs,
                                            get_input, get_input_bytes, input_dict, input_record, input_views,
                                            iter_inputs, list_inputs)
from deeptrain.store import Input

__all__ = ["BATCH_SIZE", "ImportReport", "ProgressFn", "count_candidates", "count_inputs", "delete_input",
           "delete_inputs", "export_inputs", "get_input", "get_input_bytes", "import_path", "import_records",
           "input_dict", "input_key", "input_record", "input_views", "iter_inputs", "list_inputs", "read_input_url"]

_INPUT_KEY = re.compile(r"apps/(?P<app>[^/]+)/inputs/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})\.[a-z]+")


def read_input_url(ctx: Context, app_id: str, url: str) -> bytes:
    """The bytes of the input of ``app_id`` whose storage URL ``url`` is — the one rule for every ``url`` a caller
    gives (HTTP predictions, workflows and searches, CSV/JSONL imports).

    A URL resolves only to an input of the same app: not another app's object, and not a model, report,
    checkpoint or dataset of this one. Every other URL gets the same answer, whether or not something exists
    there, and the answer names neither the URL's path nor the storage.
    """
    key = ctx.storage.key_for_uri(url)
    match = _INPUT_KEY.fullmatch(key or "")
    row = None
    if match is not None and match["app"] == app_id:
        with ctx.store.engine.connect() as conn:
            row = conn.execute(select(Input.storage_key).where(Input.app_id == app_id,
                                                               Input.sha256 == match["sha"])).first()
    if row is None or row.storage_key != key:
        raise NotFound(f"url does not name an input of app {app_id!r} (a url must be the storage URL of one of "
                       "this app's inputs)")
    return ctx.storage.get_bytes(key)


def import_path(
    ctx: Context, app_id: str, path: str | Path, fmt: str, *, split: str | None = None,
    on_progress: ProgressFn | None = None, update_labels: bool = False,
) -> ImportReport:
    """Import a folder or file in one of the supported formats (``update_labels``: see ``import_records``)."""
    spec = get_format(fmt)
    path = Path(path)
    spec.check_path(path, ctx.settings.max_label_file_bytes)
    reader = spec.reader(path, lambda url: read_input_url(ctx, app_id, url))
    return import_records(ctx, app_id, reader, split=split, on_progress=on_progress, update_labels=update_labels)


def count_candidates(path: str | Path, fmt: str) -> int | None:
    """A cheap count of files for a progress bar's total (None when unknown)."""
    spec, path = FORMATS.get(fmt), Path(path)
    return spec.count(path) if spec is not None and spec.count is not None and path.is_dir() else None
