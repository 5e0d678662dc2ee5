"""The dashboard's polls revalidate, in headless Chromium: while a running job is held at a step, the job page sends
If-None-Match, gets 304s and keeps showing the job; once the job moves on, the page shows the new state."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.test_dashboard import browser, page, status_of  # noqa: F401 - fixtures used by name
from tests.utils.factories import TINY_JOB, chat_rows, jsonl
from tests.utils.hold import StepHold
from tests.utils.service import Server, child_env, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def hold(tmp_path_factory):
    return StepHold(tmp_path_factory.mktemp("hold"), step=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory, hold):
    data = tmp_path_factory.mktemp("polling")
    server = Server(
        free_port(),
        child_env(UDS_DATA_DIR=str(data / "data"), UDS_METRICS_FLUSH_SECONDS="0.5"),
        data / "server.log",
        preload=hold.preload,
    )
    server.wait_ready()
    yield server
    hold.release()
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")


def held_job(server) -> str:
    api = server.url + "/api/v1"
    dataset = httpx.post(f"{api}/datasets", files={"file": ("t.jsonl", jsonl(chat_rows(16)))}, timeout=30).json()
    job = httpx.post(
        f"{api}/jobs",
        json={"dataset_id": dataset["id"], "model": "uds-tiny", **TINY_JOB, "max_steps": 2, "checkpoint_every": 2},
        timeout=30,
    ).json()
    deadline = time.monotonic() + 180
    while httpx.get(f"{api}/jobs/{job['id']}").json()["progress"]["step"] < 1:
        assert time.monotonic() < deadline, "the job never reached its held step"
        time.sleep(0.2)
    return job["id"]


def test_the_job_page_revalidates_and_keeps_its_view_on_304(server, page, hold):
    job_id = held_job(server)
    polls: list[tuple[str | None, int]] = []  # (If-None-Match sent, status) of each poll of the job

    def seen(response):
        if response.url.endswith(f"/api/v1/jobs/{job_id}"):
            polls.append((response.request.headers.get("if-none-match"), response.status))

    page.on("response", seen)
    page.goto(f"{server.url}/#/jobs/{job_id}")
    page.wait_for_selector(".view[data-live=polling]")
    deadline = time.monotonic() + 30
    while not any(sent and status == 304 for sent, status in polls):
        assert time.monotonic() < deadline, f"no revalidated poll: {polls}"
        page.wait_for_timeout(250)
    first_tag, first_status = polls[0]
    assert first_tag is None and first_status == 200
    # The 304s kept the view: still the running job.
    assert status_of(page) == "running"

    hold.release()
    page.wait_for_selector(".view[data-live=stopped]", timeout=120_000)
    assert status_of(page) == "succeeded"
    assert polls[-1][1] == 200  # the change came through as a full answer
