"""Dataset versions: immutable, content-hashed Parquet snapshots of an app's inputs and labels.

Layout under ``apps/<app>/datasets/<version>/``: ``part-00000.parquet`` … (about
``ROWS_PER_FILE`` rows each, fewer when images are large) and ``_manifest.json``, written
last: a version exists once its manifest does. The version id is derived from the content
hash, so the same inputs and labels always give the same version, and snapshotting
unchanged data returns the existing version instead of writing a copy.

Splits: an input keeps the split it was imported with; one without goes to test with
probability ``test_fraction``, drawn from its content hash. A version with no imported
validation inputs gets ``validation_fraction`` of its training inputs carved into validation,
drawn from another part of the content hash (so both draws are reproducible and independent),
never a concept's last training input; the manifest's ``validation`` says which happened.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from sqlalchemy import select

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.services.context import Context, app_prefix, require_app
from deeptrain.formats.records import SPLITS
from deeptrain.services.inputs import iter_inputs
from deeptrain.store import Concept, DatasetVersion

SCHEMA_VERSION = 1
ROWS_PER_FILE = 2000
MAX_FILE_BYTES = 256 * 1024 * 1024
MANIFEST = "_manifest.json"

BOX_TYPE = pa.struct([
    ("top_row", pa.float32()), ("left_col", pa.float32()), ("bottom_row", pa.float32()),
    ("right_col", pa.float32()), ("concept", pa.int32()),
])
PARQUET_SCHEMA = pa.schema([
    ("input_id", pa.string()),
    ("image", pa.binary()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("concepts", pa.list_(pa.int32())),
    ("negatives", pa.list_(pa.int32())),
    ("boxes", pa.list_(BOX_TYPE)),
    ("split", pa.string()),
])


@dataclass
class _Row:
    input_id: str
    sha256: str
    storage_key: str
    size_bytes: int
    width: int
    height: int
    concepts: list[str]
    negatives: list[str]
    boxes: list[tuple[float, float, float, float, str]]
    split: str


CARVED = "carved from train by content hash"


def assign_split(sha256: str, test_fraction: float) -> str:
    """A stable split for inputs that carry none: by their content hash."""
    return "test" if int(sha256[:8], 16) / 2**32 < test_fraction else "train"


def _validation_draw(sha256: str) -> float:
    """The draw that carves validation from train: hash digits the test draw does not use."""
    return int(sha256[8:16], 16) / 2**32


def carve_validation(rows: list[_Row], fraction: float) -> int:
    """Move ``fraction`` of the training rows to validation by content hash; returns how many moved.

    Rows whose draw falls below ``fraction`` are taken in draw order, at most ``fraction`` of the
    training rows rounded down (so an app of a few images keeps them all for training), and a row is
    kept in train when it is the last training input of one of its concepts (positives or boxes), so
    a concept that trains without carving still does.
    """
    train = sorted((r for r in rows if r.split == "train"), key=lambda r: (_validation_draw(r.sha256), r.input_id))
    left = Counter(c for r in train for c in _trained_concepts(r))
    carved, most = 0, int(fraction * len(train))
    for r in train:
        if _validation_draw(r.sha256) >= fraction or carved == most:
            break
        concepts = _trained_concepts(r)
        if any(left[c] <= 1 for c in concepts):
            continue
        left.subtract(concepts)
        r.split = "validation"
        carved += 1
    return carved


def _trained_concepts(r: _Row) -> set[str]:
    return {*r.concepts, *(b[4] for b in r.boxes)}


def validation_record(rows: list[_Row], fraction: float, carved: int | None) -> dict[str, Any]:
    """The manifest's account of the validation split: imported, or carved (and how), and its size."""
    if carved is None:
        return {"source": "imported", "count": sum(1 for r in rows if r.split == "validation")}
    return {"source": CARVED, "fraction": fraction, "count": carved}


def _collect(ctx: Context, app_id: str, test_fraction: float) -> list[_Row]:
    rows = []
    for inp in iter_inputs(ctx, app_id):
        rows.append(_Row(
            input_id=inp.id, sha256=inp.sha256, storage_key=inp.storage_key, size_bytes=inp.size_bytes,
            width=inp.width, height=inp.height,
            concepts=sorted({a.concept_id for a in inp.annotations if a.value and a.top_row is None}),
            negatives=sorted({a.concept_id for a in inp.annotations if not a.value}),
            boxes=sorted((a.top_row, a.left_col, a.bottom_row, a.right_col, a.concept_id)  # type: ignore[misc]
                         for a in inp.annotations if a.top_row is not None),
            split=inp.split or assign_split(inp.sha256, test_fraction),
        ))
    return rows


def _content_hash(rows: list[_Row], concepts: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"schema": SCHEMA_VERSION, "concepts": concepts}).encode())
    for r in rows:
        boxes = [[round(b, 6) for b in box[:4]] + [box[4]] for box in r.boxes]
        h.update(json.dumps([r.input_id, r.sha256, r.concepts, r.negatives, boxes, r.split]).encode())
    return h.hexdigest()


def _chunks(rows: list[_Row]) -> Iterator[list[_Row]]:
    chunk: list[_Row] = []
    size = 0
    for r in rows:
        if chunk and (len(chunk) >= ROWS_PER_FILE or size + r.size_bytes > MAX_FILE_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(r)
        size += r.size_bytes
    if chunk:
        yield chunk


def _table(ctx: Context, chunk: list[_Row], index: dict[str, int], pool: ThreadPoolExecutor) -> pa.Table:
    images = list(pool.map(ctx.storage.get_bytes, (r.storage_key for r in chunk)))
    return pa.table({
        "input_id": [r.input_id for r in chunk],
        "image": images,
        "width": [r.width for r in chunk],
        "height": [r.height for r in chunk],
        "concepts": [[index[c] for c in r.concepts] for r in chunk],
        "negatives": [[index[c] for c in r.negatives] for r in chunk],
        "boxes": [[{"top_row": b[0], "left_col": b[1], "bottom_row": b[2], "right_col": b[3], "concept": index[b[4]]}
                   for b in r.boxes] for r in chunk],
        "split": [r.split for r in chunk],
    }, schema=PARQUET_SCHEMA)


def _counts(rows: list[_Row], concept_ids: list[str]) -> dict[str, Any]:
    per_split = Counter(r.split for r in rows)
    per_concept: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        for c in _trained_concepts(r):  # inputs with the concept, as a label or in a box, per split
            per_concept[c][r.split] += 1
        for c in r.negatives:
            per_concept[c]["negatives"] += 1
        for b in r.boxes:
            per_concept[b[4]]["boxes"] += 1
    return {
        "inputs": len(rows),
        "splits": {s: per_split.get(s, 0) for s in SPLITS},
        "labelled": sum(1 for r in rows if r.concepts or r.negatives or r.boxes),
        "concepts": {
            c: {k: per_concept[c].get(k, 0) for k in (*SPLITS, "negatives", "boxes")} for c in concept_ids
        },
    }


def version_prefix(app_id: str, version_id: str) -> str:
    return f"{app_prefix(app_id)}/datasets/{version_id}"


def snapshot(
    ctx: Context, app_id: str, *, test_fraction: float = 0.1, validation_fraction: float = 0.1,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write (or find) the dataset version of the app's current inputs and labels."""
    if not 0 < test_fraction < 1:
        raise InvalidInput(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if not 0 <= validation_fraction < 1:
        raise InvalidInput(f"validation_fraction must be at least 0 and below 1, got {validation_fraction}")
    with ctx.store.session() as s:
        require_app(s, app_id)
        names = {c.id: c.name for c in s.scalars(select(Concept).where(Concept.app_id == app_id))}
    rows = _collect(ctx, app_id, test_fraction)
    if not rows:
        raise InvalidInput(f"app {app_id!r} has no inputs to snapshot; import some first")
    imported = any(r.split == "validation" for r in rows)
    validation = validation_record(rows, validation_fraction,
                                   None if imported else carve_validation(rows, validation_fraction))
    used = sorted({c for r in rows for c in (*r.concepts, *r.negatives, *(b[4] for b in r.boxes))})
    concepts = [(cid, names[cid]) for cid in used]
    content_hash = _content_hash(rows, concepts)
    version_id = content_hash[:16]
    with ctx.store.session() as s:
        existing = s.get(DatasetVersion, (app_id, version_id))
        if existing is not None:
            return {**existing.manifest, "existing": True}

    prefix = version_prefix(app_id, version_id)
    index = {cid: i for i, cid in enumerate(used)}
    files = []
    with ThreadPoolExecutor(max_workers=max(1, ctx.settings.import_workers)) as pool:
        for n, chunk in enumerate(_chunks(rows)):
            key = f"{prefix}/part-{n:05d}.parquet"
            with ctx.storage.writer(key) as out:
                pq.write_table(_table(ctx, chunk, index, pool), out, row_group_size=500, compression="zstd")
            files.append(key.rsplit("/", 1)[-1])
            if on_progress:
                on_progress(len(chunk))
    manifest = {
        "id": version_id,
        "app_id": app_id,
        "content_hash": content_hash,
        "schema_version": SCHEMA_VERSION,
        "test_fraction": test_fraction,
        "validation": validation,
        "concepts": [{"id": cid, "name": name} for cid, name in concepts],
        "counts": _counts(rows, used),
        "files": files,
        "uri": ctx.storage.uri_for(prefix),
    }
    ctx.storage.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
    with ctx.store.session() as s:
        if s.get(DatasetVersion, (app_id, version_id)) is None:
            s.add(DatasetVersion(app_id=app_id, id=version_id, content_hash=content_hash, storage_prefix=prefix,
                                 num_inputs=len(rows), manifest=manifest))
    return {**manifest, "existing": False}


def list_datasets(ctx: Context, app_id: str) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        versions = s.scalars(
            select(DatasetVersion).where(DatasetVersion.app_id == app_id).order_by(DatasetVersion.created_at)
        )
        return [
            {"id": v.id, "num_inputs": v.num_inputs, "created_at": v.created_at.isoformat(),
             "splits": v.manifest["counts"]["splits"], "num_concepts": len(v.manifest["concepts"])}
            for v in versions
        ]


def get_dataset(ctx: Context, app_id: str, version_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        v = s.get(DatasetVersion, (app_id, version_id))
        if v is None:
            raise NotFound(f"dataset version {version_id!r} does not exist in app {app_id!r}", "dataset_version")
        return {**v.manifest, "created_at": v.created_at.isoformat()}


def dataset_paths(ctx: Context, app_id: str, version_id: str) -> list[str]:
    """Filesystem paths of the version's Parquet files (use with ``ctx.storage.fs``)."""
    manifest = get_dataset(ctx, app_id, version_id)
    prefix = version_prefix(app_id, version_id)
    return [ctx.storage.path(f"{prefix}/{f}") for f in manifest["files"]]


def open_dataset(ctx: Context, app_id: str, version_id: str) -> pads.Dataset:
    """The version as a ``pyarrow.dataset`` over local or S3 storage."""
    return pads.dataset(dataset_paths(ctx, app_id, version_id), filesystem=ctx.storage.fs, format="parquet",
                        schema=PARQUET_SCHEMA)
