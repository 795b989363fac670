"""What still refers to a record: asked inside the session that is about to delete it.

Only store queries, so the services that delete (models, concepts) need not import the
services that refer to them (workflows, model versions); those import the former.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from deeptrain.store import ModelVersion, Workflow


def workflows_using_model(s: Session, app_id: str, model_id: str) -> list[str]:
    """Ids of the app's workflows with a step that runs ``model_id``."""
    rows = s.scalars(select(Workflow).where(Workflow.app_id == app_id)).all()
    return [w.id for w in rows if any(step["model_id"] == model_id for step in w.steps)]


def versions_using_concept(s: Session, app_id: str, concept_id: str) -> list[str]:
    """``model/version`` of the app's model versions trained (or to be trained) on ``concept_id``."""
    rows = s.execute(select(ModelVersion.model_id, ModelVersion.id, ModelVersion.concepts)
                     .where(ModelVersion.app_id == app_id)).all()
    return [f"{m}/{v}" for m, v, concepts in rows if concept_id in (concepts or [])]


def workflows_pinning_version(s: Session, app_id: str, model_id: str, version_id: str) -> list[str]:
    """Ids of the app's workflows with a step pinned to this version of ``model_id``."""
    rows = s.scalars(select(Workflow).where(Workflow.app_id == app_id)).all()
    return [w.id for w in rows
            if any(step["model_id"] == model_id and step.get("version_id") == version_id for step in w.steps)]
