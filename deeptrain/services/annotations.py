"""Single labels of stored inputs, by annotation id (Clarifai's annotations), and patches of inputs' labels
and metadata.

An annotation is one ``Annotation`` row: a whole-image concept (positive, or negative) or a box with its
(positive) concept. A concept is named by id or by name: an id the app has is that concept, else the id is
``slugify(name)`` (as imports make it) and a concept the app lacks is created, with ``name`` as its display
name. Every change of one call happens in one transaction: all of it, or none when something is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import delete, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.formats.records import Region, normalize_box
from deeptrain.ids import check_id, slugify
from deeptrain.services.context import Context, require_app
from deeptrain.services.input_reads import annotation_dict, concept_names
from deeptrain.store import Annotation, Concept, Input

ACTIONS = ("merge", "overwrite", "remove")
Box = tuple[float, float, float, float]  # top_row, left_col, bottom_row, right_col, normalized


@dataclass(frozen=True)
class ConceptLabel:
    concept: str  # an id of the app's concept, or a name
    name: str | None = None  # the display name of a concept created for it
    positive: bool = True


@dataclass(frozen=True)
class NewLabels:
    """What to add to one input: whole-image labels and boxes (each box with its concepts)."""

    input_id: str
    concepts: tuple[ConceptLabel, ...] = ()
    boxes: tuple[tuple[Box, tuple[ConceptLabel, ...]], ...] = ()


@dataclass(frozen=True)
class LabelPatch:
    """A change to one annotation (``PATCH /annotations``): its concept and value, and/or its box."""

    id: str
    input_id: str | None = None
    concepts: tuple[ConceptLabel, ...] = ()
    box: Box | None = None


@dataclass(frozen=True)
class InputPatch:
    """A change to one input (``PATCH /inputs``): its whole-image labels and/or its metadata."""

    id: str
    concepts: tuple[ConceptLabel, ...] = ()
    metadata: dict[str, Any] | None = None


def check_action(action: str) -> str:
    if action not in ACTIONS:
        raise InvalidInput(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    return action


def ensure_concepts(ctx: Context, app_id: str, labels: Sequence[ConceptLabel]) -> None:
    """Create the concepts named by a valid id with a display name that the app lacks (so that an import
    naming them by id gives them their name)."""
    wanted = {lab.concept: lab.name for lab in labels if lab.name and _valid_id(lab.concept)}
    if not wanted:
        return
    try:
        with ctx.store.session() as s:
            require_app(s, app_id)
            have = set(s.scalars(select(Concept.id).where(Concept.app_id == app_id, Concept.id.in_(list(wanted)))))
            s.add_all(Concept(app_id=app_id, id=cid, name=name) for cid, name in wanted.items() if cid not in have)
    except IntegrityError:  # created meanwhile by another request: it exists, which is all that is needed
        pass


def _valid_id(value: str) -> bool:
    try:
        check_id(value, "concept")
        return True
    except InvalidInput:
        return False


def _concept_id(s: Session, app_id: str, label: ConceptLabel, create: bool = True) -> str:
    name = label.concept
    known = len(name) <= 64 and s.get(Concept, (app_id, name)) is not None
    cid = name if known else slugify(name)
    if not known and s.get(Concept, (app_id, cid)) is None:
        if not create:
            raise NotFound(f"concept {name!r} does not exist in app {app_id!r}", "concept")
        s.add(Concept(app_id=app_id, id=cid, name=label.name or name))
        s.flush()
    return cid


def _input(s: Session, app_id: str, input_id: str) -> Input:
    inp = s.get(Input, (app_id, input_id), options=[selectinload(Input.annotations)])
    if inp is None:  # the same answer for another app's input as for none at all
        raise NotFound(f"input {input_id!r} does not exist in app {app_id!r}", "input")
    return inp


def _checked_box(box: Box, concept: str) -> Box:
    r = normalize_box(Region(concept, *box))
    return (r.top_row, r.left_col, r.bottom_row, r.right_col)


def _whole_label(s: Session, inp: Input, cid: str, positive: bool) -> Annotation:
    """Give ``inp`` the whole-image label ``cid`` (replacing its opposite); the row, new or already there."""
    current = next((a for a in inp.annotations if a.top_row is None and a.concept_id == cid), None)
    if current is not None and bool(current.value) == positive:
        return current
    if current is not None:
        inp.annotations.remove(current)
    row = Annotation(app_id=inp.app_id, input_id=inp.id, concept_id=cid, value=positive)
    inp.annotations.append(row)
    return row


def _box_label(inp: Input, cid: str, box: Box) -> Annotation:
    row = Annotation(app_id=inp.app_id, input_id=inp.id, concept_id=cid, value=True, top_row=box[0],
                     left_col=box[1], bottom_row=box[2], right_col=box[3])
    inp.annotations.append(row)
    return row


def _positive(label: ConceptLabel) -> ConceptLabel:
    if not label.positive:
        raise InvalidInput(f"the concept {label.concept!r} of a box has value 0 (a negative): a box's concept "
                           "must be positive (value 1)")
    return label


def add_annotations(ctx: Context, app_id: str, items: Sequence[NewLabels]) -> list[dict[str, Any]]:
    """Add labels and boxes to existing inputs; the annotations made (a label the input already has is
    given as it is)."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        rows: list[Annotation] = []
        for item in items:
            if not item.concepts and not item.boxes:
                raise InvalidInput(f"an annotation of input {item.input_id!r} carries no concept and no box")
            inp = _input(s, app_id, item.input_id)
            for label in item.concepts:
                rows.append(_whole_label(s, inp, _concept_id(s, app_id, label), label.positive))
            for box, labels in item.boxes:
                if not labels:
                    raise InvalidInput(f"a box of input {item.input_id!r} has no concept")
                for label in labels:
                    cid = _concept_id(s, app_id, _positive(label))
                    rows.append(_box_label(inp, cid, _checked_box(box, label.concept)))
        s.flush()
        names = concept_names(s, app_id)
        return [annotation_dict(a, names) for a in dict.fromkeys(rows)]


def list_annotations(ctx: Context, app_id: str, input_ids: Sequence[str] | None = None,
                     ids: Sequence[str] | None = None, limit: int | None = None,
                     offset: int = 0) -> list[dict[str, Any]]:
    """The app's annotations in id order (of ``input_ids`` / with ``ids`` only, when given)."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        q = select(Annotation).where(Annotation.app_id == app_id)
        if input_ids:
            q = q.where(Annotation.input_id.in_(list(input_ids)))
        if ids:
            q = q.where(Annotation.id.in_(_numbers(ids)))
        q = q.order_by(Annotation.id).offset(offset)
        rows = s.scalars(q.limit(limit) if limit is not None else q).all()
        names = concept_names(s, app_id) if rows else {}
        return [annotation_dict(a, names) for a in rows]


def _numbers(ids: Sequence[str]) -> list[int]:
    """Annotation ids as numbers (an id that is not one names no annotation)."""
    return [int(i) for i in ids if str(i).isascii() and str(i).isdigit() and len(str(i)) < 19]


def _annotation(s: Session, app_id: str, annotation_id: str, input_id: str | None = None) -> Annotation:
    number = _numbers([annotation_id])
    row = s.get(Annotation, number[0]) if number else None
    if row is None or row.app_id != app_id or (input_id is not None and row.input_id != input_id):
        where = f"input {input_id!r} of app {app_id!r}" if input_id is not None else f"app {app_id!r}"
        raise NotFound(f"annotation {annotation_id!r} does not exist in {where}", "annotation")
    return row


def patch_annotations(ctx: Context, app_id: str, patches: Sequence[LabelPatch], action: str) -> list[dict[str, Any]]:
    """Change annotations: ``merge``/``overwrite`` set the concept (and value) and/or the box given
    (``overwrite`` without a box makes a box a whole-image label); ``remove`` deletes each annotation whose
    concept is among those given (any, when none is). The annotations that remain."""
    check_action(action)
    with ctx.store.session() as s:
        require_app(s, app_id)
        kept: list[Annotation] = []
        for patch in patches:
            row = _annotation(s, app_id, patch.id, patch.input_id)
            if action == "remove":
                cids = {_concept_id(s, app_id, lab, create=False) for lab in patch.concepts}
                if cids and row.concept_id not in cids:
                    kept.append(row)
                else:
                    s.delete(row)
                continue
            kept.append(_change(s, app_id, row, patch, overwrite=action == "overwrite"))
        s.flush()
        names = concept_names(s, app_id)
        return [annotation_dict(a, names) for a in dict.fromkeys(kept) if not inspect(a).was_deleted]


def _change(s: Session, app_id: str, row: Annotation, patch: LabelPatch, overwrite: bool) -> Annotation:
    if len(patch.concepts) > 1:
        raise InvalidInput(f"annotation {patch.id!r}: one annotation carries one concept ({len(patch.concepts)} given)")
    if patch.concepts:
        label = patch.concepts[0]
        row.concept_id, row.value = _concept_id(s, app_id, label), label.positive
    box = patch.box if patch.box is not None else (None if overwrite and patch.concepts else row.box)
    if box is not None:
        _positive(ConceptLabel(row.concept_id, positive=bool(row.value)))
        box = _checked_box(box, row.concept_id)
    row.top_row, row.left_col, row.bottom_row, row.right_col = box if box is not None else (None,) * 4
    if box is None:  # a whole-image label: one per concept and input
        s.flush()
        twins = s.scalars(select(Annotation).where(
            Annotation.app_id == app_id, Annotation.input_id == row.input_id, Annotation.concept_id == row.concept_id,
            Annotation.top_row.is_(None), Annotation.id != row.id))
        for twin in twins:
            s.delete(twin)
    return row


def delete_annotation(ctx: Context, app_id: str, input_id: str, annotation_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        s.delete(_annotation(s, app_id, annotation_id, input_id))
    return {"id": annotation_id, "deleted": True}


def delete_annotations(ctx: Context, app_id: str, ids: Sequence[str] = (), input_ids: Sequence[str] = ()) -> int:
    """Delete annotations: ``ids`` with their ``input_ids`` (pairs, or one input for all ids), ``ids`` alone,
    or every annotation of ``input_ids``. All of them, or none when one does not exist. How many went."""
    if not ids and not input_ids:
        raise InvalidInput("name the annotations to delete (ids) or their inputs (input_ids)")
    if ids and input_ids and len(input_ids) not in (1, len(ids)):
        raise InvalidInput(f"{len(ids)} annotation ids with {len(input_ids)} input ids: give one input id per "
                           "annotation id, or one for all")
    with ctx.store.session() as s:
        require_app(s, app_id)
        if not ids:
            for input_id in dict.fromkeys(input_ids):
                _input(s, app_id, input_id)
            return s.execute(delete(Annotation).where(Annotation.app_id == app_id,
                                                      Annotation.input_id.in_(list(input_ids)))).rowcount
        owners = list(input_ids) * len(ids) if len(input_ids) == 1 else list(input_ids) or [None] * len(ids)
        rows = {_annotation(s, app_id, i, owner).id: None for i, owner in zip(ids, owners)}
        s.execute(delete(Annotation).where(Annotation.app_id == app_id, Annotation.id.in_(list(rows))))
        return len(rows)


def patch_inputs(ctx: Context, app_id: str, patches: Sequence[InputPatch], action: str) -> list[str]:
    """Change inputs' whole-image labels and metadata: ``merge`` adds the labels (replacing a concept's
    opposite label) and merges the metadata into the stored one; ``overwrite`` replaces the whole-image labels
    (boxes stay) and the metadata with those given; ``remove`` removes the labels of the concepts given and the
    metadata keys given. What a patch does not name stays. The ids patched."""
    check_action(action)
    with ctx.store.session() as s:
        require_app(s, app_id)
        for patch in patches:
            inp = _input(s, app_id, patch.id)
            if patch.concepts:
                _patch_labels(s, app_id, inp, patch.concepts, action)
            if patch.metadata is not None:
                inp.metadata_json = _patch_metadata(inp.metadata_json or {}, patch.metadata, action) or None
    return [p.id for p in patches]


def _patch_labels(s: Session, app_id: str, inp: Input, labels: Sequence[ConceptLabel], action: str) -> None:
    if action == "remove":
        cids = {_concept_id(s, app_id, lab, create=False) for lab in labels}
        for a in [a for a in inp.annotations if a.top_row is None and a.concept_id in cids]:
            inp.annotations.remove(a)
        return
    given = {_concept_id(s, app_id, lab): lab.positive for lab in labels}
    if action == "overwrite":
        for a in [a for a in inp.annotations if a.top_row is None and a.concept_id not in given]:
            inp.annotations.remove(a)
    for cid, positive in given.items():
        _whole_label(s, inp, cid, positive)


def _patch_metadata(stored: dict[str, Any], given: dict[str, Any], action: str) -> dict[str, Any]:
    if action == "overwrite":
        return dict(given)
    out = dict(stored)
    for key, value in given.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        if action == "merge":
            out[key] = _patch_metadata(out[key], value, "merge") if nested else value
        elif nested and value:
            out[key] = _patch_metadata(out[key], value, "remove")
        else:
            out.pop(key, None)
    return out
