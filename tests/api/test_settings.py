"""Settings come from UDS_* environment variables only; the defaults are the embedded mode."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.settings import Settings


def test_defaults_are_embedded(monkeypatch, tmp_path):
    for name in ("UDS_DATABASE_URL", "UDS_BROKER_URL", "UDS_DATA_DIR", "UDS_REQUIRE_AUTH", "UDS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings()
    assert settings.data_dir == tmp_path / "uds"
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'uds' / 'uds.db'}"
    assert settings.embedded and settings.broker_url is None
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.auth_required is False and settings.models == ["uds-tiny"]


def test_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UDS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("UDS_DATABASE_URL", "postgresql+psycopg://u@db/uds")
    monkeypatch.setenv("UDS_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("UDS_ALLOWED_MODELS", "Qwen/Qwen2.5-0.5B, uds-tiny ,/models/x")
    monkeypatch.setenv("UDS_REQUIRE_AUTH", "false")
    monkeypatch.setenv("UDS_BOOTSTRAP_API_KEY", "uds-abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("UDS_MAX_UPLOAD_BYTES", "1000")
    settings = Settings()
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@db/uds" and not settings.embedded
    assert settings.models == ["uds-tiny", "Qwen/Qwen2.5-0.5B", "/models/x"]
    assert settings.require_auth is False and settings.max_upload_bytes == 1000
    assert settings.bootstrap_api_key.get_secret_value() == "uds-abcdefghijklmnopqrstuvwxyz"
    assert "uds-abc" not in repr(settings)  # secrets stay out of logs
    monkeypatch.setenv("UDS_ALLOWED_MODELS", '["a", "b"]')
    assert Settings().models == ["uds-tiny", "a", "b"]
    monkeypatch.setenv("UDS_BROKER_URL", "")
    assert Settings().embedded


@pytest.mark.parametrize("host, required", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                            ("127.0.0.5", False), ("0.0.0.0", True), ("192.168.1.4", True)])
def test_auth_auto_depends_on_the_bind(host, required):
    assert Settings(host=host, require_auth="auto").auth_required is required
    assert Settings(host=host, require_auth=True).auth_required is True


def test_invalid_values():
    with pytest.raises(ValidationError):
        Settings(heartbeat_seconds=60, stale_after_seconds=90)
    with pytest.raises(ValidationError):
        Settings(max_upload_bytes=0)
