"""Compare methods in headless Chromium against a live `uds serve` (embedded worker, uds-tiny on CPU): a comparison
is started from the form (a bad label field is refused next to its field first), runs to the end while the page
polls, and its page shows the verdict sentences, the report tables, the label shares and a grid of runs linking to
their jobs (a job links back); the Markdown report downloads; Delete asks first and removes it from the list.
Screenshots at 390 and 1280 px go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.e2e.test_dashboard import NARROW, WIDE, _start_server, browser, page, shot, wait_js  # noqa: F401 (fixtures)
from tests.utils.dialogs import delete_after_confirmation
from tests.utils.factories import chat_rows, jsonl

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KINDS = ("fact", "pattern")
# TINY_JOB (tests/utils/factories.py) with 2 steps, less what a comparison sets per run (budget) and what the form
# asks for by name (learning rate, max_seq_len).
ADVANCED = (
    '{"candidate_batch_size": 8, "max_steps": 2, "micro_batch_size": 2, "lora_r": 4, "lora_alpha": 8, '
    '"checkpoint_every": 2, "warmup_ratio": 0.0}'
)
FINISHED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = _start_server(tmp_path_factory, "dashboard-comparisons")
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")


@pytest.fixture(scope="module")
def datasets(server):
    """A training file whose rows carry a "kind" label, and a held-out file."""
    train = [{**row, "kind": KINDS[i % 2]} for i, row in enumerate(chat_rows(16))]
    held_out = chat_rows(26)[16:]
    ids = {}
    for name, rows in (("kinds-train.jsonl", train), ("held-out.jsonl", held_out)):
        response = httpx.post(f"{server.url}/api/v1/datasets", files={"file": (name, jsonl(rows))}, timeout=30)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    return ids["kinds-train.jsonl"], ids["held-out.jsonl"]


def jobs_to_create(page) -> str:
    return page.locator("#c-count").get_attribute("data-jobs")


def both_widths(page, name: str) -> None:
    """Screenshots at 390 and 1280 px; at 390 nothing may stick out sideways (the page scrolls down only)."""
    shot(page, name, NARROW)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} is {overflow}px wider than a 390px screen"
    shot(page, name, WIDE)


def submit(page) -> None:
    page.click("#submit-comparison")
    wait_js(page, "location.hash.startsWith('#/comparisons/cmp-') || !document.querySelector('.form-error').hidden", 60)


def test_a_comparison_from_the_form_to_its_verdict_and_delete(server, datasets, page):
    started = time.monotonic()
    api = httpx.Client(base_url=server.url + "/api/v1", timeout=30)
    train_id, held_out_id = datasets

    # No comparison yet: the list says so and the form is open.
    page.goto(f"{server.url}/#/comparisons")
    page.get_by_text("No comparisons yet.").wait_for()
    assert page.locator("nav.mainnav a[aria-current]").inner_text() == "Compare methods"
    assert page.is_visible("#comparison-form")

    # The form: defaults (all four methods, 12.5% and 25%, 3 seeds, full) make 27 jobs, within the default cap of
    # 32 unfinished jobs; the count follows edits and says before submitting when it is over a limit.
    assert jobs_to_create(page) == "27"
    assert "over" not in page.locator("#c-count").inner_text()
    page.fill("#c-seeds", "4")
    assert "over this server's limit of 32 unfinished jobs" in page.locator("#c-count").inner_text()  # 36
    page.fill("#c-seeds", "10")
    assert "over this server's limit of 60 jobs per comparison" in page.locator("#c-count").inner_text()  # 90
    page.fill("#c-seeds", "5")
    page.select_option("#c-dataset_id", train_id)
    page.select_option("#c-eval_dataset_id", held_out_id)
    assert page.locator("#c-model option").all_inner_texts() == ["smollm2-135m-instruct", "uds-tiny"]
    page.select_option("#c-model", "uds-tiny")  # the real model is the default; these jobs train the tiny one
    page.fill("#c-name", "kinds check")
    page.uncheck("#c-method-max_loss")
    page.uncheck("#c-method-max_grad")
    assert jobs_to_create(page) == "25"  # 5 x (2 x 2 + 1)
    page.fill("#c-budgets", "25%")
    assert page.locator("#c-budgets-chips li").all_inner_texts() == ["25 %"]
    page.fill("#c-seeds", "2")
    assert jobs_to_create(page) == "6"  # 2 x (2 x 1 + 1)
    page.uncheck("#c-include_full")
    assert jobs_to_create(page) == "4"
    page.check("#c-include_full")
    assert "6 jobs" in page.locator("#c-count").inner_text()
    page.fill("#c-learning_rate", "0.001")
    page.fill("#c-max_seq_len", "64")
    page.click("#c-advanced summary")
    page.fill("#c-settings", ADVANCED)

    # A label key no row carries: the server's 400 is shown next to the label field, and nothing is created.
    page.fill("#c-label_field", "topic")
    submit(page)
    error = page.locator("#field-label_field .field-error")
    assert error.is_visible() and "topic" in error.inner_text(), error.inner_text()
    assert page.get_attribute("#c-label_field", "aria-invalid") == "true"
    assert api.get("/comparisons").json()["data"] == []
    both_widths(page, "comparisons-form")

    page.fill("#c-label_field", "kind")
    submit(page)
    comparison_id = re.search(r"cmp-[0-9a-f]+", page.url).group(0)
    page.locator("#runs-grid").wait_for()
    assert page.locator(".view").get_attribute("data-live") in ("polling", "stopped")

    # It runs to the end while the page polls.
    deadline = time.monotonic() + 150
    while (comparison := api.get(f"/comparisons/{comparison_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, comparison
        time.sleep(0.5)
    assert comparison["status"] == "succeeded", comparison
    assert comparison["settings"]["learning_rate"] == 0.001 and comparison["settings"]["max_steps"] == 2
    assert comparison["label_field"] == "kind" and comparison["methods"] == ["uds", "random"]
    page.wait_for_selector(".view[data-live=stopped]", timeout=30_000)
    page.wait_for_selector("#report[data-complete=true]")
    report = api.get(f"/comparisons/{comparison_id}/report").json()
    assert report["complete"]

    # The verdict first, in the server's words, each sentence once.
    assert page.locator("#verdict-title").inner_text() == "Does selection pay on this data?"
    assert report["sentences"] and page.locator("#verdicts li").all_inner_texts() == report["sentences"]
    assert page.is_visible("#verdict-summary") and page.locator("#report-partial").count() == 0
    head = page.locator(".comparison-head").inner_text()
    assert "kinds check" in head and "succeeded" in head and "6 runs" in head
    assert page.locator("#delete-comparison").is_visible() and page.locator("#cancel-comparison").count() == 0

    # The tables: a row per method and budget (full, uds, random), one per paired difference, the label shares.
    assert page.locator("#report-table tbody tr").count() == len(report["rows"]) == 3
    first = page.locator("#report-table tbody tr").first
    assert first.get_attribute("data-method") == "full" and "±" in page.locator("#report-table").inner_text()
    # uds vs random, uds vs full and random vs full, for each metric.
    assert page.locator("#differences-table tbody tr").count() == len(report["differences"]) >= 3
    assert page.locator("#differences-table svg.interval").count() == len(report["differences"])
    assert page.locator("#labels-table tbody tr").count() == 1 + len(report["labels"]["rows"]) == 3
    labels_header = page.locator("#labels-table thead").inner_text().lower()
    assert all(kind in labels_header for kind in KINDS)
    assert page.locator("#report-notes li").count() == len(report["notes"])

    # The grid: one link per run to its job; the job links back.
    cells = page.locator("#runs-grid a.run-cell")
    assert cells.count() == 6
    linked = {cells.nth(i).get_attribute("href") for i in range(6)}
    assert linked == {f"#/jobs/{run['job_id']}" for run in comparison["runs"]}
    assert page.locator("#runs-grid a.run-cell[data-status=succeeded]").count() == 6
    curves = page.locator("#open-curves").get_attribute("href")
    assert set(curves.split("ids=", 1)[1].split(",")) == {run["job_id"] for run in comparison["runs"]}
    with page.expect_download() as download:
        page.click("#download-report")
    assert download.value.suggested_filename == f"{comparison_id}-report.md"
    assert report["sentences"][0].split(":")[0] in open(download.value.path(), encoding="utf-8").read()
    both_widths(page, "comparison-report")

    cells.first.click()
    page.locator("#job-comparison a").wait_for()
    page.click("#job-comparison a")
    page.locator("#runs-grid").wait_for()
    assert page.url.endswith(f"#/comparisons/{comparison_id}")

    # The list shows it, finished; Delete asks first, then the comparison and its jobs are gone.
    page.goto(f"{server.url}/#/comparisons")
    row = page.locator(f"[data-comparison-id='{comparison_id}']")
    row.wait_for()
    assert "6 / 6 runs" in row.inner_text() and "kinds-train.jsonl" in row.inner_text()
    both_widths(page, "comparisons-list")
    page.click(f"[data-comparison-id='{comparison_id}'] a.job-link")
    button = page.locator("#delete-comparison")
    button.wait_for()
    asked = delete_after_confirmation(
        page,
        button,
        f"{server.url}/api/v1/comparisons/{comparison_id}",
        f"location.hash === '#/comparisons' && !!document.querySelector('.comparisons-body[aria-busy=false]')"
        f" && !document.querySelector(\"[data-comparison-id='{comparison_id}']\")",
    )
    assert "kinds check" in asked and "6 jobs" in asked and "cannot be undone" in asked
    assert all(api.get(f"/jobs/{run['job_id']}").status_code == 404 for run in comparison["runs"])
    print(f"comparison test took {time.monotonic() - started:.1f}s")


def test_cancel_asks_first_then_stops_the_unfinished_runs(server, datasets, page):
    train_id, held_out_id = datasets
    body = {
        "dataset_id": train_id,
        "eval_dataset_id": held_out_id,
        "model": "uds-tiny",
        "methods": ["random"],
        "budgets": [0.5],
        "seeds": 2,
        "include_full": False,
        # Long enough to be cancelled part-way (the first run) or before it starts (the second).
        "settings": {"max_steps": 1000, "max_seq_len": 64, "candidate_batch_size": 8, "micro_batch_size": 2},
    }
    response = httpx.post(f"{server.url}/api/v1/comparisons", json=body, timeout=30)
    assert response.status_code == 201, response.text
    comparison_id = response.json()["id"]
    page.goto(f"{server.url}/#/comparisons/{comparison_id}")
    page.locator("#cancel-comparison").click()
    assert "Stop every unfinished run?" in page.locator(".comparison-head .confirm-text").inner_text()
    page.get_by_role("button", name="Keep running").click()  # asked, declined: nothing stops
    page.locator("#cancel-comparison").click()
    page.locator("#confirm-cancel").click()
    page.wait_for_selector(".comparison-head h1 .badge[data-status=cancelled]", timeout=60_000)
    page.wait_for_selector(".view[data-live=stopped]")
    comparison = httpx.get(f"{server.url}/api/v1/comparisons/{comparison_id}", timeout=30).json()
    assert comparison["status"] == "cancelled" and comparison["counts"]["cancelled"] >= 1, comparison
    assert page.locator("#runs-grid a.run-cell[data-status=cancelled]").count() == comparison["counts"]["cancelled"]
    assert page.locator("#delete-comparison").is_visible() and page.locator("#cancel-comparison").count() == 0
    assert httpx.delete(f"{server.url}/api/v1/comparisons/{comparison_id}", timeout=30).status_code == 200
