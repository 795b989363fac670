"""Service settings, read once from the environment into an explicit value object."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # e.g. 8000 x 8000; larger is treated as a decompression bomb
DEFAULT_MAX_LABEL_FILE_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Where deeptrain keeps its data, and its limits.

    home: local working directory (default ``./.deeptrain``).
    storage_uri: root of object storage: ``file:///abs/path`` or ``s3://bucket/prefix``.
    database_url: SQLAlchemy URL of the metadata store.
    max_image_bytes, max_image_pixels: one image's limits (upload, import, prediction).
    max_label_file_bytes: a label file that is read whole (COCO JSON) may be at most this big.
    import_workers: threads that read, decode and store images during an import.
    max_request_bytes: an HTTP request body's limit (413 above it).
    request_timeout_s: an HTTP prediction, search or workflow answers 504 after this; the
        replica drops that request's images it has not started (no work past the deadline).
    max_workflow_crops: a workflow request may crop at most this many detected regions.
    """

    home: Path
    storage_uri: str
    database_url: str
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    import_workers: int = 4
    max_label_file_bytes: int = DEFAULT_MAX_LABEL_FILE_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    request_timeout_s: float = 60.0
    max_workflow_crops: int = 256

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = os.environ if env is None else env
        home = Path(env.get("DEEPTRAIN_HOME", ".deeptrain")).expanduser().resolve()
        settings = cls(
            home=home,
            storage_uri=env.get("DEEPTRAIN_STORAGE") or (home / "storage").as_uri(),
            database_url=env.get("DEEPTRAIN_DATABASE_URL") or f"sqlite:///{home / 'deeptrain.db'}",
            max_image_bytes=int(env.get("DEEPTRAIN_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)),
            max_image_pixels=int(env.get("DEEPTRAIN_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)),
            import_workers=int(env.get("DEEPTRAIN_IMPORT_WORKERS", 4)),
            max_label_file_bytes=int(env.get("DEEPTRAIN_MAX_LABEL_FILE_BYTES", DEFAULT_MAX_LABEL_FILE_BYTES)),
            max_request_bytes=int(env.get("DEEPTRAIN_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES)),
            request_timeout_s=float(env.get("DEEPTRAIN_REQUEST_TIMEOUT_S", 60)),
            max_workflow_crops=int(env.get("DEEPTRAIN_MAX_WORKFLOW_CROPS", 256)),
        )
        return replace(settings, **overrides) if overrides else settings

    def as_env(self) -> dict[str, str]:
        """The DEEPTRAIN_* variables that reproduce these settings in another process."""
        return {
            "DEEPTRAIN_HOME": str(self.home),
            "DEEPTRAIN_STORAGE": self.storage_uri,
            "DEEPTRAIN_DATABASE_URL": self.database_url,
            "DEEPTRAIN_MAX_IMAGE_BYTES": str(self.max_image_bytes),
            "DEEPTRAIN_MAX_IMAGE_PIXELS": str(self.max_image_pixels),
            "DEEPTRAIN_IMPORT_WORKERS": str(self.import_workers),
            "DEEPTRAIN_MAX_LABEL_FILE_BYTES": str(self.max_label_file_bytes),
            "DEEPTRAIN_MAX_REQUEST_BYTES": str(self.max_request_bytes),
            "DEEPTRAIN_REQUEST_TIMEOUT_S": repr(self.request_timeout_s),
            "DEEPTRAIN_MAX_WORKFLOW_CROPS": str(self.max_workflow_crops),
        }
