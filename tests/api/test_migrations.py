"""The schema comes only from Alembic: head matches the models, and head -> base -> head works (Postgres in CI)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from api.db import downgrade, get_engine, migrate
from api.models import Base
from tests.utils.service import fresh_postgres_database

TABLES = {"tenants", "api_keys", "datasets", "jobs", "job_events", "step_metrics", "selections", "checkpoints"}


def check_round_trip(url: str) -> None:
    migrate(url)
    engine = get_engine(url)
    with engine.connect() as connection:
        assert (
            compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata) == []
        )
    inspector = inspect(engine)
    assert TABLES <= set(inspector.get_table_names())
    indexes = {i["name"] for t in TABLES for i in inspector.get_indexes(t)}
    assert {
        "ix_jobs_tenant_created",
        "ix_jobs_status_heartbeat",
        "ix_job_events_job_id_id",
        "ix_selections_job_selected_step",
        "ix_selections_job_row",
        "ix_datasets_tenant_created",
    } <= indexes
    downgrade(url, "base")
    engine.dispose()
    assert set(inspect(create_engine(url)).get_table_names()) <= {"alembic_version"}
    migrate(url)
    assert TABLES <= set(inspect(get_engine(url)).get_table_names())


def test_postgres_upgrade_downgrade_upgrade():
    with fresh_postgres_database("uds_migrations") as url:
        check_round_trip(url)


def test_sqlite_upgrade_downgrade_upgrade(tmp_path):
    check_round_trip(f"sqlite:///{tmp_path / 'm.db'}")


def test_every_revision_has_a_downgrade():
    from alembic.script import ScriptDirectory

    from api.db import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revisions = list(scripts.walk_revisions())
    assert len(revisions) >= 1 and len(scripts.get_heads()) == 1
    for revision in revisions:
        assert callable(getattr(revision.module, "downgrade", None)), revision.revision


def test_alembic_cli_reads_the_url_from_settings(tmp_path, monkeypatch):
    """`alembic upgrade head` in the repo root (what the compose API runs) uses UDS_DATABASE_URL."""
    import subprocess
    import sys

    from tests.utils.service import REPO, child_env

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=child_env(UDS_DATABASE_URL=url),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert TABLES <= set(inspect(create_engine(url)).get_table_names())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_migrations_do_not_collide(backend, tmp_path):
    """The API and several workers all migrate at start."""
    import subprocess
    import sys

    from tests.utils.service import REPO, child_env

    def run_three(url: str) -> None:
        code = "from api.db import migrate; import sys; migrate(sys.argv[1])"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, url], cwd=REPO, env=child_env(), stderr=subprocess.PIPE, text=True
            )
            for _ in range(3)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert TABLES <= set(inspect(create_engine(url)).get_table_names())

    if backend == "sqlite":
        run_three(f"sqlite:///{tmp_path / 'c.db'}")
    else:
        with fresh_postgres_database("uds_concurrent") as url:
            run_three(url)
