"""A remote import: local files read with deeptrain's format readers, sent to the server's ``POST …/inputs``.

The records a reader yields (``deeptrain.formats``) are read here (bounded by ``DEEPTRAIN_MAX_IMAGE_BYTES``),
their pixel boxes normalized from the image header, and sent base64 in requests of at most
``MAX_PER_REQUEST`` inputs (and ``MAX_REQUEST_IMAGE_BYTES`` of image bytes), ``IN_FLIGHT`` requests at once
while the next one is read. The server runs each request through the same pipeline as a local import
and answers one outcome per input, in request order (``data.metadata.deeptrain``: imported, duplicate or
rejected with the reason), which is counted into the same report a local import gives, a rejection
named by its file. A request is sent again when the connection failed: an input that had landed is then
a duplicate.
"""

from __future__ import annotations

import base64
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from deeptrain.errors import DeeptrainError, InvalidInput
from deeptrain.formats import ImportRecord, Rejection
from deeptrain.formats.records import canonical_split, normalize_box, read_record_bytes
from deeptrain.ids import slugify
from deeptrain.images import ImageLimits, check_header
from deeptrain.remote.transport import Transport
from deeptrain.wire import codes

MAX_PER_REQUEST = 128  # the server's PostInputs limit
MAX_REQUEST_IMAGE_BYTES = 16 * 1024 * 1024  # image bytes per request (base64 adds a third)
IN_FLIGHT = 2
_OUTCOME_BY_CODE = {codes.INPUT_DOWNLOAD_SUCCESS: "imported", codes.INPUT_DUPLICATE: "duplicate"}

ProgressFn = Callable[[int], None]


@dataclass
class Report:
    """The counts of ``deeptrain.results.ImportResult``."""

    imported: int = 0
    duplicates: int = 0
    updated: int = 0
    differing_labels: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self, seconds: float) -> dict[str, Any]:
        return {"imported": self.imported, "duplicates": self.duplicates, "updated": self.updated,
                "differing_labels": self.differing_labels, "rejected": self.rejected, "seconds": round(seconds, 3),
                "images_per_s": round(self.imported / seconds, 1) if seconds else 0.0}


@dataclass
class _Ready:
    source: str  # how the report names it: the file (or ``labels.csv:12``)
    data: bytes
    entry: dict[str, Any]  # the input without its image


def _concepts(names: Iterable[str], value: float) -> list[dict[str, Any]]:
    """Labels as Clarifai concepts: the id a local import would give the name (``slugify``), the name as given;
    ``value`` 1.0 positive, 0.0 negative."""
    return [{"id": slugify(name), "name": name, "value": value} for name in names]


def prepare(record: ImportRecord, split: str | None, limits: ImageLimits) -> _Ready:
    """Read one record's image and build its input; a reason to refuse it is an ``InvalidInput``."""
    overlap = set(record.concepts) & set(record.negatives)
    if overlap:
        raise InvalidInput(f"concept(s) {sorted(overlap)} are both positive and negative")
    split = canonical_split(split if split is not None else record.split)
    data = read_record_bytes(record, limits.max_bytes)
    regions = record.regions
    if regions and record.pixel_boxes:  # the server takes normalized boxes: the header gives the size
        width, height, _ = check_header(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
        regions = tuple(normalize_box(r, width, height) for r in regions)
    entry: dict[str, Any] = {"data": {
        "concepts": _concepts(record.concepts, 1.0) + _concepts(record.negatives, 0.0),
        "regions": [{"region_info": {"bounding_box": {"top_row": r.top_row, "left_col": r.left_col,
                                                      "bottom_row": r.bottom_row, "right_col": r.right_col}},
                     "data": {"concepts": _concepts([r.concept], 1.0)}} for r in regions],
    }}
    if record.metadata:
        entry["data"]["metadata"] = record.metadata
    if record.input_id is not None:
        entry["id"] = record.input_id
    if split is not None:
        entry["split"] = split
    return _Ready(record.source, data, entry)


def _url_refused(url: str) -> bytes:
    raise InvalidInput(f"url {url!r}: a url row names an image in the server's storage, which a remote import "
                       "cannot read; import this file on the server host")


def url_reader() -> Callable[[str], bytes]:
    """What a CSV/JSONL reader's ``url`` rows read with remotely: nothing (each such row is refused)."""
    return _url_refused


class RemoteImport:
    """One import into ``path`` (the app's ``…/inputs`` route) over ``transport``."""

    def __init__(self, transport: Transport, path: str, limits: ImageLimits, *, split: str | None = None,
                 update_labels: bool = False, on_progress: ProgressFn | None = None):
        self.transport, self.path, self.limits = transport, path, limits
        self.split, self.update_labels, self.on_progress = canonical_split(split), update_labels, on_progress
        self.report = Report()

    def run(self, items: Iterable[ImportRecord | Rejection]) -> dict[str, Any]:
        start = time.perf_counter()
        pending: deque[tuple[list[_Ready], Future[dict[str, Any] | str]]] = deque()
        with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="remote-import") as pool:
            try:
                for batch in self._batches(items):
                    pending.append((batch, pool.submit(self._send, batch)))
                    while len(pending) > IN_FLIGHT:  # two requests out while the next batch is read
                        self._settle(*pending.popleft())
                while pending:
                    self._settle(*pending.popleft())
            finally:
                for _, future in pending:
                    future.cancel()
        return self.report.as_dict(time.perf_counter() - start)

    def _progress(self) -> None:
        if self.on_progress:
            self.on_progress(1)

    def _reject(self, file: str, reason: str) -> None:
        self.report.rejected.append({"file": file, "reason": reason})
        self._progress()

    def _batches(self, items: Iterable[ImportRecord | Rejection]):
        batch: list[_Ready] = []
        size = 0
        for item in items:
            if isinstance(item, Rejection):
                self._reject(item.file, item.reason)
                continue
            try:
                ready = prepare(item, self.split, self.limits)
            except DeeptrainError as exc:
                self._reject(item.source, str(exc))
                continue
            if batch and (len(batch) >= MAX_PER_REQUEST or size + len(ready.data) > MAX_REQUEST_IMAGE_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(ready)
            size += len(ready.data)
        if batch:
            yield batch

    def _send(self, batch: list[_Ready]) -> dict[str, Any] | str:
        """The server's answer, or the reason it refused the whole request (every input of it is rejected)."""
        inputs = [{**r.entry, "data": {**r.entry["data"], "image": {"base64": base64.b64encode(r.data).decode()}}}
                  for r in batch]
        body: dict[str, Any] = {"inputs": inputs}
        if self.update_labels:
            body["update_labels"] = True
        try:
            return self.transport.call("POST", self.path, body=body, retry=True,
                                       accept=(codes.SUCCESS, codes.MIXED_STATUS, codes.FAILURE))
        except InvalidInput as exc:  # e.g. over the server's request size: these inputs only
            return str(exc)

    def _settle(self, batch: list[_Ready], future: Future[dict[str, Any] | str]) -> None:
        answer = future.result()  # a missing app, a bad key, an unreachable server: raised, the import stops
        if isinstance(answer, str):
            for ready in batch:
                self._reject(ready.source, answer)
            return
        outcomes = answer.get("inputs") or []
        by_index = {_outcome(out).get("index", k): out for k, out in enumerate(outcomes)}
        for k, ready in enumerate(batch):
            if k in by_index:
                self._count(ready, by_index[k])
            else:
                self._reject(ready.source, answer["status"].get("description")
                             or "the server answered no outcome for this input")

    def _count(self, ready: _Ready, out: dict[str, Any]) -> None:
        meta = _outcome(out)
        status = out.get("status") or {}
        outcome = meta.get("outcome") or _OUTCOME_BY_CODE.get(int(status.get("code") or 0), "rejected")
        if outcome == "imported":
            self.report.imported += 1
        elif outcome == "duplicate":
            self.report.duplicates += 1
            self.report.updated += bool(meta.get("updated"))
            self.report.differing_labels += bool(meta.get("differing_labels"))
        else:
            self._reject(ready.source, meta.get("reason") or status.get("description") or "rejected by the server")
            return
        self._progress()


def _outcome(out: dict[str, Any]) -> dict[str, Any]:
    """deeptrain's record of one input's outcome: ``index``, ``outcome``, ``reason``, ``updated`` …"""
    return ((out.get("data") or {}).get("metadata") or {}).get("deeptrain") or {}
