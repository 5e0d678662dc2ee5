"""Engines, sessions and schema migration.

The schema is created only by Alembic (migrations/), never by `create_all`, so every deployment has the
same tables in the same revision. `migrate()` is what `uds serve`, the compose API and the worker call at start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_engines: dict[tuple[str, str], Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class PoolSize:
    size: int = 10
    overflow: int = 10
    timeout: float = 30.0


def get_engine(url: str, pool: str = "default", size: PoolSize | None = None) -> Engine:
    """One engine (and connection pool) per URL and pool name per process.

    The API serves requests from its own pool ("api"); everything else in the process (the embedded worker's
    training writer, heartbeats, the recovery sweep) uses "default". So no number of busy or slow requests can
    starve a running job's metric writes of a connection, nor the job starve the requests. `size` applies
    when the pool is created (the first call wins).
    """
    with _lock:
        engine = _engines.get((url, pool))
        if engine is None:
            engine = _make_engine(url, size or PoolSize())
            _engines[(url, pool)] = engine
        return engine


def _make_engine(url: str, size: PoolSize) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The API's thread pool and the embedded worker thread share the file.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=size.size,
            max_overflow=size.overflow,
            pool_timeout=size.timeout,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL lets the API read while the worker writes; busy_timeout waits for the writer instead of failing.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=size.size, max_overflow=size.overflow, pool_timeout=size.timeout
    )


def session_factory(url: str, pool: str = "default", size: PoolSize | None = None) -> sessionmaker[Session]:
    # expire_on_commit=False: routes return ORM objects after commit and serialise them without reloading.
    return sessionmaker(bind=get_engine(url, pool, size), expire_on_commit=False)


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the schema to `revision`; once per URL per process (cheap to call at every start)."""
    with _lock:
        if revision == "head" and url in _migrated:
            return
    # Alembic announces each of its plugins at INFO when imported ("setup plugin ..."): seven lines opening every
    # serve log that say nothing about our schema. The migrations' own lines stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from alembic import command

    with _sqlite_file_lock(url):
        command.upgrade(alembic_config(url), revision)
    if revision == "head":
        with _lock:
            _migrated.add(url)


@contextlib.contextmanager
def _sqlite_file_lock(url: str):
    """SQLite has no advisory locks (Postgres uses one, in migrations/env.py): processes starting together on
    one file would race on creating alembic_version, so they take turns on a lock file next to the database."""
    path = url.split("///", 1)[-1] if url.startswith("sqlite") else ""
    if not path or path == ":memory:":
        yield
        return
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path + ".migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
    with _lock:
        _migrated.discard(url)


def dispose_all(close: bool = True) -> None:
    """Drop every pool. In a freshly forked child (Celery prefork) call with close=False: the parent's
    connections must be forgotten, not closed, or the parent's sessions break."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        if close:
            _engines.clear()
