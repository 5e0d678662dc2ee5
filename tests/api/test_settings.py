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
    assert settings.auth_required is False and settings.models == ["uds-tiny", "smollm2-135m-instruct"]


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
    assert settings.models == ["uds-tiny", "smollm2-135m-instruct", "Qwen/Qwen2.5-0.5B", "/models/x"]
    assert settings.require_auth is False and settings.max_upload_bytes == 1000
    assert settings.bootstrap_api_key.get_secret_value() == "uds-abcdefghijklmnopqrstuvwxyz"
    assert "uds-abc" not in repr(settings)  # secrets stay out of logs
    monkeypatch.setenv("UDS_ALLOWED_MODELS", '["a", "b"]')
    assert Settings().models == ["uds-tiny", "smollm2-135m-instruct", "a", "b"]
    monkeypatch.setenv("UDS_BROKER_URL", "")
    assert Settings().embedded


@pytest.mark.parametrize(
    "host, required",
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("127.0.0.5", False),
        ("0.0.0.0", True),
        ("192.168.1.4", True),
    ],
)
def test_auth_auto_depends_on_the_bind(host, required):
    assert Settings(host=host, require_auth="auto").auth_required is required
    assert Settings(host=host, require_auth=True).auth_required is True


def test_invalid_values():
    with pytest.raises(ValidationError):
        Settings(heartbeat_seconds=60, stale_after_seconds=90)
    with pytest.raises(ValidationError):
        Settings(max_upload_bytes=0)


# The .env.example placeholder and short keys must not guard a server other hosts can reach.
EXAMPLE_KEY = "uds-change-me-to-a-long-random-string"


@pytest.mark.parametrize(
    "key, reason",
    [
        (EXAMPLE_KEY, "placeholder"),
        ("uds-CHANGEME-" + "x" * 40, "placeholder"),
        ("uds-short-but-twenty-c", "22 characters"),
    ],
)
def test_a_placeholder_or_short_bootstrap_key_is_refused_outside_loopback(key, reason, tmp_path):
    from api.main import prepare
    from api.settings import bootstrap_key_problem

    settings = Settings(host="0.0.0.0", bootstrap_api_key=key, data_dir=tmp_path)
    problem = bootstrap_key_problem(settings)
    assert problem and reason in problem and "UDS_BOOTSTRAP_API_KEY" in problem and key not in problem
    with pytest.raises(RuntimeError, match="UDS_BOOTSTRAP_API_KEY"):
        prepare(settings)  # `uvicorn api.main:app` refuses too, before writing anything
    assert not (tmp_path / "uds.db").exists()


def test_the_env_example_key_is_the_refused_placeholder():
    from tests.api.test_compose import dotenv_example

    assert dotenv_example()["UDS_BOOTSTRAP_API_KEY"] == EXAMPLE_KEY


def test_a_real_key_or_a_loopback_bind_is_accepted():
    from api.auth import generate_key
    from api.settings import bootstrap_key_problem

    assert bootstrap_key_problem(Settings(host="0.0.0.0", bootstrap_api_key=generate_key())) is None
    assert bootstrap_key_problem(Settings(host="0.0.0.0", bootstrap_api_key=None)) is None
    assert bootstrap_key_problem(Settings(host="127.0.0.1", bootstrap_api_key=EXAMPLE_KEY)) is None


def test_uds_serve_refuses_the_placeholder_with_one_line(tmp_path, caplog):
    from cli.service import serve

    settings = Settings(bootstrap_api_key=EXAMPLE_KEY, data_dir=tmp_path)
    assert serve(host="0.0.0.0", port=1, settings=settings) == 2
    assert "placeholder" in caplog.text and not (tmp_path / "uds.db").exists()
