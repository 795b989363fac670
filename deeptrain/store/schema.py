"""ORM tables. Changes here need a new migration under ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class App(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Concept(Base):
    __tablename__ = "concepts"

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Input(Base):
    __tablename__ = "inputs"
    __table_args__ = (UniqueConstraint("app_id", "sha256", name="uq_inputs_app_sha256"),)

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    split: Mapped[str | None] = mapped_column(String(16), nullable=True)  # train, validation, test
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    annotations: Mapped[list["Annotation"]] = relationship(
        back_populates="input", cascade="all, delete-orphan", passive_deletes=True, order_by="Annotation.id"
    )


class Annotation(Base):
    """One label of an input: a positive/negative concept, or a box region with a concept.

    Boxes use Clarifai's normalized convention: top_row, left_col, bottom_row, right_col in [0, 1].
    """

    __tablename__ = "annotations"
    __table_args__ = (
        ForeignKeyConstraint(
            ["app_id", "input_id"], ["inputs.app_id", "inputs.id"], ondelete="CASCADE", name="fk_annotations_input"
        ),
        ForeignKeyConstraint(
            ["app_id", "concept_id"], ["concepts.app_id", "concepts.id"], ondelete="CASCADE",
            name="fk_annotations_concept"
        ),
        Index("ix_annotations_input", "app_id", "input_id"),
        Index("ix_annotations_concept", "app_id", "concept_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(String(64))
    input_id: Mapped[str] = mapped_column(String(128))
    concept_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[bool] = mapped_column(Boolean, default=True)
    top_row: Mapped[float | None] = mapped_column(Float, nullable=True)
    left_col: Mapped[float | None] = mapped_column(Float, nullable=True)
    bottom_row: Mapped[float | None] = mapped_column(Float, nullable=True)
    right_col: Mapped[float | None] = mapped_column(Float, nullable=True)

    input: Mapped[Input] = relationship(back_populates="annotations")

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        if self.top_row is None:
            return None
        return (self.top_row, self.left_col, self.bottom_row, self.right_col)  # type: ignore[return-value]


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    storage_prefix: Mapped[str] = mapped_column(String(512))
    num_inputs: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Model(Base):
    """A named trainable thing: task + template + default params + concept list."""

    __tablename__ = "models"

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(32))
    template: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    concepts: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    default_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """One training run's result: params used, dataset version, status, metrics, artifacts."""

    __tablename__ = "model_versions"
    __table_args__ = (
        ForeignKeyConstraint(["app_id", "model_id"], ["models.app_id", "models.id"], ondelete="CASCADE",
                             name="fk_model_versions_model"),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_version_id: Mapped[str] = mapped_column(String(64))
    concepts: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    artifact_prefix: Mapped[str] = mapped_column(String(512))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tune_run: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiKey(Base):
    """An API key: only its SHA-256 is kept (the key is shown once, at creation). An app key (``kind``
    ``app``) acts in its app with its scopes; a user key (``kind`` ``user``, no app) in every app."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    app_id: Mapped[str | None] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(8), default="app", server_default="app")
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Workflow(Base):
    """A named chain of model steps of an app (e.g. detect -> classify each region).

    ``steps`` is a list of ``{"kind": "detect"|"classify"|"embed", "model_id", "version_id"}``;
    ``version_id`` null means the model's default version (else its newest trained one) at run time.
    """

    __tablename__ = "workflows"

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TuneRun(Base):
    """A hyperparameter search over a model: its space, scheduler, status and best trial."""

    __tablename__ = "tune_runs"
    __table_args__ = (
        ForeignKeyConstraint(["app_id", "model_id"], ["models.app_id", "models.id"], ondelete="CASCADE",
                             name="fk_tune_runs_model"),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    metric: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(8))
    space: Mapped[dict[str, Any]] = mapped_column(JSON)  # name -> "kind:args"
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # fixed for every trial
    num_trials: Mapped[int] = mapped_column(Integer)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    num_workers: Mapped[int] = mapped_column(Integer)
    scheduler: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_version_id: Mapped[str] = mapped_column(String(64))
    best_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    artifact_prefix: Mapped[str] = mapped_column(String(512))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TuneTrial(Base):
    """One Tune trial of a run and the model version it trains; ``runs`` counts its training starts."""

    __tablename__ = "tune_trials"
    __table_args__ = (
        ForeignKeyConstraint(["app_id", "model_id", "run_id"], ["tune_runs.app_id", "tune_runs.model_id", "tune_runs.id"],
                             ondelete="CASCADE", name="fk_tune_trials_run"),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(String(64))
    runs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BaseWeights(Base):
    """Weights of a backbone registered once for the cluster (``deeptrain weights add``): the base tensors
    under the model's names, as safetensors at ``storage_key`` (content-addressed by ``sha256``)."""

    __tablename__ = "base_weights"

    architecture: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # "imagenet": what init_from=imagenet uses
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(Text)  # where it came from (a file name, a hub repository, a cache)
    num_tensors: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
