"""The import pipeline: records in, inputs with their labels committed, at the speed of the storage.

Three stages overlap, each bounded, so memory stays flat whatever the number of records:

1. each record is read, validated, decoded and hashed (``_check``): by ``import_workers`` threads (Pillow and
   hashlib release the GIL), at most a few groups ahead of the main thread, or on the main thread itself while
   a record costs less than handing it to a thread (``import_pace.Pace``: small images);
2. the main thread takes them in order, ``CHUNK`` at a time: one ``sha256 IN (...)`` query per chunk finds
   those the app already has (duplicates: nothing uploaded), and each new one goes to ``import_uploads``
   threads that write it once, at its content-addressed key (``Storage.put_immutable``: one PUT on S3,
   write-then-rename on local files; on local files the main thread writes while checks are cheap there).
   Bytes the import already has on their way are not uploaded twice;
3. records whose upload has finished are committed ``BATCH_SIZE`` at a time, each batch one transaction
   (inputs and annotations as two multi-row INSERTs).

Bytes are published before their row is committed, so a crash leaves at worst an unreferenced object
(``deeptrain gc`` collects it), never a visible input without bytes, and re-running the same import skips
what already landed (as duplicates).

With ``outcomes=True`` the report also says what became of each record, by its position in the input
(``ImportReport.items``): imported (its input id), duplicate (the existing input's id) or rejected (why).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deeptrain.errors import DeeptrainError, InvalidInput
from deeptrain.formats import ImportRecord, Region, Rejection
from deeptrain.formats.records import canonical_split, normalize_box, read_record_bytes
from deeptrain.ids import check_input_id
from deeptrain.images import ImageInfo, inspect_image
from deeptrain.services.concepts import ConceptResolver
from deeptrain.services.context import Context, app_prefix, require_app
from deeptrain.services.import_pace import PROBE, OnThisThread, Pace, done_future
from deeptrain.services.import_report import ImportReport
from deeptrain.services.labels import Duplicate, reconcile_duplicates
from deeptrain.storage import Storage
from deeptrain.store import Annotation, Input

BATCH_SIZE = 256  # rows per transaction
CHUNK = 64  # records per duplicate lookup (one query) and per hand-over to the upload threads
GROUP = 16  # records per decode task
ProgressFn = Callable[[int], None]


@dataclass
class _Checked:
    record: ImportRecord
    info: ImageInfo | None = None
    regions: tuple[Region, ...] = ()
    error: str | None = None
    index: int | None = None  # the record's position in the import
    data: bytes | None = None  # the bytes, until they are handed to an upload
    upload: Future[dict[str, str]] | None = None  # the task writing these bytes (shared by copies in the import)

    @property
    def input_id(self) -> str:
        return self.record.input_id or self.info.sha256[:16]  # type: ignore[union-attr]


def input_key(app_id: str, info: ImageInfo) -> str:
    return f"{app_prefix(app_id)}/inputs/{info.sha256[:2]}/{info.sha256}.{info.extension}"


def existing_ids(s: Session, app_id: str, shas: Iterable[str]) -> dict[str, str]:
    """{sha256: input id} of the app's inputs among ``shas`` (one query on ``uq_inputs_app_sha256``)."""
    wanted = list(set(shas))
    if not wanted:
        return {}
    return dict(s.execute(select(Input.sha256, Input.id).where(Input.app_id == app_id, Input.sha256.in_(wanted)))
                .tuples().all())


def _check(ctx: Context, record: ImportRecord, index: int | None = None) -> _Checked:
    """Worker stage: read, validate, decode and hash one image (no database, no storage)."""
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
        return _Checked(record, info, regions, index=index, data=data)
    except DeeptrainError as exc:
        return _Checked(record, error=str(exc), index=index)


def _check_many(ctx: Context, records: list[tuple[int, ImportRecord]]) -> list[_Checked]:
    """One worker task: a few records (handing records to threads one by one costs more than a small image)."""
    return [_check(ctx, record, index) for index, record in records]


def _put_many(storage: Storage, objects: list[tuple[str, bytes]]) -> dict[str, str]:
    """One upload task: write a few objects in turn; {key: why} for those that failed (the rest are written)."""
    failed = {}
    for key, data in objects:
        try:
            storage.put_immutable(key, data)
        except DeeptrainError as exc:  # e.g. StorageError: that record is not imported, the others go on
            failed[key] = str(exc)
    return failed


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
    # Core inserts of the tables, not the ORM's bulk path: the same executemany without its per-row bookkeeping
    # (measured: the import of 8,000 28x28 PNGs on tmpfs went from ~3,700 to ~5,100 images/s with this and the
    # read fix in images.read_file_limited)
    if inputs:
        s.execute(insert(Input.__table__), inputs)
    if annotations:
        s.execute(insert(Annotation.__table__), annotations)


def _commit(ctx: Context, app_id: str, batch: list[_Checked], report: ImportReport, resolver: ConceptResolver) -> None:
    """Commit a batch in one transaction. Copies of bytes committed earlier or earlier in the batch (the same
    image twice in one import) are duplicates of what the first became; on a conflict (e.g. a concurrent
    import) fall back to one by one."""
    fresh: list[_Checked] = []
    again: list[_Checked] = []
    try:
        with ctx.store.session() as s:
            known = existing_ids(s, app_id, (c.info.sha256 for c in batch))  # type: ignore[union-attr]
            seen: set[str] = set()
            for c in batch:
                sha = c.info.sha256  # type: ignore[union-attr]
                (again if sha in known or sha in seen else fresh).append(c)
                seen.add(sha)
            _insert(s, app_id, fresh, resolver)
    except (IntegrityError, InvalidInput):
        resolver.reset()  # concepts created in the rolled-back transaction are gone
        _commit_one_by_one(ctx, app_id, fresh, report, resolver)
    else:
        report.imported += len(fresh)
        for c in fresh:
            report.note(c.index, "imported", c.input_id)
    report.duplicates += len(again)
    if report.outcomes is not None and again:
        with ctx.store.session() as s:
            known = existing_ids(s, app_id, (c.info.sha256 for c in again))  # type: ignore[union-attr]
        for c in again:
            existing = known.get(c.info.sha256)  # type: ignore[union-attr]
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
            existing = None
            if report.outcomes is not None:
                with ctx.store.session() as s:
                    existing = existing_ids(s, app_id, [c.info.sha256]).get(c.info.sha256)  # type: ignore[union-attr]
            report.note(c.index, "duplicate", existing, existing)
        except InvalidInput as exc:
            resolver.reset()
            report.reject(c.record.source, str(exc), c.index)


class _Pipeline:
    """The main thread's side of an import: checked records in order -> duplicate lookups -> uploads ->
    batched commits. Every queue is bounded by a count (see the module's docstring)."""

    def __init__(self, ctx: Context, app_id: str, report: ImportReport, update_labels: bool,
                 on_progress: ProgressFn | None, uploads: ThreadPoolExecutor, upload_threads: int, pace: Pace):
        self.ctx, self.app_id, self.report, self.update_labels = ctx, app_id, report, update_labels
        self.on_progress, self.uploads, self.upload_threads = on_progress, uploads, upload_threads
        self.pace = pace
        self.upload_window = CHUNK * 2  # records staged before the oldest upload is waited for
        self.resolver = ConceptResolver(app_id)
        self.chunk: list[_Checked] = []  # checked, not yet looked up
        self.staged: deque[_Checked] = deque()  # new bytes, upload handed out, in record order
        self.in_flight: dict[str, Future[dict[str, str]]] = {}  # sha256 -> its upload, until its row is committed
        self.batch: list[_Checked] = []  # uploaded, not yet committed
        self.dups: list[Duplicate] = []  # duplicates of stored inputs, their labels not yet compared

    def progress(self) -> None:
        if self.on_progress:
            self.on_progress(1)

    def take(self, c: _Checked) -> None:
        """A checked record, in record order."""
        if c.error is not None:
            self.reject(c, c.error)
            return
        self.chunk.append(c)
        if len(self.chunk) >= CHUNK:
            self.stage()

    def stage(self) -> None:
        """Look the chunk up (one query), hand its new bytes to the upload threads, settle what is done."""
        with self.ctx.store.session() as s:
            known = existing_ids(s, self.app_id, (c.info.sha256 for c in self.chunk))  # type: ignore[union-attr]
        new: list[_Checked] = []
        for c in self.chunk:
            sha = c.info.sha256  # type: ignore[union-attr]
            if sha in known:
                c.data = None
                self.duplicate(c, known[sha])
            else:
                new.append(c)
        self.chunk.clear()
        fresh: dict[str, list[_Checked]] = {}  # sha256 -> its copies in this chunk, for bytes not yet on their way
        for c in new:
            c.upload = self.in_flight.get(c.info.sha256)  # type: ignore[union-attr]
            if c.upload is None:
                fresh.setdefault(c.info.sha256, []).append(c)  # type: ignore[union-attr]
        shas = list(fresh)
        # while checks are cheap enough for the main thread, so are the writes (the pace is only ever cheap on local
        # files, which have no network to wait on: see import_records)
        here = self.pace.cheap
        uploads, threads = (OnThisThread(), 1) if here else (self.uploads, self.upload_threads)
        groups = min(threads, len(shas))
        for part in (shas[g::groups] for g in range(groups)):  # as many tasks as threads, each a few objects
            first = [fresh[sha][0] for sha in part]
            task = uploads.submit(_put_many, self.ctx.storage,
                                       [(input_key(self.app_id, c.info), c.data) for c in first])  # type: ignore
            for sha in part:
                self.in_flight[sha] = task
                for c in fresh[sha]:
                    c.upload = task
        for c in new:
            c.data = None
        self.staged.extend(new)
        self.settle(self.upload_window)

    def reject(self, c: _Checked, reason: str) -> None:
        self.report.reject(c.record.source, reason, c.index)
        self.progress()

    def duplicate(self, c: _Checked, existing_id: str) -> None:
        self.report.duplicates += 1
        self.report.note(c.index, "duplicate", existing_id, existing_id)
        self.dups.append(Duplicate(existing_id, c.record, c.regions, c.index))
        if len(self.dups) >= BATCH_SIZE:
            reconcile_duplicates(self.ctx, self.app_id, self.dups, self.report, self.resolver, self.update_labels)
        self.progress()

    def settle(self, limit: int) -> None:
        """Wait for the oldest uploads until at most ``limit`` are staged; batch them, committing full batches."""
        while len(self.staged) > limit or (self.staged and self.staged[0].upload.done()):  # type: ignore[union-attr]
            c = self.staged.popleft()
            failed = c.upload.result().get(input_key(self.app_id, c.info))  # type: ignore[union-attr, arg-type]
            if failed is not None:
                self.in_flight.pop(c.info.sha256, None)  # type: ignore[union-attr]
                self.reject(c, failed)
                continue
            self.batch.append(c)
            if len(self.batch) >= BATCH_SIZE:
                self.commit()

    def commit(self) -> None:
        _commit(self.ctx, self.app_id, self.batch, self.report, self.resolver)
        for c in self.batch:
            self.in_flight.pop(c.info.sha256, None)  # type: ignore[union-attr]
            self.progress()
        self.batch.clear()

    def finish(self) -> None:
        if self.chunk:
            self.stage()
        self.settle(0)
        if self.batch:
            self.commit()
        reconcile_duplicates(self.ctx, self.app_id, self.dups, self.report, self.resolver, self.update_labels)


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
    start = time.perf_counter()
    workers, upload_threads = max(1, ctx.settings.import_workers), max(1, ctx.settings.import_uploads)
    pace = Pace() if ctx.storage.is_local else Pace(threshold_s=0.0)  # see import_pace.INLINE_BELOW_S
    with ThreadPoolExecutor(workers, thread_name_prefix="import-check") as pool, \
            ThreadPoolExecutor(upload_threads, thread_name_prefix="import-upload") as uploads:
        pipe = _Pipeline(ctx, app_id, report, update_labels, on_progress, uploads, upload_threads, pace)
        _feed(ctx, pipe, items, pool, workers, split, report, pace)
        pipe.finish()
    report.seconds = time.perf_counter() - start
    return report


def _feed(ctx: Context, pipe: _Pipeline, items: Iterable[ImportRecord | Rejection], pool: ThreadPoolExecutor,
          workers: int, split: str | None, report: ImportReport, pace: Pace) -> None:
    """The records, in groups of ``GROUP``, checked where ``Pace`` says, into ``pipe`` in record order."""
    checks: deque[Future[list[_Checked]]] = deque()  # groups in record order, at most workers * 2 ahead
    group: list[tuple[int, ImportRecord]] = []

    def check(group: list[tuple[int, ImportRecord]]) -> None:
        if pace.inline():  # the first PROBE records here, measured; the rest where that measure says
            start = time.perf_counter()
            checks.append(done_future(_check_many(ctx, group[:PROBE])))
            pace.measured(time.perf_counter() - start, len(group[:PROBE]))
            group = group[PROBE:]
        if group:
            checks.append(done_future(_check_many(ctx, group)) if pace.cheap else pool.submit(_check_many, ctx, group))
        while checks and (len(checks) > workers * 2 or checks[0].done()):
            for c in checks.popleft().result():
                pipe.take(c)

    for index, item in enumerate(items):
        if isinstance(item, Rejection):
            report.reject(item.file, item.reason, index)
            pipe.progress()
            continue
        if split is not None:
            item.split = split
        group.append((index, item))
        if len(group) >= GROUP:
            check(group)
            group = []
    if group:
        check(group)
    while checks:
        for c in checks.popleft().result():
            pipe.take(c)
