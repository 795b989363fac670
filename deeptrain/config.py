"""Service settings, read once from the environment into an explicit value object."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # e.g. 8000 x 8000; larger is treated as a decompression bomb


@dataclass(frozen=True)
class Settings:
    """Where deeptrain keeps its data, and its limits.

    home: local working directory (default ``./.deeptrain``).
    storage_uri: root of object storage: ``file:///abs/path`` or ``s3://bucket/prefix``.
    database_url: SQLAlchemy URL of the metadata store.
    """

    home: Path
    storage_uri: str
    database_url: str
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    import_workers: int = 4

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
        }
