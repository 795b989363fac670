"""Inputs and their annotations: streaming import (reading, deleting and exporting: ``services.input_reads``,
whose functions are importable from here too).

Import is a pipeline: format readers yield records; a bounded pool of threads reads,
decodes and validates each image, drops duplicates (sha256 per app) and writes new bytes
to storage under a content-addressed key; the main thread commits inputs with their
labels to the store in batches. Bytes are published before their row is committed, so a
crash leaves at worst an unreferenced object, never a visible input without bytes, and
re-running the same import simply skips what already landed (as duplicates).

With ``outcomes=True`` the report also says what became of each record, by its position in the input
(``ImportReport.items``): imported (its input id), duplicate (the existing input's id) or rejected (why).
"""

from __future__ import annotations

import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deeptrain.errors import DeeptrainError, InvalidInput, NotFound
from deeptrain.formats import FORMATS, ImportRecord, Region, Rejection, get_format
from deeptrain.formats.records import canonical_split, normalize_box, read_record_bytes
from deeptrain.ids import check_input_id
from deeptrain.images import ImageInfo, inspect_image
from deeptrain.services.concepts import ConceptResolver
from deeptrain.services.context import Context, app_prefix, require_app
from deeptrain.services.input_reads import (count_inputs, delete_input, delete_inputs, export_inputs,
                                            get_input, get_input_bytes, input_dict, input_record, input_views,
                                            iter_inputs, list_inputs)
from deeptrain.services.labels import Duplicate, reconcile_duplicates
from deeptrain.store import Annotation, Input

__all__ = ["BATCH_SIZE", "ImportReport", "ProgressFn", "count_candidates", "count_inputs", "delete_input",
           "delete_inputs", "export_inputs", "get_input", "get_input_bytes", "import_path", "import_records",
           "input_dict", "input_key", "input_record", "input_views", "iter_inputs", "list_inputs", "read_input_url"]

BATCH_SIZE = 256

ProgressFn = Callable[[int], None]


@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    updated: int = 0  # duplicates whose labels were replaced by the import's (update_labels)
    differing_labels: int = 0  # duplicates whose stored labels differ from the import's and were kept
    rejected: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    outcomes: dict[int, dict[str, Any]] | None = None  # by record position, when asked for

    def reject(self, file: str, reason: str, index: int | None = None) -> None:
        self.rejected.append({"file": file, "reason": reason})
        self.note(index, "rejected", reason=reason)

    def note(self, index: int | None, outcome: str, input_id: str | None = None, existing_id: str | None = None,
             reason: str | None = None) -> None:
        """Record what became of record ``index`` (imported, duplicate, rejected); a later note replaces it."""
        if self.outcomes is not None and index is not None:
            self.outcomes[index] = {"index": index, "input_id": input_id, "outcome": outcome,
                                    "existing_id": existing_id, "reason": reason, "updated": False,
                                    "differing_labels": False}

    def flag(self, index: int | None, what: str) -> None:
        """Mark a duplicate's outcome ``updated`` or ``differing_labels``."""
        if self.outcomes is not None and index in self.outcomes:
            self.outcomes[index][what] = True

    @property
    def items(self) -> list[dict[str, Any]] | None:
        """Each record's outcome in input order (None unless asked for)."""
        return None if self.outcomes is None else [self.outcomes[i] for i in sorted(self.outcomes)]

    @property
    def ok(self) -> bool:
        """False when nothing at all was readable (a failed import, as opposed to a partial one)."""
        return self.imported + self.duplicates > 0 or not self.rejected

    def as_dict(self) -> dict[str, Any]:
        rate = self.imported / self.seconds if self.seconds else 0.0
        items = {} if self.outcomes is None else {"items": self.items}
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "updated": self.updated,
            "differing_labels": self.differing_labels,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(rate, 1),
            **items,
        }


@dataclass
class _Checked:
    record: ImportRecord
    info: ImageInfo | None = None
    regions: tuple[Region, ...] = ()
    error: str | None = None
    duplicate: bool = False
    existing_id: str | None = None  # the input a duplicate's bytes belong to
    index: int | None = None  # the record's position in the import

    @property
    def input_id(self) -> str:
        return self.record.input_id or self.info.sha256[:16]  # type: ignore[union-attr]


def input_key(app_id: str, info: ImageInfo) -> str:
    return f"{app_prefix(app_id)}/inputs/{info.sha256[:2]}/{info.sha256}.{info.extension}"


_SHA_QUERY = select(Input.id).where(Input.app_id == bindparam("app_id"), Input.sha256 == bindparam("sha256")).limit(1)


def _existing_id(ctx: Context, app_id: str, sha256: str) -> str | None:
    with ctx.store.engine.connect() as conn:
        found = conn.execute(_SHA_QUERY, {"app_id": app_id, "sha256": sha256}).first()
    return found.id if found is not None else None


def _check(ctx: Context, app_id: str, record: ImportRecord, index: int | None = None) -> _Checked:
    """Worker stage: read, validate, de-duplicate and store one image."""
    try:
        record.split = canonical_split(record.split)
        if record.input_id is not None:
            check_input_id(record.input_id)
        overlap = set(record.concepts) & set(record.negatives)
        if overlap:
            raise InvalidInput(f"concept(s) {sorted(overlap)} are both positive and negative")
        data = read_record_bytes(record, ctx.settings.max_image_bytes)
        info = inspect_image(data, max_bytes=ctx.settings.max_image_bytes, max_pixels=ctx.settings.max_image_pixels)
        size = (info.width, info.height) if record.pixel_boxes else (None, None)
        regions = tuple(normalize_box(r, *size) for r in record.regions)
        found = _existing_id(ctx, app_id, info.sha256)
        if found is not None:
            return _Checked(record, info, regions, duplicate=True, existing_id=found, index=index)
        ctx.storage.put_bytes(input_key(app_id, info), data)
        return _Checked(record, info, regions, index=index)
    except DeeptrainError as exc:
        return _Checked(record, error=str(exc), index=index)


def _insert(s: Session, app_id: str, batch: list[_Checked], resolver: ConceptResolver) -> None:
    """Insert inputs and their annotations with two bulk statements."""
    ids = [c.input_id for c in batch]
    taken = set(s.scalars(select(Input.id).where(Input.app_id == app_id, Input.id.in_(ids))))
    if taken or len(set(ids)) < len(ids):
        clash = sorted(taken) or sorted(i for i in ids if ids.count(i) > 1)
        raise InvalidInput(f"input id {clash[0]!r} already exists in app {app_id!r} with different bytes")
    inputs, annotations = [], []
    for input_id, c in zip(ids, batch):
        info, rec = c.info, c.record
        assert info is not None
        inputs.append(dict(
            app_id=app_id, id=input_id, sha256=info.sha256, storage_key=input_key(app_id, info),
            width=info.width, height=info.height, format=info.format, size_bytes=info.size_bytes,
            source=rec.source, metadata_json=rec.metadata, split=rec.split,
        ))
        labels = [(cid, True) for cid in resolver.ids(s, rec.concepts)]
        labels += [(cid, False) for cid in resolver.ids(s, rec.negatives)]
        annotations += [dict(app_id=app_id, input_id=input_id, concept_id=cid, value=v, top_row=None,
                             left_col=None, bottom_row=None, right_col=None) for cid, v in labels]
        for r, cid in zip(c.regions, resolver.ids(s, [r.concept for r in c.regions])):
            annotations.append(dict(app_id=app_id, input_id=input_id, concept_id=cid, value=True, top_row=r.top_row,
                                    left_col=r.left_col, bottom_row=r.bottom_row, right_col=r.right_col))
    s.execute(insert(Input), inputs)
    if annotations:
        s.execute(insert(Annotation), annotations)


def _commit(ctx: Context, app_id: str, batch: list[_Checked], report: ImportReport, resolver: ConceptResolver) -> None:
    """Commit a batch in one transaction; on a conflict (e.g. a concurrent import) fall back to one by one."""
    fresh, seen, again = [], set(), []
    for c in batch:
        assert c.info is not None
        if c.info.sha256 in seen:
            report.duplicates += 1
            again.append(c)
        else:
            seen.add(c.info.sha256)
            fresh.append(c)
    try:
        with ctx.store.session() as s:
            _insert(s, app_id, fresh, resolver)
        report.imported += len(fresh)
        for c in fresh:
            report.note(c.index, "imported", c.input_id)
    except (IntegrityError, InvalidInput):
        resolver.reset()  # concepts created in the rolled-back transaction are gone
        _commit_one_by_one(ctx, app_id, fresh, report, resolver)
    if report.outcomes is not None:
        for c in again:  # the same bytes twice in one batch: a duplicate of what the first one became
            existing = _existing_id(ctx, app_id, c.info.sha256)  # type: ignore[union-attr]
            report.note(c.index, "duplicate", existing, existing)


def _commit_one_by_one(ctx: Context, app_id: str, fresh: list[_Checked], report: ImportReport,
                       resolver: ConceptResolver) -> None:
    for c in fresh:
        try:
            with ctx.store.session() as s:
                _insert(s, app_id, [c], resolver)
            report.imported += 1
            report.note(c.index, "imported", c.input_id)
        except IntegrityError:
            resolver.reset()
            report.duplicates += 1
            existing = _existing_id(ctx, app_id, c.info.sha256) if report.outcomes is not None else None  # type: ignore[union-attr]
            report.note(c.index, "duplicate", existing, existing)
        except InvalidInput as exc:
            resolver.reset()
            report.reject(c.record.source, str(exc), c.index)


def import_records(
    ctx: Context,
    app_id: str,
    items: Iterable[ImportRecord | Rejection],
    *,
    split: str | None = None,
    on_progress: ProgressFn | None = None,
    update_labels: bool = False,
    outcomes: bool = False,
) -> ImportReport:
    """Run records through the import pipeline; ``split`` overrides each record's own. A record whose bytes
    the app already has is a duplicate: its labels replace the stored ones with ``update_labels``, else they
    are only compared (``differing_labels``); see ``services.labels``. ``outcomes``: report each record's
    outcome (``ImportReport.items``)."""
    with ctx.store.session() as s:
        require_app(s, app_id)
    split = canonical_split(split)
    report = ImportReport(outcomes={} if outcomes else None)
    resolver = ConceptResolver(app_id)
    start = time.perf_counter()
    window = max(1, ctx.settings.import_workers) * 4
    pending: deque[Future[_Checked]] = deque()
    batch: list[_Checked] = []
    dups: list[Duplicate] = []

    def drain(limit: int) -> None:
        while len(pending) > limit:
            c = pending.popleft().result()
            if c.error is not None:
                report.reject(c.record.source, c.error, c.index)
            elif c.duplicate:
                report.duplicates += 1
                report.note(c.index, "duplicate", c.existing_id, c.existing_id)
                dups.append(Duplicate(c.existing_id, c.record, c.regions, c.index))  # type: ignore[arg-type]
                if len(dups) >= BATCH_SIZE:
                    reconcile_duplicates(ctx, app_id, dups, report, resolver, update_labels)
            else:
                batch.append(c)
                if len(batch) >= BATCH_SIZE:
                    _commit(ctx, app_id, batch, report, resolver)
                    batch.clear()
            if on_progress:
                on_progress(1)

    with ThreadPoolExecutor(max_workers=max(1, ctx.settings.import_workers), thread_name_prefix="import") as pool:
        for index, item in enumerate(items):
            if isinstance(item, Rejection):
                report.reject(item.file, item.reason, index)
                if on_progress:
                    on_progress(1)
                continue
            if split is not None:
                item.split = split
            pending.append(pool.submit(_check, ctx, app_id, item, index))
            drain(window)
        drain(0)
    if batch:
        _commit(ctx, app_id, batch, report, resolver)
    reconcile_duplicates(ctx, app_id, dups, report, resolver, update_labels)
    report.seconds = time.perf_counter() - start
    return report


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
