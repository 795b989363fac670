"""Labels of stored inputs: compared and replaced when an import meets an input again, added and removed by hand.

A label is an ``Annotation``: a whole-image concept (positive or negative) or a box with its concept.

Re-import rule: an input is known by its bytes (sha256, per app). When an import meets an input the app
already has, with labels other than the stored ones, the stored labels are kept and counted
(``differing_labels``) unless the import runs with ``update_labels``: then the input's labels (whole-image
concepts, negatives and boxes) are replaced by the import's (``updated``). Split, metadata and id stay as
they were. Concepts no input uses any more are kept (they are the app's, like ``concepts create``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, selectinload

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.formats import ImportRecord, Region
from deeptrain.ids import slugify
from deeptrain.services.concepts import ConceptResolver
from deeptrain.services.context import Context, require_app
from deeptrain.store import Annotation, Concept, Input

# (concept id, positive, top_row, left_col, bottom_row, right_col); the box is None for whole-image labels
Label = tuple[str, bool, Any, Any, Any, Any]
_BOX_DIGITS = 6  # boxes compare equal to this precision (floats through a database)


@dataclass
class Duplicate:
    """An imported record whose bytes the app already holds as input ``input_id``."""

    input_id: str
    record: ImportRecord
    regions: tuple[Region, ...]
    index: int | None = None  # the record's position in the import (for per-record outcomes)


def _box(top: Any, left: Any, bottom: Any, right: Any) -> tuple[Any, Any, Any, Any]:
    if top is None:
        return (None, None, None, None)
    return tuple(round(float(x), _BOX_DIGITS) for x in (top, left, bottom, right))  # type: ignore[return-value]


def wanted_labels(record: ImportRecord, regions: Iterable[Region],
                  concept_id: Callable[[str], str] = slugify) -> set[Label]:
    """The labels an import record gives its input, by concept id (``concept_id`` of a name, as the import's
    ``ConceptResolver`` makes it; no concept is created)."""
    labels = {(concept_id(name), True, None, None, None, None) for name in record.concepts}
    labels |= {(concept_id(name), False, None, None, None, None) for name in record.negatives}
    labels |= {(concept_id(r.concept), True, *_box(r.top_row, r.left_col, r.bottom_row, r.right_col))
               for r in regions}
    return labels


def stored_labels(s: Session, app_id: str, input_ids: Sequence[str]) -> dict[str, set[Label]]:
    """The labels of these inputs of the app, by input id."""
    out: dict[str, set[Label]] = {i: set() for i in input_ids}
    rows = s.execute(select(Annotation).where(Annotation.app_id == app_id, Annotation.input_id.in_(input_ids)))
    for (a,) in rows:
        out[a.input_id].add((a.concept_id, bool(a.value), *_box(a.top_row, a.left_col, a.bottom_row, a.right_col)))
    return out


def _annotation_rows(s: Session, app_id: str, input_id: str, dup: Duplicate,
                     resolver: ConceptResolver) -> list[dict[str, Any]]:
    rec = dup.record
    labels = [(cid, True) for cid in resolver.ids(s, rec.concepts)]
    labels += [(cid, False) for cid in resolver.ids(s, rec.negatives)]
    rows = [dict(app_id=app_id, input_id=input_id, concept_id=cid, value=v, top_row=None, left_col=None,
                 bottom_row=None, right_col=None) for cid, v in labels]
    for r, cid in zip(dup.regions, resolver.ids(s, [r.concept for r in dup.regions])):
        rows.append(dict(app_id=app_id, input_id=input_id, concept_id=cid, value=True, top_row=r.top_row,
                         left_col=r.left_col, bottom_row=r.bottom_row, right_col=r.right_col))
    return rows


def reconcile_duplicates(ctx: Context, app_id: str, dups: list[Duplicate], report: Any, resolver: ConceptResolver,
                         update: bool) -> None:
    """Compare duplicates' labels with the stored ones and empty ``dups``. With ``update`` replace those that
    differ (``report.updated``), else count them (``report.differing_labels``); a record whose concept names
    make no id is rejected instead (``report``: the import's ``ImportReport``)."""
    if not dups:
        return
    wanted: dict[str, tuple[Duplicate, set[Label]]] = {}
    indexes: dict[str, list[int | None]] = {}
    with ctx.store.session() as s:
        for dup in dups:
            try:
                wanted[dup.input_id] = (dup, wanted_labels(dup.record, dup.regions, lambda n: resolver.peek(s, n)))
                indexes.setdefault(dup.input_id, []).append(dup.index)
            except InvalidInput as exc:
                report.duplicates -= 1
                report.reject(dup.record.source, str(exc), dup.index)
    dups.clear()
    if not wanted:
        return
    try:
        with ctx.store.session() as s:
            stored = stored_labels(s, app_id, list(wanted))
            differing = [i for i, (_, labels) in wanted.items() if labels != stored.get(i, set())]
            if update and differing:
                s.execute(delete(Annotation).where(Annotation.app_id == app_id, Annotation.input_id.in_(differing)))
                rows = [row for i in differing for row in _annotation_rows(s, app_id, i, wanted[i][0], resolver)]
                if rows:
                    s.execute(insert(Annotation), rows)
    except Exception:
        resolver.reset()  # concepts created in the rolled-back transaction are gone
        raise
    if update:
        report.updated += len(differing)
    else:
        report.differing_labels += len(differing)
    for input_id in differing:
        for index in indexes[input_id]:
            report.flag(index, "updated" if update else "differing_labels")


# --- editing one input's labels ---------------------------------------------------------------------------


def _require_input(s: Session, app_id: str, input_id: str) -> Input:
    require_app(s, app_id)
    inp = s.get(Input, (app_id, input_id), options=[selectinload(Input.annotations)])
    if inp is None:  # the same answer for another app's input as for none at all
        raise NotFound(f"input {input_id!r} does not exist in app {app_id!r}", "input")
    return inp


def _concept_ids(s: Session, app_id: str, concepts: Sequence[str], create: bool) -> list[str]:
    """Concept ids for names or ids: an existing id as it is, else the id an import makes of the name
    (``slugify``); a concept the app lacks is created (``create``) or refused."""
    if not concepts:
        raise InvalidInput("name at least one concept")
    ids = []
    for name in concepts:
        cid = name if s.get(Concept, (app_id, name)) is not None else slugify(name)
        if s.get(Concept, (app_id, cid)) is None:
            if not create:
                raise NotFound(f"concept {name!r} does not exist in app {app_id!r}", "concept")
            s.add(Concept(app_id=app_id, id=cid, name=name))
            s.flush()
        ids.append(cid)
    return list(dict.fromkeys(ids))


def label_input(ctx: Context, app_id: str, input_id: str, concepts: Sequence[str],
                negative: bool = False) -> int:
    """Label an input with whole-image concepts (``negative``: as negatives), by name or id as an import
    would: a concept the app lacks is created. A concept's opposite label on the input is replaced.
    Returns how many labels were added."""
    with ctx.store.session() as s:
        inp = _require_input(s, app_id, input_id)
        ids = _concept_ids(s, app_id, concepts, create=True)
        whole = {a.concept_id: a for a in inp.annotations if a.top_row is None}
        added = 0
        for cid in ids:
            current = whole.get(cid)
            if current is not None and bool(current.value) == (not negative):
                continue
            if current is not None:
                inp.annotations.remove(current)
            inp.annotations.append(Annotation(app_id=app_id, input_id=input_id, concept_id=cid, value=not negative))
            added += 1
        return added


def unlabel_input(ctx: Context, app_id: str, input_id: str, concepts: Sequence[str]) -> int:
    """Remove an input's whole-image labels (positive or negative) of these concepts; boxes stay.

    A concept the app does not have is refused; one the input is not labelled with is left as it is.
    Returns how many labels were removed."""
    with ctx.store.session() as s:
        inp = _require_input(s, app_id, input_id)
        ids = _concept_ids(s, app_id, concepts, create=False)
        gone = [a for a in inp.annotations if a.top_row is None and a.concept_id in ids]
        for a in gone:
            inp.annotations.remove(a)
        return len(gone)
