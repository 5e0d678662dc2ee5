"""The web dashboard in a real browser: headless Debian Chromium, driven by Playwright, against a live `uds serve`.

One server (embedded mode: SQLite, in-process worker, uds-tiny on CPU) serves the whole module. The main test goes
through the dashboard the way a user does: upload, submit from the form, watch the charts fill while the job runs,
inspect what it trained on, download the adapter, start a second job like it with another method, compare the two,
and cancel a running job. Screenshots at 1280 and 390 px go to test-artifacts/screenshots/.

A missing Chromium is a failure, not a skip: CI must install it (scripts/test.sh does, with apt).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.utils.factories import chat_rows, jsonl
from tests.utils.service import REPO, Server, child_env, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("UDS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = REPO / "test-artifacts" / "screenshots"
WIDE, NARROW = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
# The first job is long enough (tens of steps at 0.1-0.8 s each on a 2-core CPU) that the 2 s polling sees it
# part-way; the second only has to finish.
STEPS, SECOND_STEPS = 48, 16
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        pytest.fail(f"playwright is not installed ({exc}); install the dev extra", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install chromium) or set "
            "UDS_CHROMIUM; browser tests fail rather than skip without it",
            pytrace=False,
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _start_server(tmp_path_factory, name: str, **env) -> Server:
    data = tmp_path_factory.mktemp(name)
    server = Server(
        free_port(),
        child_env(UDS_DATA_DIR=str(data / "data"), UDS_METRICS_FLUSH_SECONDS="0.5", **env),
        data / "server.log",
    )
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = _start_server(tmp_path_factory, "dashboard")
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")  # shown by pytest when a test failed


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport=WIDE, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)  # a 2-core machine shared with training jobs is slow at times
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    # What the page looked like at the end, pass or fail: the first thing to look at when a step timed out.
    with contextlib.suppress(Exception):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"last-{request.node.name}.png"), full_page=True)
    context.close()
    # 4xx answers the page asked for on purpose (the bad upload, the wrong key) are logged by Chromium as
    # "Failed to load resource"; anything else means a script error.
    unexpected = [e for e in errors if "Failed to load resource" not in e]
    assert not unexpected, f"errors in the page: {unexpected}"


def shot(page, name: str, viewport: dict | None = None, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    if viewport:
        page.set_viewport_size(viewport)
        page.wait_for_timeout(300)  # charts resize on a ResizeObserver callback
    if full_page:
        page.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar is drawn mid-page
    width = page.viewport_size["width"]
    page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=full_page)


def both_widths(page, name: str) -> None:
    shot(page, name, NARROW)
    shot(page, name, WIDE)


def status_of(page) -> str:
    return page.locator(".job-head h1 .badge").get_attribute("data-status")


def wait_status(page, wanted: tuple[str, ...], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = status_of(page)
        if status in wanted:
            return status
        page.wait_for_timeout(200)
    raise AssertionError(f"job page still shows {status_of(page)!r} after {timeout}s, wanted {wanted}")


def upload_through_form(page, tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    page.locator("#f-file").set_input_files(str(path))


def wait_js(page, expression: str, timeout: float = 30) -> None:
    """Polls a JS expression from here. (Playwright's wait_for_function polls with eval() inside the page, which
    the dashboard's Content-Security-Policy forbids, as it should.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout}s: {expression}")
        page.wait_for_timeout(100)


def submit_job(page) -> str:
    """Clicks "Start job" and returns the new job's id from the page it opens (or fails with the form's error)."""
    page.click("#submit-job")
    wait_js(page, "location.hash.startsWith('#/jobs/ftjob-') || !document.querySelector('.form-error')?.hidden", 60)
    if not page.url.split("#", 1)[-1].startswith("/jobs/"):
        raise AssertionError(f"the form did not start the job: {page.locator('.form-error').inner_text()}")
    return re.search(r"ftjob-[0-9a-f]+", page.url).group(0)


def test_submit_watch_inspect_download_compare_cancel(server, page, tmp_path):
    api = httpx.Client(base_url=server.url, timeout=30)

    # Empty state, then the form.
    page.goto(server.url + "/")
    page.get_by_text("No jobs yet — start one.").wait_for()
    both_widths(page, "01-jobs-empty")
    page.get_by_role("link", name="Start a job").click()
    page.locator("#f-file").wait_for()

    # Upload a good dataset: it is stored, described and selected.
    upload_through_form(page, tmp_path, "facts.jsonl", jsonl(chat_rows(64)))
    page.locator("#upload-ok").wait_for()
    assert "64 examples" in page.locator("#upload-ok").inner_text()
    dataset_id = page.locator("#f-dataset_id").input_value()
    assert dataset_id.startswith("file-")
    page.locator(".dataset-preview li").first.wait_for()

    # The model comes from the allow-list, the built-in real model first and chosen; this test trains uds-tiny.
    assert page.locator("#f-model option").all_inner_texts() == ["smollm2-135m-instruct", "uds-tiny"]
    assert page.locator("#f-model").input_value() == "smollm2-135m-instruct"
    page.select_option("#f-model", "uds-tiny")
    # The main settings show their defaults.
    assert "default: 8" in page.locator("#field-candidate_batch_size").inner_text()
    assert "selection group" in page.locator("#field-candidate_batch_size").inner_text().lower()
    assert page.locator("#f-alpha").input_value() == "paper" and page.locator("#f-group_by_length").is_checked()
    # The paper's recipe fills the form with the official script's settings; none restores the defaults.
    page.select_option("#f-recipe", "paper")
    assert (
        page.locator("#f-candidate_batch_size").input_value() == "4" and page.locator("#f-budget").input_value() == "25"
    )
    assert page.locator("#budget-help").inner_text().startswith("Trains on k = 1 of every 4")
    page.select_option("#f-recipe", "")
    assert page.locator("#f-candidate_batch_size").input_value() == "8"
    page.fill("#f-name", "uds-e2e")
    page.select_option("#f-method", "uds")
    page.fill("#f-budget", "25")
    for field, value in {
        "candidate_batch_size": "8",
        "max_steps": str(STEPS),
        "max_seq_len": "128",
        "micro_batch_size": "2",
        "lora_r": "4",
        "lora_alpha": "8",
        "learning_rate": "0.001",
    }.items():
        page.fill(f"#f-{field}", value)
    assert page.locator("#budget-help").inner_text().startswith("Trains on k = 2 of every 8")
    # 64 rows are 8 groups of 8: at least 4 steps an epoch, so 2 groups a step.
    assert "2 groups a step: 4 picks per optimizer step" in page.locator("#budget-help").inner_text()
    assert f"≈ {STEPS} steps" in page.locator("#estimate").inner_text()
    both_widths(page, "02-new-job-form")

    # Submit: the job page opens and its charts fill in while it runs.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    job_id = submit_job(page)
    loss_chart = page.locator("#chart-loss")
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        status = status_of(page)
        points = int(loss_chart.get_attribute("data-points"))
        if not seen or seen[-1] != (status, points):
            seen.append((status, points))
            if (
                status == "running"
                and 0 < points < STEPS
                and not any(s == "running" and 0 < p < STEPS for s, p in seen[:-1])
            ):
                shot(page, "03-job-running")  # the first part-finished view
        if status in TERMINAL:
            break
        page.wait_for_timeout(100)
    assert status_of(page) == "succeeded", f"job ended {status_of(page)}; seen {seen}"
    partial = [p for s, p in seen if s == "running" and 0 < p < STEPS]
    assert partial, f"the loss chart never showed a part-finished run: {seen}"
    wait_js(page, f"document.querySelector('#chart-loss').dataset.points === '{STEPS}'")
    page.wait_for_selector(".view[data-live=stopped]")
    # Every chart has every step, and the selection statistics are drawn for a uds job.
    for chart in ("loss", "lr", "utility", "diversity", "score", "data", "time", "grad", "alpha", "length"):
        assert page.locator(f"#chart-{chart}").get_attribute("data-points") == str(STEPS), chart
    # The length diagnostic: the job's within-group correlation and how long its picks are against the candidates.
    figure = api.get(f"/api/v1/jobs/{job_id}/length-bias").json()
    assert figure["steps"] == STEPS and figure["groups"] == 2 * STEPS
    length_card = page.locator("#card-length").inner_text()
    assert "ρ" in length_card and re.search(r"selected examples are (\d+\.\d %) (longer|shorter)|as long", length_card)
    assert "paper" in page.locator("#card-alpha").inner_text()
    assert "75.0 %" in page.locator("#card-saved").inner_text()
    assert "scoring" in page.locator("#chart-time .split").inner_text()
    metrics_requests = sum("/metrics" in u for u in requests)
    assert metrics_requests >= 2, "the job page did not poll the metrics"
    assert any("after_step=" in u for u in requests), "metrics were not polled incrementally"
    stopped_at = time.monotonic()
    both_widths(page, "04-job-succeeded")

    # Details: the resolved settings and the checkpoints.
    page.get_by_role("tab", name="Details").click()
    page.locator("#panel-details table.kv").first.wait_for()
    settings = page.locator("#panel-details table.kv").first.inner_text()
    assert "candidate_batch_size" in settings and "lora_targets" in settings
    page.locator("#checkpoints-table tbody tr").first.wait_for()  # at least the final checkpoint
    assert str(STEPS) in page.locator("#checkpoints-table tbody tr").first.inner_text()

    # Events: the run's story, newest first.
    page.get_by_role("tab", name="Events").click()
    events = page.locator("ol.events li")
    events.first.wait_for()
    assert events.count() >= 3
    assert (
        "Succeeded" in page.locator("ol.events").inner_text() or "succeeded" in page.locator("ol.events").inner_text()
    )

    # What it trained on: selected rows with previews and scores, paginated; skipped; most picked; a full row.
    page.get_by_role("tab", name="Events").press("ArrowLeft")  # keyboard: the tab before Events
    assert page.get_by_role("tab", name="What it trained on").get_attribute("aria-selected") == "true"
    table = page.locator("table.selections")
    table.wait_for()
    rows = table.locator("tbody tr")
    assert rows.count() == 20
    assert "Tell me one fact" in rows.first.inner_text()
    assert page.locator("table.selections thead").inner_text().upper().count("UTILITY") == 1
    page.get_by_role("button", name="Next →").click()
    page.get_by_text("21–40").wait_for()
    page.get_by_role("button", name="← Previous").click()
    page.get_by_text("1–20").wait_for()
    shot(page, "05-trained-on")
    page.get_by_role("radio", name="Skipped").click()
    page.locator("table.selections[data-view=skipped] tbody tr").first.wait_for()
    page.get_by_role("radio", name="Most picked").click()
    page.locator("table.selections[data-view=most] tbody tr").first.wait_for()
    assert "distinct rows drawn" in page.locator(".pager").inner_text()
    page.locator("table.selections[data-view=most] tbody tr").first.locator("button.link").click()
    page.locator("#row-dialog .msg.role-assistant").first.wait_for()
    shot(page, "06-row-dialog", NARROW, full_page=False)
    page.locator("#row-dialog").get_by_role("button", name="Close").click()
    page.set_viewport_size(WIDE)
    page.get_by_role("radio", name="Least picked").click()
    page.locator("table.selections[data-view=least] tbody tr").first.wait_for()
    # Polling stopped with the job: no metrics request since (more than one poll interval has passed).
    page.wait_for_timeout(max(0, 2500 - (time.monotonic() - stopped_at) * 1000))
    assert sum("/metrics" in u for u in requests) == metrics_requests, "the page kept polling a finished job"

    # Download the adapter: a tar.gz of the PEFT folder, byte-identical to what the API reports.
    job = api.get(f"/api/v1/jobs/{job_id}").json()
    with page.expect_download() as info:
        page.click("#download-adapter")
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    assert download.suggested_filename.endswith(".tar.gz")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == job["adapter"]["sha256"]
    with tarfile.open(target) as archive:
        names = {Path(n).name for n in archive.getnames()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names

    # A second job like it, with random selection: the form comes prefilled from the first.
    page.get_by_role("link", name="New job like this").click()
    page.locator("#f-name").wait_for()
    assert page.locator("#f-dataset_id").input_value() == dataset_id
    assert page.locator("#f-candidate_batch_size").input_value() == "8"
    assert page.locator("#f-max_steps").input_value() == str(STEPS)
    page.fill("#f-name", "random-e2e")
    page.fill("#f-max_steps", str(SECOND_STEPS))
    page.select_option("#f-method", "random")
    second_id = submit_job(page)
    assert second_id != job_id
    wait_status(page, ("succeeded",), timeout=150)
    wait_js(page, f"document.querySelector('#chart-loss').dataset.points === '{SECOND_STEPS}'")
    assert "Not computed by the Random method." in page.locator("#chart-diversity").inner_text()

    # The jobs list: newest first, with status, progress and times; pick both and compare.
    page.goto(server.url + "/#/")
    listed = page.locator("table.jobs-table tbody tr")
    listed.nth(1).wait_for()
    assert [listed.nth(i).get_attribute("data-job-id") for i in range(2)] == [second_id, job_id]
    assert "100 %" in listed.first.inner_text() and "took" in listed.first.inner_text()
    both_widths(page, "07-jobs-list")
    for i in range(2):
        listed.nth(i).locator("input[type=checkbox]").check()
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url(re.compile(r".*#/compare\?ids=.*"))
    compare_table = page.locator("#compare-table tbody tr")
    compare_table.nth(1).wait_for()
    wait_js(page, "document.querySelector('#chart-cmp-loss').dataset.points !== '0'")
    assert int(page.locator("#chart-cmp-loss").get_attribute("data-points")) == STEPS
    legend = page.locator("#chart-cmp-loss .u-legend").inner_text()
    assert "uds-e2e" in legend and "random-e2e" in legend
    table_text = page.locator("#compare-table").inner_text()
    assert "uds-e2e" in table_text and "random-e2e" in table_text
    assert f"{STEPS} / {STEPS}" in table_text and f"{SECOND_STEPS} / {SECOND_STEPS}" in table_text
    wall = page.locator("#compare-table tbody tr").first.locator("td[data-label='Wall time']").inner_text()
    assert re.search(r"\d", wall), wall
    page.select_option("#x-axis", "examples")
    wait_js(page, "document.querySelector('#chart-cmp-loss').dataset.points !== '0'")
    page.select_option("#x-axis", "step")
    both_widths(page, "08-compare")

    # Datasets: the uploaded file and its rows in full.
    page.goto(server.url + "/#/datasets")
    page.get_by_role("link", name="facts.jsonl").click()
    page.locator("ol.rows li").first.wait_for()
    assert "Tell me one fact" in page.locator("ol.rows").inner_text()
    assert "of 64" in page.locator(".pager").inner_text()
    both_widths(page, "09-dataset-rows")

    # Cancel a running job from its page.
    long_job = api.post(
        "/api/v1/jobs",
        json={
            "dataset_id": dataset_id,
            "model": "uds-tiny",
            "name": "to-cancel",
            "candidate_batch_size": 8,
            "budget": 0.25,
            "max_steps": 5000,
            "max_seq_len": 64,
            "micro_batch_size": 2,
            "lora_r": 4,
        },
    ).json()
    page.goto(f"{server.url}/#/jobs/{long_job['id']}")
    wait_status(page, ("running",), timeout=60)
    page.click("#cancel-job")
    page.click("#confirm-cancel")
    assert wait_status(page, TERMINAL, timeout=60) == "cancelled"
    page.wait_for_selector(".view[data-live=stopped]")
    assert page.locator("#download-adapter").count() == 0

    # A failed job shows its error readably (the API's shape, served for this job by the browser's router:
    # making a real job fail on purpose would take a broken model or disk).
    job = api.get(f"/api/v1/jobs/{long_job['id']}").json()
    job.update(
        status="failed",
        error={
            "code": "out_of_memory",
            "param": None,
            "message": "CUDA out of memory at step 7 (tried to allocate 2.1 GiB).",
        },
    )
    page.route(f"**/api/v1/jobs/{long_job['id']}", lambda route: route.fulfill(json=job))
    page.reload()
    error_box = page.locator("#job-error")
    error_box.wait_for()
    text = error_box.inner_text()
    assert "This job failed" in text and "CUDA out of memory at step 7" in text and "out_of_memory" in text
    assert "micro_batch_size" in text  # what to try


def test_bad_dataset_shows_line_numbered_problems(server, page, tmp_path):
    # A good dataset exists (whatever ran before), so the form's own checks pass and the server's are reached.
    httpx.post(
        server.url + "/api/v1/datasets", files={"file": ("small.jsonl", jsonl(chat_rows(12)))}, timeout=30
    ).raise_for_status()
    page.goto(server.url + "/#/new")
    page.locator("#f-file").wait_for()
    before = page.locator("#f-dataset_id option").count()
    good = [json.dumps(r) for r in chat_rows(12)]
    lines = good[:1] + ["{not json"] + good[1:3] + ['{"messages": []}'] + good[3:]
    upload_through_form(page, tmp_path, "broken.jsonl", ("\n".join(lines) + "\n").encode())
    problems = page.locator("#upload-problems")
    problems.wait_for()
    text = problems.inner_text()
    assert "broken.jsonl was not stored" in text
    items = problems.locator(".problem-list li").all_inner_texts()
    assert any(item.startswith("line 2") and "JSON" in item for item in items), items
    assert any(item.startswith("line 5") for item in items), items
    assert page.locator("#f-dataset_id option").count() == before  # nothing was stored

    # A setting the server rejects is shown next to its field, with the server's reason.
    page.select_option("#f-model", "uds-tiny")
    page.fill("#f-candidate_batch_size", "0")
    page.click("#submit-job")
    field_error = page.locator("#field-candidate_batch_size .field-error")
    field_error.wait_for()
    assert "candidate_batch_size" in field_error.inner_text()
    assert page.locator("#f-candidate_batch_size").get_attribute("aria-invalid") == "true"
    assert "The job was not started" in page.locator(".form-error").inner_text()
    assert "#/new" in page.url
    both_widths(page, "10-bad-dataset")


def test_api_key_is_asked_once_and_kept(browser, tmp_path_factory):
    key = "uds-" + "e2e0" * 8
    server = _start_server(tmp_path_factory, "dashboard-auth", UDS_REQUIRE_AUTH="true", UDS_BOOTSTRAP_API_KEY=key)
    context = browser.new_context(viewport=NARROW)
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(server.url + "/")
        dialog = page.locator("#key-dialog")
        dialog.wait_for(state="visible")
        page.fill("#key-input", "uds-wrong-key-000000000000")
        page.click("#key-form button[type=submit]")
        page.get_by_text("rejected").wait_for()  # the server said 401: asked again, with the reason
        page.fill("#key-input", key)
        page.click("#key-form button[type=submit]")
        page.get_by_text("No jobs yet — start one.").wait_for()
        assert page.evaluate("localStorage.getItem('uds.apiKey')") == key
        shot(page, "11-jobs-with-key")
        page.reload()
        page.get_by_text("No jobs yet — start one.").wait_for()
        assert not dialog.is_visible()
        assert httpx.get(server.url + "/api/v1/jobs").status_code == 401  # the key is what let the page in
    finally:
        context.close()
        server.stop()


def test_static_files_have_types_and_cache_headers(server):
    index = httpx.get(server.url + "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert (
        index.headers["cache-control"] == "no-cache"
        and "default-src 'self'" in index.headers["content-security-policy"]
    )
    again = httpx.get(server.url + "/", headers={"If-None-Match": index.headers["etag"]})
    assert again.status_code == 304
    js = httpx.get(server.url + "/static/js/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    vendor = httpx.get(server.url + "/static/vendor/uplot-1.6.32/uPlot.iife.min.js")
    assert vendor.status_code == 200 and "immutable" in vendor.headers["cache-control"]
    assert httpx.get(server.url + "/static/vendor/uplot-1.6.32/LICENSE").status_code == 200
    for path in ("/static/../main.py", "/static/%2e%2e/main.py", "/static/nope.js"):
        assert httpx.get(server.url + path).status_code == 404, path
    # No page may pull anything from another origin (no CDN: the service runs offline).
    for name in ("index.html",):
        html = (REPO / "api" / "static" / name).read_text()
        assert "http://" not in html and "https://" not in html
