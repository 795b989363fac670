"""The metadata store: SQLAlchemy 2 tables, engine setup and Alembic migrations."""

from deeptrain.store.db import Store, open_store
from deeptrain.store.schema import (
    Annotation,
    ApiKey,
    App,
    Base,
    BaseWeights,
    Concept,
    DatasetVersion,
    Input,
    Model,
    ModelVersion,
    TuneRun,
    TuneTrial,
    Workflow,
)

__all__ = ["Store", "open_store", "Base", "BaseWeights", "ApiKey", "App", "Concept", "Input", "Annotation", "DatasetVersion", "Model",
           "ModelVersion", "TuneRun", "TuneTrial", "Workflow"]
