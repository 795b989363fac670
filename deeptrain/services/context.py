"""What every service call needs: settings, object storage and the metadata store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from deeptrain.config import Settings
from deeptrain.errors import NotFound
from deeptrain.ids import check_id
from deeptrain.storage import Storage
from deeptrain.store import App, Store, open_store


@dataclass
class Context:
    settings: Settings
    storage: Storage
    store: Store

    @classmethod
    def from_settings(cls, settings: Settings) -> "Context":
        return cls(settings, Storage(settings.storage_uri), open_store(settings.database_url))

    @classmethod
    def from_env(cls) -> "Context":
        return cls.from_settings(Settings.from_env())


def require_app(session: Session, app_id: str) -> App:
    app = session.get(App, check_id(app_id, "app"))
    if app is None:
        raise NotFound(f"app {app_id!r} does not exist (create it with `deeptrain apps create {app_id}`)", "app")
    return app


def app_prefix(app_id: str) -> str:
    return f"apps/{app_id}"


def search_prefix(app_id: str) -> str:
    """Where the app's search indexes live (the layout: ``search/index_files.py``)."""
    return f"{app_prefix(app_id)}/search"


def search_version_prefix(app_id: str, model_id: str, version_id: str) -> str:
    """The search index builds of one embedding version."""
    return f"{search_prefix(app_id)}/{model_id}/{version_id}"


def search_pointer_key(app_id: str) -> str:
    """The object naming the app's search index (which version, which generation)."""
    return f"{search_prefix(app_id)}/index.json"
