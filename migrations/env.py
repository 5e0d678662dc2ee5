"""Alembic environment: online migrations only, URL from the Alembic config or else from api.settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool, text

from api.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name)

# An arbitrary constant: the API and the workers all migrate at start, and on Postgres the advisory lock
# makes the second one wait and then find the schema already at head instead of racing on the DDL.
MIGRATION_LOCK_ID = 0x5544535F4D4947  # "UDS_MIG"


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from api.settings import get_settings

    return get_settings().sqlalchemy_url


def run_migrations_online() -> None:
    url = database_url()
    if url.startswith("sqlite"):
        from api.db import get_engine

        connectable = get_engine(url)  # creates the folder and sets the pragmas
    else:
        connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
