"""Concepts: label names of an app (slug id + display name)."""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from deeptrain.errors import Conflict, NotFound
from deeptrain.ids import check_id, slugify
from deeptrain.services import usage
from deeptrain.services.context import Context, require_app
from deeptrain.store import Annotation, Concept


def _concept_dict(c: Concept, **extra: Any) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, **extra}


def create_concept(ctx: Context, app_id: str, concept_id: str, name: str | None = None) -> dict[str, Any]:
    check_id(concept_id, "concept")
    with ctx.store.session() as s:
        require_app(s, app_id)
        if s.get(Concept, (app_id, concept_id)) is not None:
            raise Conflict(f"concept {concept_id!r} already exists in app {app_id!r}")
        concept = Concept(app_id=app_id, id=concept_id, name=name or concept_id)
        s.add(concept)
        return _concept_dict(concept)


def list_concepts(ctx: Context, app_id: str) -> list[dict[str, Any]]:
    """Concepts with their number of positive labels and of boxes."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        rows = s.execute(
            select(Annotation.concept_id, Annotation.top_row.is_not(None), func.count())
            .where(Annotation.app_id == app_id, Annotation.value.is_(True))
            .group_by(Annotation.concept_id, Annotation.top_row.is_not(None))
        ).all()
        labels: dict[str, int] = {}
        boxes: dict[str, int] = {}
        for concept_id, is_box, n in rows:
            (boxes if is_box else labels)[concept_id] = n
        concepts = s.scalars(select(Concept).where(Concept.app_id == app_id).order_by(Concept.id))
        return [_concept_dict(c, num_labels=labels.get(c.id, 0), num_boxes=boxes.get(c.id, 0)) for c in concepts]


def delete_concept(ctx: Context, app_id: str, concept_id: str, force: bool = False) -> dict[str, Any]:
    """Delete a concept. If inputs are labelled with it, refuse unless ``force`` (which drops those labels)."""
    with ctx.store.session() as s:
        require_app(s, app_id)
        concept = s.get(Concept, (app_id, concept_id))
        if concept is None:
            raise NotFound(f"concept {concept_id!r} does not exist in app {app_id!r}", "concept")
        versions = usage.versions_using_concept(s, app_id, concept_id)
        if versions:
            raise Conflict(
                f"concept {concept_id!r} is used by model version(s) {', '.join(versions)}; delete those first"
            )
        used = s.scalar(
            select(func.count()).where(Annotation.app_id == app_id, Annotation.concept_id == concept_id)
        )
        if used and not force:
            raise Conflict(
                f"concept {concept_id!r} is used by {used} annotation(s); pass force to delete them with it"
            )
        s.execute(delete(Annotation).where(Annotation.app_id == app_id, Annotation.concept_id == concept_id))
        s.delete(concept)
        return {**_concept_dict(concept), "deleted": True, "annotations_deleted": used}


class ConceptResolver:
    """Maps display names from imported files to concept ids, creating concepts on first sight: a name that
    is the id of one of the app's concepts is that concept, else the id is ``slugify(name)``."""

    def __init__(self, app_id: str):
        self.app_id = app_id
        self._ids: dict[str, str] = {}

    def reset(self) -> None:
        """Forget cached ids (after a rollback removed concepts created in it)."""
        self._ids.clear()

    def peek(self, session: Session, name: str) -> str:
        """The id ``ids`` gives ``name``, without creating a concept."""
        cid = self._ids.get(name)
        if cid is None:
            known = len(name) <= 64 and session.get(Concept, (self.app_id, name)) is not None
            cid = name if known else slugify(name)
        return cid

    def ids(self, session: Session, names: Iterable[str]) -> list[str]:
        out = []
        for name in names:
            cid = self._ids.get(name)
            if cid is None:
                cid = self.peek(session, name)
                if session.get(Concept, (self.app_id, cid)) is None:
                    session.add(Concept(app_id=self.app_id, id=cid, name=name))
                    session.flush()
                self._ids[name] = cid
            out.append(cid)
        return out
