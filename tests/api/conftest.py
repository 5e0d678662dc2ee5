"""API tests run twice: on SQLite and on the real Postgres, each a fresh database migrated by Alembic."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        broker_url=None,
        require_auth=True,
        min_examples=2,
        max_upload_bytes=64 * 1024,
        bootstrap_api_key=None,
    )


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def key(database_url) -> str:
    from tests.utils.factories import new_tenant_key

    return new_tenant_key(database_url)[1]
