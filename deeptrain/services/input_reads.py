"""Reading, deleting and exporting stored inputs (the import pipeline is ``services.inputs``).

An input's native record (``input_dict``) is what ``list_inputs`` and the SDK give; ``input_views`` adds
its labels with their annotation ids and concept names, for callers that address single labels (the
Clarifai-compatible API). ``InputFilter`` narrows ``input_views`` and ``input_counts`` in SQL (the console's
grid at tens of thousands of inputs): "labelled" is an ``EXISTS`` on the annotations' ``(app_id, input_id)``
index, a concept an ``IN`` over its ``(app_id, concept_id)`` index, a split a plain column test, so a page is
LIMIT/OFFSET over the id order (the primary key ``(app_id, id)``). ``after`` (an input id) pages by key instead:
the index seeks to it, so a page deep inside costs what the first does, where OFFSET walks every row before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import case, delete, exists, func, or_, select
from sqlalchemy.orm import selectinload

from deeptrain.errors import NotFound
from deeptrain.formats import ExportItem, Region, get_format
from deeptrain.formats.records import SPLITS
from deeptrain.services.context import Context, require_app
from deeptrain.store import Annotation, Concept, Input


def input_dict(inp: Input, names: dict[str, str] | None = None) -> dict[str, Any]:
    def name(cid: str) -> str:
        return names[cid] if names else cid

    return {
        "id": inp.id,
        "sha256": inp.sha256,
        "width": inp.width,
        "height": inp.height,
        "format": inp.format,
        "split": inp.split,
        "source": inp.source,
        "metadata": inp.metadata_json,
        "concepts": [name(a.concept_id) for a in inp.annotations if a.value and a.top_row is None],
        "negatives": [name(a.concept_id) for a in inp.annotations if not a.value],
        "regions": [
            {"concept": name(a.concept_id), "top_row": a.top_row, "left_col": a.left_col,
             "bottom_row": a.bottom_row, "right_col": a.right_col}
            for a in inp.annotations if a.top_row is not None
        ],
        "created_at": inp.created_at.isoformat(),
    }


def annotation_dict(a: Annotation, names: dict[str, str]) -> dict[str, Any]:
    """One label: a whole-image concept (``positive`` or not) or a box (``box``: top, left, bottom, right)."""
    return {"id": a.id, "input_id": a.input_id, "concept_id": a.concept_id,
            "concept_name": names.get(a.concept_id, a.concept_id), "positive": bool(a.value),
            "box": list(a.box) if a.box is not None else None}


def concept_names(s, app_id: str) -> dict[str, str]:
    return {c.id: c.name for c in s.scalars(select(Concept).where(Concept.app_id == app_id))}


def iter_inputs(ctx: Context, app_id: str, page: int = 500) -> Iterator[Input]:
    """All inputs of an app (with annotations loaded), in id order, a page at a time."""
    last = ""
    while True:
        with ctx.store.session() as s:
            rows = s.scalars(
                select(Input).options(selectinload(Input.annotations))
                .where(Input.app_id == app_id, Input.id > last).order_by(Input.id).limit(page)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def list_inputs(ctx: Context, app_id: str, limit: int | None = None, offset: int = 0,
                after: str | None = None) -> list[dict[str, Any]]:
    """The app's inputs in id order: ``limit`` of them, past ``offset`` ones, and only ids after ``after``
    (keyset paging: give the last id of a page to get the next)."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        q = (select(Input).options(selectinload(Input.annotations)).where(Input.app_id == app_id)
             .order_by(Input.id).offset(offset))
        if after is not None:
            q = q.where(Input.id > after)
        if limit is not None:
            q = q.limit(limit)
        return [input_dict(i) for i in s.scalars(q)]


@dataclass(frozen=True)
class InputFilter:
    """Which inputs a listing or count keeps: ``concept_id`` (a positive whole-image label or a box of it),
    ``split`` (train, validation, test, or ``"none"``: no split), ``labelled`` (has any positive label or box /
    has none). ``None`` keeps all."""

    concept_id: str | None = None
    split: str | None = None
    labelled: bool | None = None

    @property
    def empty(self) -> bool:
        return self.concept_id is None and self.split is None and self.labelled is None


def _positive_term():
    return or_(Annotation.value.is_(True), Annotation.top_row.is_not(None))


def _labelled():
    """EXISTS a positive label or a box on the outer query's input (``ix_annotations_input``)."""
    return exists().where(Annotation.app_id == Input.app_id, Annotation.input_id == Input.id, _positive_term())


def _with_concept(app_id: str, concept_id: str):
    """The input is among those with a positive label or a box of ``concept_id``: an IN over the concept's
    annotations (``ix_annotations_concept``, read once), not a correlated EXISTS, which SQLite without
    statistics answers from the concept index once per input (seconds at 60,000 inputs)."""
    return Input.id.in_(select(Annotation.input_id).where(Annotation.app_id == app_id,
                                                          Annotation.concept_id == concept_id, _positive_term()))


def _split_is(split: str | None):
    return Input.split.is_(None) if split in (None, "none") else Input.split == split


def filter_conditions(app_id: str, filters: InputFilter | None) -> list[Any]:
    """The WHERE terms of ``filters`` on the app's ``Input`` rows (besides the app itself)."""
    if filters is None:
        return []
    terms: list[Any] = []
    if filters.concept_id is not None:
        terms.append(_with_concept(app_id, filters.concept_id))
    if filters.split is not None:
        terms.append(_split_is(filters.split))
    if filters.labelled is not None:
        terms.append(_labelled() if filters.labelled else ~_labelled())
    return terms


def input_counts(ctx: Context, app_id: str, filters: InputFilter | None = None) -> dict[str, Any]:
    """How many inputs ``filters`` keeps (``matching``), and the app's whole: ``total``, ``labelled``,
    ``unlabelled`` and per split (``none``: no split). Two aggregate queries, no rows loaded."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        labelled = case((_labelled(), 1), else_=0)
        rows = s.execute(select(Input.split, func.count(), func.sum(labelled)).where(Input.app_id == app_id)
                         .group_by(Input.split)).all()
        matching = None
        if filters is not None and not filters.empty:
            matching = s.scalar(select(func.count()).select_from(Input)
                                .where(Input.app_id == app_id, *filter_conditions(app_id, filters))) or 0
    splits = {name: 0 for name in (*SPLITS, "none")}
    total = n_labelled = 0
    for split, n, n_lab in rows:
        key = "none" if split is None else split
        if key in splits:
            splits[key] += n
        total += n
        n_labelled += int(n_lab or 0)
    return {"matching": total if matching is None else matching, "total": total, "labelled": n_labelled,
            "unlabelled": total - n_labelled, "splits": splits}


def input_views(ctx: Context, app_id: str, ids: Sequence[str] | None = None, limit: int | None = None,
                offset: int = 0, filters: InputFilter | None = None, after: str | None = None) -> list[dict[str, Any]]:
    """Inputs in id order (only ``ids``, when given; ids the app lacks are left out; only those ``filters``
    keeps; only ids after ``after``), each its native record plus ``annotations`` (``annotation_dict``, with
    concept names)."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        q = (select(Input).options(selectinload(Input.annotations))
             .where(Input.app_id == app_id, *filter_conditions(app_id, filters)))
        if ids is not None:
            q = q.where(Input.id.in_(list(ids)))
        if after is not None:
            q = q.where(Input.id > after)
        q = q.order_by(Input.id).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        rows = s.scalars(q).all()
        names = concept_names(s, app_id) if rows else {}
        return [{**input_dict(i), "annotations": [annotation_dict(a, names) for a in i.annotations]} for i in rows]


def storage_keys(ctx: Context, app_id: str, ids: Sequence[str]) -> dict[str, str]:
    """Where the app's inputs ``ids`` keep their bytes (ids the app lacks are left out); for the server only."""
    with ctx.store.session() as s:
        return dict(s.execute(select(Input.id, Input.storage_key)
                              .where(Input.app_id == app_id, Input.id.in_(list(ids)))).tuples().all())


def count_inputs(ctx: Context, app_id: str) -> int:
    with ctx.store.session() as s:
        require_app(s, app_id)
        return s.scalar(select(func.count()).select_from(Input).where(Input.app_id == app_id)) or 0


def get_input(ctx: Context, app_id: str, input_id: str) -> Input:
    with ctx.store.session() as s:
        require_app(s, app_id)
        inp = s.get(Input, (app_id, input_id), options=[selectinload(Input.annotations)])
        if inp is None:
            raise NotFound(f"input {input_id!r} does not exist in app {app_id!r}", "input")
        return inp


def input_record(ctx: Context, app_id: str, input_id: str) -> dict[str, Any]:
    """An input with its labels, as ``list_inputs`` gives it."""
    return input_dict(get_input(ctx, app_id, input_id))


def get_input_bytes(ctx: Context, app_id: str, input_id: str) -> bytes:
    return ctx.storage.get_bytes(get_input(ctx, app_id, input_id).storage_key)


def delete_input(ctx: Context, app_id: str, input_id: str) -> dict[str, Any]:
    """Delete an input row; its bytes go too unless another input of the app shares them (none can)."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        inp = s.get(Input, (app_id, input_id))
        if inp is None:
            raise NotFound(f"input {input_id!r} does not exist in app {app_id!r}", "input")
        key = inp.storage_key
        s.delete(inp)
    ctx.storage.delete(key)
    return {"id": input_id, "deleted": True}


def delete_inputs(ctx: Context, app_id: str, input_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Delete several inputs in one transaction: all of them, or none when one does not exist."""
    wanted = list(dict.fromkeys(input_ids))
    with ctx.store.session() as s:
        require_app(s, app_id)
        found = dict(s.execute(select(Input.id, Input.storage_key)
                               .where(Input.app_id == app_id, Input.id.in_(wanted))).tuples().all())
        missing = [i for i in wanted if i not in found]
        if missing:
            raise NotFound(f"input {missing[0]!r} does not exist in app {app_id!r} (nothing was deleted)", "input")
        s.execute(delete(Annotation).where(Annotation.app_id == app_id, Annotation.input_id.in_(wanted)))
        s.execute(delete(Input).where(Input.app_id == app_id, Input.id.in_(wanted)))
    for key in found.values():
        ctx.storage.delete(key)
    return [{"id": i, "deleted": True} for i in wanted]


def export_inputs(ctx: Context, app_id: str, out_dir: str | Path, fmt: str) -> dict[str, Any]:
    """Write all inputs and labels of an app to ``out_dir`` in a supported format."""
    spec = get_format(fmt)
    out = Path(out_dir)
    with ctx.store.session() as s:
        require_app(s, app_id)
        names = {c.id: c.name for c in s.scalars(select(Concept).where(Concept.app_id == app_id).order_by(Concept.id))}
    if spec.exports_concept_ids:
        names = {cid: cid for cid in names}

    def items() -> Iterator[ExportItem]:
        for inp in iter_inputs(ctx, app_id):
            d = input_dict(inp, names)
            yield ExportItem(
                input_id=inp.id, extension=inp.storage_key.rsplit(".", 1)[-1], width=inp.width, height=inp.height,
                read_bytes=lambda key=inp.storage_key: ctx.storage.get_bytes(key),
                concepts=d["concepts"], negatives=d["negatives"],
                regions=[Region(r["concept"], r["top_row"], r["left_col"], r["bottom_row"], r["right_col"])
                         for r in d["regions"]],
                split=inp.split, metadata=inp.metadata_json,
            )

    out.mkdir(parents=True, exist_ok=True)
    written = spec.writer(items(), out, list(names.values()))
    return {"format": fmt, "path": str(out), "exported": written}
