"""Jobs the official `openai` client creates show in the dashboard, in a real browser (Debian
Chromium via Playwright, as test_dashboard.py) against a live key-less loopback `uds serve`:

- `uds keys create` without --tenant there makes a key of the key-less tenant: its jobs show without signing in;
- a key of another tenant: its job shows after signing in with the key, and is gone again after signing out.
"""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest

from tests.e2e.test_dashboard import browser, page  # noqa: F401 - the same Chromium and page fixtures
from tests.utils.service import REPO, Server, child_env, free_port, with_tiny_model
from uds.toy_data import make_rows, to_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETTINGS = {"max_steps": 1, "candidate_batch_size": 8, "max_seq_len": 48}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("signin")
    with_tiny_model(root / "data", tiny_model_dir)
    env = child_env(UDS_DATA_DIR=str(root / "data"), UDS_MIN_EXAMPLES="4")
    server = Server(free_port(), env, root / "server.log")
    server.wait_ready()
    server.env = env
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(3000)}")


def uds(server, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=server.env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def submit(server, key: str, name: str) -> str:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)
    data = client.files.create(
        file=("train.jsonl", to_jsonl(make_rows(16, task="reverse", seed=2))), purpose="fine-tune"
    )
    return client.fine_tuning.jobs.create(model="uds-tiny", training_file=data.id, suffix=name, extra_body=SETTINGS).id


def job_row(page, job_id: str):
    return page.locator(f"tr[data-job-id='{job_id}']")


def test_openai_jobs_show_in_the_dashboard_by_default_key_or_after_signing_in(server, page):  # noqa: F811
    local_job = submit(server, uds(server, "keys", "create"), "local")
    team_job = submit(server, uds(server, "keys", "create", "--tenant", "team"), "team")
    team_key = uds(server, "keys", "create", "--tenant", "team", "--name", "browser")

    page.goto(server.url + "/")
    job_row(page, local_job).wait_for()  # the default key's job: the key-less tenant's, shown without a key
    assert job_row(page, team_job).count() == 0

    page.click("#sign-in")
    page.fill("#key-input", team_key)
    page.click("#key-form button[type=submit]")
    job_row(page, team_job).wait_for()
    assert job_row(page, local_job).count() == 0
    page.reload()  # the key is kept in the browser
    job_row(page, team_job).wait_for()

    page.click("#sign-out")
    job_row(page, local_job).wait_for()
    assert job_row(page, team_job).count() == 0
    assert page.evaluate("localStorage.getItem('uds.apiKey')") is None
