"""The job page's Try it tab in headless Chromium against a live `uds serve`: a prompt and a chat answered with the
adapter and without it side by side (the same answers the API gives), and Cancel on a generation held running.

The generation is held at its first token by a hook in the server (tests/utils/hold.py install_generation_hold)
while the test presses Cancel, so the cancel never races a tiny model that answers in milliseconds.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.test_dashboard import CHROMIUM_ARGS, NARROW, WIDE, browser, page, shot  # noqa: F401 (fixtures)
from tests.utils.factories import TINY_JOB, chat_rows, jsonl
from tests.utils.service import Server, child_env, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    path = tmp_path_factory.mktemp("hold") / "release-generation"
    path.touch()  # free until a test engages the hold
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, release):
    data = tmp_path_factory.mktemp("tryit")
    preload = f"import tests.utils.hold as h; h.install_generation_hold({str(release)!r})"
    server = Server(
        free_port(),
        child_env(UDS_DATA_DIR=str(data / "data"), UDS_METRICS_FLUSH_SECONDS="0.5"),
        data / "server.log",
        preload=preload,
    )
    server.wait_ready()
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")


@pytest.fixture(scope="module")
def job(server):
    api = server.url + "/api/v1"
    dataset = httpx.post(f"{api}/datasets", files={"file": ("t.jsonl", jsonl(chat_rows(16)))}).json()["id"]
    job = httpx.post(
        f"{api}/jobs",
        json={"dataset_id": dataset, "model": "uds-tiny", **TINY_JOB, "max_steps": 2, "checkpoint_every": 2},
    ).json()
    deadline = time.monotonic() + 180
    while (job := httpx.get(f"{api}/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "succeeded", job
    return job


def generate_and_wait(page, wanted="succeeded"):
    """Press Generate and wait until the new generation (not the one shown before) reaches `wanted`."""
    before = page.get_attribute("#tryit-status", "data-id") or ""
    page.click("#tryit-generate")
    page.wait_for_function(
        "([before, wanted]) => { const s = document.querySelector('#tryit-status');"
        " return s.dataset.id && s.dataset.id !== before && s.dataset.status === wanted; }",
        arg=[before, wanted],
        timeout=120_000,
    )
    return page.get_attribute("#tryit-status", "data-id")


def test_try_it_answers_side_by_side_and_cancels(server, job, page, release):
    page.goto(f"{server.url}/#/jobs/{job['id']}?tab=tryit")
    page.fill("#tryit-prompt", "Reverse: abc")
    page.fill("#tryit-max-tokens", "8")
    generation_id = generate_and_wait(page)
    answer = httpx.get(f"{server.url}/api/v1/generations/{generation_id}").json()
    assert answer["messages"] == [{"role": "user", "content": "Reverse: abc"}] and answer["max_new_tokens"] == 8
    assert page.inner_text("#tryit-fine-tuned pre") == (answer["fine_tuned"]["text"] or "(empty answer)")
    assert page.inner_text("#tryit-base pre") == (answer["base"]["text"] or "(empty answer)")
    assert "tokens in" in page.inner_text("#tryit-fine-tuned") and "uds-tiny" in page.inner_text("#tryit-base h3")
    shot(page, "tryit", NARROW)
    shot(page, "tryit", WIDE)

    # A chat: a system turn and a user turn.
    page.check("input[name=tryit-mode][value=chat]")
    page.select_option("#tryit-turns .tryit-turn >> nth=0 >> select", "system")
    page.fill("#tryit-turns .tryit-turn >> nth=0 >> textarea", "Answer briefly.")
    page.click("#tryit-add-turn")
    page.fill("#tryit-turns .tryit-turn >> nth=1 >> textarea", "Copy: xyz")
    chat_id = generate_and_wait(page)
    chat = httpx.get(f"{server.url}/api/v1/generations/{chat_id}").json()
    assert chat["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Copy: xyz"},
    ]
    assert chat["fine_tuned"] is not None and chat["base"] is not None

    # Cancel: the generation is held running at its first token until the Cancel button stops it.
    release.unlink()
    try:
        held_id = generate_and_wait(page, "running")
        assert page.is_visible("#tryit-cancel") and page.is_disabled("#tryit-generate")
        page.click("#tryit-cancel")
        page.wait_for_selector("#tryit-status[data-status=cancelled]", timeout=60_000)
    finally:
        release.touch()
    held = httpx.get(f"{server.url}/api/v1/generations/{held_id}").json()
    assert held["status"] == "cancelled" and held["cancel_requested"] is True
    assert page.is_hidden("#tryit-cancel") and page.is_enabled("#tryit-generate")


def test_a_bad_request_shows_the_servers_reason(server, job, page):
    page.goto(f"{server.url}/#/jobs/{job['id']}?tab=tryit")
    page.fill("#tryit-prompt", "hi")
    page.fill("#tryit-max-tokens", "100000")
    page.click("#tryit-generate")
    page.wait_for_selector("#tryit-error:not([hidden])")
    assert "max_new_tokens" in page.inner_text("#tryit-error")
