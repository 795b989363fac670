"""The metadata store: migrations and engine settings on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from deeptrain.store import open_store
from deeptrain.store.db import current_revision, head_revision


def test_schema_is_created_and_versioned(settings):
    store = open_store(settings.database_url)
    assert current_revision(store.engine) == head_revision() == "0001"
    tables = set(inspect(store.engine).get_table_names())
    assert {"apps", "concepts", "inputs", "annotations", "dataset_versions", "alembic_version"} <= tables
    # opening again is a no-op migration
    assert open_store(settings.database_url) is store


def test_sqlite_uses_wal_and_foreign_keys(local_settings):
    store = open_store(local_settings.database_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
