"""An in-process HTTP server for the OpenAI-client tests: the real app on a real socket (uvicorn in a thread),
since the `openai` client speaks HTTP (httpx2) and cannot be handed Starlette's TestClient."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import pytest
import uvicorn

from tests.utils.service import free_port


@contextlib.contextmanager
def serve_in_thread(app, timeout: float = 30):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@dataclass
class OpenAIServer:
    url: str
    settings: object
    database_url: str

    def client(self, key: str | None = None, **kwargs):
        """An `openai` client for a new tenant (or `key`), without retries so a failure shows at once."""
        import openai

        from tests.utils.factories import new_tenant_key

        key = key or new_tenant_key(self.database_url)[1]
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def openai_server(database_url, tmp_path_factory):
    """The app (keys required, no worker: jobs stay queued) on a real socket, per database (tests/api/conftest.py)."""
    from api.main import create_app
    from api.settings import Settings

    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("openai") / "data",
        broker_url=None,
        require_auth=True,
        min_examples=2,
        max_upload_bytes=64 * 1024,
        bootstrap_api_key=None,
    )
    with serve_in_thread(create_app(settings)) as url:
        yield OpenAIServer(url, settings, database_url)


@pytest.fixture
def oai(openai_server):
    """An `openai` client of a fresh tenant."""
    return openai_server.client()
