"""Service settings: every ``DEEPTRAIN_*`` variable is a field of ``Settings``, read in one place.

``Settings.from_env()`` reads the process environment; ``Settings.from_env(env=mapping)``
reads only ``mapping`` (a test, a demo, a worker handed its driver's variables).
``Settings.as_env()`` is the only way settings reach another process (Ray workers, Serve
replicas, Ray Jobs): the receiving side calls ``Settings.from_env()`` and gets the same values
(all but ``LOCAL_ONLY``: the remote mode's server URL and key stay in the process that set them).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from deeptrain.errors import InvalidInput

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # e.g. 8000 x 8000; larger is treated as a decompression bomb
DEFAULT_MAX_LABEL_FILE_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_CPU_PER_WORKER = 0.5
PREFIX = "DEEPTRAIN_"
# settings of this process only: a Ray worker, Serve replica or Ray Job started from here never goes remote
LOCAL_ONLY = frozenset({"api_url", "api_key"})

_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("deeptrain_settings_env", default=None)


class _MappingEnv(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        self._mapping = {k: v for k, v in env.items() if isinstance(v, str)}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._mapping.items()}


class Settings(BaseSettings):
    """Where deeptrain keeps its data, its limits, and how it uses a Ray cluster.

    Each field ``name`` is the variable ``DEEPTRAIN_NAME`` (``storage_uri`` is ``DEEPTRAIN_STORAGE``).
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore", populate_by_name=True)

    home: Path = Field(Path(".deeptrain"), description="local working directory")
    storage_uri: str | None = Field(None, validation_alias="DEEPTRAIN_STORAGE", description=(
        "root of object storage: file:///abs/path or s3://bucket/prefix (default: HOME/storage)"))
    database_url: str | None = Field(None, description="SQLAlchemy URL of the metadata store "
                                                       "(default: SQLite in HOME)")
    max_image_bytes: int = Field(DEFAULT_MAX_IMAGE_BYTES, ge=1, description="one image's size limit")
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1, description="one image's pixel limit")
    import_workers: int = Field(4, ge=1, description=(
        "threads that read, decode and hash images in an import (images cheaper to check than a hand-off to a "
        "thread, e.g. thumbnails, are checked on the importing thread)"))
    import_uploads: int = Field(16, ge=1, description=(
        "threads that write an import's new images to storage (I/O: on S3 each is one PUT in flight)"))
    max_label_file_bytes: int = Field(DEFAULT_MAX_LABEL_FILE_BYTES, ge=1,
                                      description="a label file read whole (COCO JSON) may be at most this big")
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=1, description="an HTTP body's limit (413)")
    request_timeout_s: float = Field(60.0, gt=0, description=(
        "an HTTP prediction, search or workflow answers 504 after this; the replica drops that "
        "request's images it has not started"))
    max_workflow_crops: int = Field(256, ge=0, description="detected regions one workflow request may crop")
    cpu_per_worker: float = Field(DEFAULT_CPU_PER_WORKER, ge=0, description="CPUs a Ray Train worker reserves")
    max_failures: int = Field(2, ge=0, description="worker-group restarts Ray Train allows a run")
    keep_checkpoints: int = Field(0, ge=0, description=(
        "Ray Train checkpoints a trained version keeps (0: none; its weights are what serving, export and "
        "evaluation read); a run keeps its newest max(1, this) while it trains, and a cancelled or failed "
        "version keeps its newest for --resume"))
    gc_grace_s: float = Field(3600.0, ge=0, description=(
        "`deeptrain gc` leaves objects younger than this (an import or snapshot in progress writes objects "
        "before the rows that refer to them)"))
    data_cache_fraction: float = Field(0.2, ge=0, le=1, description=(
        "a run keeps its preprocessed splits in Ray's object store when they take at most this fraction "
        "of it (0: always stream)"))
    torch_threads: int | None = Field(None, ge=1, description=(
        "torch threads per training worker (default: the node's cores shared by its workers)"))
    search_approx_min: int = Field(50_000, ge=1, description="from this many vectors the search index is "
                                                             "approximate (IVF), below it exact")
    search_recall_target: float = Field(0.95, gt=0, le=1, description=(
        "Recall@10 an approximate search index must reach on held-out queries, measured while it is built: "
        "it searches the fewest inverted lists (nprobe) that do; a change re-trains the index at the next build"))
    serve_max_models: int = Field(4, ge=1, description="model versions one prediction replica keeps loaded")
    serve_max_batch_pixels: int = Field(32_768, ge=1, description=(
        "a prediction replica's forward pass takes at most this many pixels (images x image_size^2; at least one "
        "image, at most 32): on CPU, batches past the caches are slower per image (a GPU wants more); measured, "
        "ResNext at 128 px on 2 cores served 51-54 images/s two a forward, 45-49 four a forward"))
    serve_cache_ttl_s: float = Field(2.0, ge=0, le=60, description=(
        "how long a serving replica reuses an API key's check and a model's resolved version and concepts: a "
        "revoked key is refused, and a newly promoted version served, at most this many seconds later (0: no reuse)"))
    cluster_connect_timeout_s: float = Field(10.0, gt=0, description="how long to wait for a Ray cluster")
    job_id: str | None = Field(None, description="the Ray Job this process runs as (set by `deeptrain submit`)")
    # experiment tracking (deeptrain.tracking): never fails a training, a problem is a warning on the version
    mlflow_tracking_uri: str | None = Field(None, description=(
        "an MLflow tracking URI (http://HOST:5000, sqlite:///ABS/mlflow.db …): every trained, cancelled or failed "
        "version is logged there as a run (params, metrics per epoch, report and plots); unset: no MLflow"))
    tensorboard: bool = Field(True, description="write TensorBoard event files of a version's epochs under its "
                                                "artifacts (tensorboard/)")
    # remote mode: the SDK and CLI talk to a deeptrain server over HTTP instead of the store and storage
    api_url: str | None = Field(None, description=(
        "a deeptrain server's base URL (e.g. http://HOST:8000): `Client()` and the CLI then work through its "
        "HTTP API (never passed on to another process)"))
    api_key: str | None = Field(None, repr=False, description="the API key sent to DEEPTRAIN_API_URL "
                                                             "(`Authorization: Key …`)")
    # sample data and `make demo`
    fashion_mnist_dir: Path = Field(Path("/usr/share/datasets/fashion-mnist"), validation_alias="DEEPTRAIN_FASHION_MNIST",
                                    description="Fashion-MNIST's files (Debian's dataset-fashion-mnist)")
    demo_home: Path = Field(Path(".demo"), description="where `make demo` keeps its data")
    demo_per_class: int = Field(300, ge=1, description="`make demo`: training images per class")
    demo_epochs: int = Field(3, ge=1, description="`make demo`: training epochs")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        env = _ENV.get()
        return (init_settings, env_settings if env is None else _MappingEnv(settings_cls, env))

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        return Path(home).expanduser().resolve()

    @model_validator(mode="after")
    def _defaults_in_home(self) -> "Settings":
        if not self.storage_uri:
            self.__dict__["storage_uri"] = (self.home / "storage").as_uri()
        if not self.database_url:
            self.__dict__["database_url"] = f"sqlite:///{self.home / 'deeptrain.db'}"
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Settings from ``env`` (default: the process environment), then ``overrides`` by field name."""
        token = _ENV.set(dict(os.environ) if env is None else env)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = [f"{cls.variable(str(e['loc'][0])) if e.get('loc') else 'settings'}={e.get('input')!r}: "
                        f"{e['msg']}" for e in exc.errors(include_url=False)]
            raise InvalidInput(f"invalid setting {'; '.join(problems)}") from None
        finally:
            _ENV.reset(token)

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of a field."""
        if name not in cls.model_fields:  # already a variable (an alias)
            return name
        alias = cls.model_fields[name].validation_alias
        return alias if isinstance(alias, str) else PREFIX + name.upper()

    def as_env(self) -> dict[str, str]:
        """The ``DEEPTRAIN_*`` variables that reproduce these settings in another process."""
        return {self.variable(name): str(value) for name, value in self.model_dump().items()
                if value is not None and name not in LOCAL_ONLY}

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` (validated)."""
        kept = {name: getattr(self, name) for name in LOCAL_ONLY if getattr(self, name) is not None}
        return type(self).from_env(env=self.as_env(), **{**kept, **changes})
