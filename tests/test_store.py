"""The metadata store: migrations and engine settings on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from deeptrain.store import open_store
from deeptrain.store.db import current_revision, head_revision


def test_schema_is_created_and_versioned(settings):
    store = open_store(settings.database_url)
    assert current_revision(store.engine) == head_revision() == "0008_base_weights"
    tables = set(inspect(store.engine).get_table_names())
    assert {"apps", "concepts", "inputs", "annotations", "dataset_versions", "workflows", "tune_runs", "tune_trials",
            "alembic_version"} <= tables
    # opening again is a no-op migration
    assert open_store(settings.database_url) is store


def test_sqlite_uses_wal_and_foreign_keys(local_settings):
    store = open_store(local_settings.database_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_an_old_database_is_migrated_in_place(local_settings):
    """A database at revision 0001 (the first release) is upgraded on open, data kept."""
    from alembic import command

    from deeptrain.store.db import Store, _alembic_config, make_engine

    engine = make_engine(local_settings.database_url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO apps (id, name, created_at) VALUES ('old', 'old', '2026-01-01')"))
    assert current_revision(engine) == "0001"
    store = Store(local_settings.database_url)
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM apps")).scalars().all() == ["old"]
        assert "model_versions" in inspect(conn).get_table_names()


def test_a_database_migrated_by_a_newer_release_is_refused_by_name(local_settings):
    """A schema revision this release does not know (a newer deeptrain ran here) is refused, untouched."""
    import pytest

    from deeptrain.errors import StorageError
    from deeptrain.store.db import Store, make_engine

    Store(local_settings.database_url).dispose()
    engine = make_engine(local_settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    with pytest.raises(StorageError, match=r"'0099_from_the_future'.*newer deeptrain") as err:
        Store(local_settings.database_url)
    assert head_revision() in str(err.value)
    assert current_revision(engine) == "0099_from_the_future"


def test_a_postgresql_url_without_a_driver_uses_psycopg_3():
    """postgresql:// and postgres:// open with psycopg 3 (installed with deeptrain), not SQLAlchemy's psycopg2."""
    from deeptrain.store.db import database_url

    for url in ("postgresql://u:p@db:5432/deeptrain", "postgres://u:p@db/deeptrain"):
        assert database_url(url).drivername == "postgresql+psycopg"
    assert database_url("postgresql+psycopg://u@db/x").drivername == "postgresql+psycopg"
    assert database_url("sqlite:///x.db").drivername == "sqlite"


def test_a_driver_that_is_not_installed_is_named_with_the_fix():
    import pytest

    from deeptrain.errors import InvalidInput
    from deeptrain.store.db import make_engine

    with pytest.raises(InvalidInput, match=r"'postgresql\+pg8000'.*not installed.*postgresql://"):
        make_engine("postgresql+pg8000://u:p@127.0.0.1:1/x")
