"""Small things of the dashboard in headless Chromium: the budget helper says nothing misleading while the field is in error,
datasets are deleted from the dashboard after a confirmation, and a job's metadata shows on its page."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.test_dashboard import _start_server, browser, page, wait_js  # noqa: F401 - fixtures used by name
from tests.utils.dialogs import delete_after_confirmation
from tests.utils.factories import chat_rows, jsonl

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = _start_server(tmp_path_factory, "dashboard-small")
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")


def upload_dataset(server, name: str = "train.jsonl") -> dict:
    response = httpx.post(f"{server.url}/api/v1/datasets", files={"file": (name, jsonl(chat_rows(12)))}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def helper_text(page) -> str:
    return page.locator("#budget-help").inner_text()


def test_the_budget_helper_shows_no_k_while_the_field_is_in_error(server, page):
    upload_dataset(server)
    page.goto(f"{server.url}/#/new")
    page.locator("#f-budget").wait_for()
    page.fill("#f-candidate_batch_size", "32")
    page.fill("#f-budget", "150")
    wait_js(page, "document.querySelector('#budget-help').textContent.includes('between 0.1 and 100')")
    assert "k =" not in helper_text(page) and "100.0" not in helper_text(page)
    for bad in ("", "0", "-5"):
        page.fill("#f-budget", bad)
        assert "k =" not in helper_text(page), bad
    page.fill("#f-budget", "25")
    wait_js(page, "document.querySelector('#budget-help').textContent.includes('k = 8 of every 32')")
    page.fill("#f-candidate_batch_size", "0")
    wait_js(page, "document.querySelector('#budget-help').textContent.includes('whole number of candidates')")
    assert "k =" not in helper_text(page)


def test_a_dataset_is_deleted_after_confirmation(server, page):
    dataset = upload_dataset(server, "to-delete.jsonl")
    page.goto(f"{server.url}/#/datasets")
    button = page.locator(f"[data-delete='{dataset['id']}']")
    button.wait_for()
    asked = delete_after_confirmation(
        page,
        button,
        f"{server.url}/api/v1/datasets/{dataset['id']}",
        f"!document.querySelector(\"[data-delete='{dataset['id']}']\")",
    )
    assert "to-delete.jsonl" in asked and "cannot be undone" in asked


def test_a_jobs_metadata_shows_on_its_page(server, page):
    dataset = upload_dataset(server)
    response = httpx.post(
        f"{server.url}/api/v1/jobs",
        json={
            "dataset_id": dataset["id"],
            "model": "uds-tiny",
            "budget": 0.5,
            "max_steps": 1,
            "metadata": {"team": "nlp", "experiment": "e-7"},
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    page.goto(f"{server.url}/#/jobs/{response.json()['id']}")
    page.locator("#job-metadata").wait_for()
    assert page.locator("#job-metadata li").all_inner_texts() == ["team = nlp", "experiment = e-7"]
