"""Engine setup and schema versioning.

The schema is versioned with Alembic: ``open_store`` upgrades the database to the
newest revision on first use, so a later release migrates an existing database in
place (``alembic_version`` records where it stands).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from deeptrain.errors import InvalidInput, StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
CONNECT_BACKOFF_S = (0.5, 1.0, 2.0)  # waits between the tries of a server database's first connection


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or ""


def database_url(url: str) -> URL:
    """The URL SQLAlchemy opens: ``postgresql://`` (and ``postgres://``) without a driver uses psycopg 3,
    the driver deeptrain installs (SQLAlchemy's own default would be psycopg2)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"invalid DEEPTRAIN_DATABASE_URL {url!r}: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, foreign keys and a busy timeout for concurrent writers; a server database
    gets SQLAlchemy's pre-ping (a connection the server dropped is replaced, not failed on) and a recycle age."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_recycle=1800, connect_args=_connect_args(parsed))
    except ModuleNotFoundError as exc:
        raise InvalidInput(f"DEEPTRAIN_DATABASE_URL names the driver {parsed.drivername!r}, whose module {exc.name!r} "
                           "is not installed: use postgresql://… (psycopg 3, installed with deeptrain)") from None


def _connect_args(parsed: URL) -> dict[str, object]:
    return {"connect_timeout": 10} if parsed.drivername.startswith("postgresql") else {}


def _known(revision: str) -> bool:
    return revision in {script.revision for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (no-op when already there).

    A database stamped with a revision this release does not know was migrated by a newer deeptrain:
    refuse it by name rather than let Alembic fail on an unknown revision (nothing is changed).
    """
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is not None and not _known(current):
        raise StorageError(
            f"the metadata database {make_url(engine.url).render_as_string()} is at schema revision "
            f"{current!r}, which this deeptrain does not know (it knows up to {head!r}): it was migrated "
            "by a newer deeptrain; run that version, or point DEEPTRAIN_DATABASE_URL at another database")
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """An engine plus a session factory over a migrated database."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        server = self.engine.dialect.name != "sqlite"
        for delay in (*CONNECT_BACKOFF_S, None) if server else (None,):
            try:
                upgrade(self.engine)
                break
            except OperationalError as exc:  # a server still starting (a pod before its database) gets a few tries
                if delay is None:
                    raise StorageError(f"cannot open the metadata database {make_url(url).render_as_string()}: "
                                       f"{exc.orig}") from None
                time.sleep(delay)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self._sessions() as session:
            with session.begin():
                yield session

    def ping(self) -> None:
        """Raise when the database does not answer (readiness checks)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


_STORES: dict[str, Store] = {}
_LOCK = threading.Lock()


def open_store(url: str) -> Store:
    """The process-wide store for a URL, created and migrated on first use."""
    with _LOCK:
        store = _STORES.get(url)
        if store is None:
            store = _STORES[url] = Store(url)
        return store
