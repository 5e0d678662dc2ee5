"""The job page's export menu in headless Chromium against a live `uds serve`: GGUF q8_0 asked from the menu is built
by the embedded worker and offered for download with its sha256, the bytes the API serves."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from tests.e2e.test_dashboard import browser, page, wait_js  # noqa: F401 - fixtures used by name
from tests.utils.factories import TINY_JOB, chat_rows, jsonl
from tests.utils.gguf_models import build_gguf_ready_model
from tests.utils.service import Server, child_env, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`uds serve` with a GGUF-ready Llama registered as acme-smol (uds-tiny's tokenizer has no merges)."""
    from uds.registry import save_registration

    data = tmp_path_factory.mktemp("dashboard-exports")
    save_registration(data / "data" / "models", "acme-smol", build_gguf_ready_model(data / "smol", "llama"), "folder")
    env = child_env(UDS_DATA_DIR=str(data / "data"), UDS_METRICS_FLUSH_SECONDS="0.5")
    server = Server(free_port(), env, data / "server.log")
    server.wait_ready()
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")


@pytest.fixture(scope="module")
def job(server):
    api = server.url + "/api/v1"
    dataset = httpx.post(f"{api}/datasets", files={"file": ("t.jsonl", jsonl(chat_rows(16)))}).json()["id"]
    body = {"dataset_id": dataset, "model": "acme-smol", **TINY_JOB, "max_steps": 2, "checkpoint_every": 2}
    job = httpx.post(f"{api}/jobs", json=body, timeout=30).json()
    deadline = time.monotonic() + 180
    while (job := httpx.get(f"{api}/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "succeeded", job
    return job


def test_a_gguf_export_is_asked_from_the_menu_and_downloaded_with_its_sha256(server, job, page):
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    page.click("#export-menu > summary")
    page.click("[data-export='q8_0']")
    row = "#export-list .export-row[data-export='q8_0']"
    wait_js(page, f"document.querySelector(\"{row}\")?.dataset.status === 'succeeded'", timeout=180)
    text = page.locator(row).inner_text()
    exports = httpx.get(f"{server.url}/api/v1/jobs/{job['id']}/exports").json()["data"]
    (export,) = [e for e in exports if e["quantization"] == "q8_0"]
    assert "GGUF q8_0" in text and f"sha256 {export['sha256']}" in text
    href = page.locator(f"{row} a").get_attribute("href")
    served = httpx.get(server.url + href, timeout=60)
    assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == export["sha256"]
