"""The jobs list in headless Chromium: a finished job is deleted after a confirmation (an unfinished one offers no
Delete), and the metadata filter (key=value) narrows the list through GET /api/v1/jobs?metadata[key]=value."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.test_dashboard import _start_server, browser, page, wait_js  # noqa: F401 - fixtures used by name
from tests.utils.dialogs import delete_after_confirmation
from tests.utils.factories import chat_rows, jsonl

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # No embedded worker: jobs stay queued until the test cancels them, so every state here is the test's own.
    server = _start_server(tmp_path_factory, "dashboard-job-delete", UDS_EMBEDDED_WORKER="false")
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")


def new_job(server, name: str, metadata: dict | None = None, cancel: bool = True) -> dict:
    dataset = httpx.post(
        f"{server.url}/api/v1/datasets", files={"file": ("train.jsonl", jsonl(chat_rows(12)))}, timeout=30
    ).json()
    response = httpx.post(
        f"{server.url}/api/v1/jobs",
        json={"dataset_id": dataset["id"], "model": "uds-tiny", "name": name, "metadata": metadata},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    job = response.json()
    if cancel:
        cancelled = httpx.post(f"{server.url}/api/v1/jobs/{job['id']}/cancel", timeout=30).json()
        assert cancelled["status"] == "cancelled", cancelled
    return job


def test_a_finished_job_is_deleted_after_confirmation(server, page):
    done = new_job(server, "to delete")
    queued = new_job(server, "still queued", cancel=False)
    page.goto(f"{server.url}/#/")
    button = page.locator(f"[data-delete-job='{done['id']}']")
    button.wait_for()
    assert page.locator(f"[data-job-id='{queued['id']}']").count() == 1
    assert page.locator(f"[data-delete-job='{queued['id']}']").count() == 0  # unfinished: cancel it first
    asked = delete_after_confirmation(
        page,
        button,
        f"{server.url}/api/v1/jobs/{done['id']}",
        f"!document.querySelector(\"[data-job-id='{done['id']}']\")",
    )
    assert "to delete" in asked and "cannot be undone" in asked
    assert page.locator(f"[data-job-id='{queued['id']}']").count() == 1
    httpx.post(f"{server.url}/api/v1/jobs/{queued['id']}/cancel", timeout=30)


def test_the_metadata_filter_narrows_the_list(server, page):
    a = new_job(server, "team a", {"team": "a", "run": 1})
    b = new_job(server, "team b", {"team": "b"})
    page.goto(f"{server.url}/#/")
    page.locator(f"[data-job-id='{b['id']}']").wait_for()
    page.fill("#metadata-filter", "team=a")
    page.press("#metadata-filter", "Enter")
    # The filtered page is rendered (a's row) and b is not on it; the view re-renders from "Loading jobs" first.
    wait_js(
        page,
        f"document.querySelector(\"[data-job-id='{a['id']}']\") && "
        f"!document.querySelector(\"[data-job-id='{b['id']}']\")",
    )
    assert page.locator("tr[data-job-id]").evaluate_all("rows => rows.map((r) => r.dataset.jobId)") == [a["id"]]
    assert "metadata=team%3Da" in page.evaluate("location.hash")
    page.reload()  # the filter lives in the address: a reload or a shared link keeps it
    page.locator(f"[data-job-id='{a['id']}']").wait_for()
    assert page.locator("tr[data-job-id]").count() == 1 and page.input_value("#metadata-filter") == "team=a"

    page.fill("#metadata-filter", "team=nobody")
    page.press("#metadata-filter", "Enter")
    wait_js(page, "document.querySelector('.jobs-body .empty-title')?.textContent.includes('team=nobody')")
    page.fill("#metadata-filter", "no equals sign")
    page.press("#metadata-filter", "Enter")
    wait_js(page, "document.querySelector('#metadata-filter-error').textContent.includes('key=value')")
    page.fill("#metadata-filter", "")
    page.press("#metadata-filter", "Enter")
    page.locator(f"[data-job-id='{b['id']}']").wait_for()
