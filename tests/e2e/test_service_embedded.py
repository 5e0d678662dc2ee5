"""The embedded default end to end: a real `uds serve` process (SQLite, in-process worker, 127.0.0.1, no key),
driven over real HTTP. Upload, train uds-tiny for real steps, poll, download and load the adapter; cancel a
running job; kill the server mid-job and check that a restart resumes it from its checkpoint without gaps.
"""

from __future__ import annotations

import httpx
import pytest

from tests.utils.adapters import adapter_tensors, assert_same_tensors
from tests.utils.datasets import write_dataset
from tests.utils.factories import TINY_JOB
from tests.utils.hold import StepHold
from tests.utils.service import (
    Server,
    check_succeeded_job,
    child_env,
    free_port,
    poll_job,
    wait_for,
    with_tiny_model,
)

pytestmark = pytest.mark.slow


def server_env(data_dir) -> dict[str, str]:
    return child_env(
        UDS_DATA_DIR=str(data_dir),
        UDS_MIN_EXAMPLES="8",
        UDS_HEARTBEAT_SECONDS="1",
        UDS_STALE_AFTER_SECONDS="30",
        UDS_METRICS_FLUSH_SECONDS="0.5",
        UDS_DEVICE="cpu",
    )


def start(data_dir, log_path, preload: str = "") -> Server:
    server = Server(free_port(), server_env(data_dir), log_path, preload=preload)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_model_dir):
    return with_tiny_model(tmp_path_factory.mktemp("embedded-data"), tiny_model_dir)


@pytest.fixture(scope="module")
def server(data_dir, tmp_path_factory):
    server = start(data_dir, tmp_path_factory.mktemp("logs") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("datasets") / "reverse.jsonl"
    write_dataset(path, 48, fmt="chat", seed=3)
    return path


def upload(client: httpx.Client, path) -> dict:
    with open(path, "rb") as f:
        response = client.post("/api/v1/datasets", files={"file": (path.name, f)})
    assert response.status_code == 201, response.text
    return response.json()


def test_upload_train_poll_download_load(server, dataset_file, tiny_model_dir, tmp_path):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        info = client.get("/api/v1/info").json()
        assert info["auth_required"] is False and info["mode"] == "embedded"
        dataset = upload(client, dataset_file)
        assert dataset["n_examples"] == 48 and dataset["format"] == "chat"
        created = client.post(
            "/api/v1/jobs",
            json={"dataset_id": dataset["id"], "model": "uds-tiny", **TINY_JOB, "name": "e2e", "suffix": "e2e"},
        )
        assert created.status_code == 201, created.text
        job = poll_job(client, created.json()["id"], {"succeeded"}, timeout=300, on_timeout=server.log)
        check_succeeded_job(
            client, job, tmp_path, tiny_model_dir, steps=TINY_JOB["max_steps"], candidates=8, selected=2
        )


def test_cancel_mid_run(server, dataset_file):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        dataset = upload(client, dataset_file)
        job = client.post(
            "/api/v1/jobs",
            json={
                "dataset_id": dataset["id"],
                "model": "uds-tiny",
                **{**TINY_JOB, "max_steps": 400, "checkpoint_every": 100},
            },
        ).json()
        wait_for(
            lambda: client.get(f"/api/v1/jobs/{job['id']}").json()["progress"]["step"] >= 2,
            300,
            "two steps",
            on_timeout=server.log,
        )
        cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["cancel_requested"] is True
        final = poll_job(client, job["id"], {"cancelled"}, timeout=60, on_timeout=server.log)
        assert 2 <= final["progress"]["step"] < 400 and final["adapter"] is None and final["finished_at"]
        steps = [
            m["step"] for m in client.get(f"/api/v1/jobs/{job['id']}/metrics", params={"limit": 1000}).json()["data"]
        ]
        assert steps == list(range(1, final["progress"]["step"] + 1))
        again = client.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 400 and again.json()["error"]["code"] == "job_not_cancellable"


def test_restart_resumes_an_interrupted_job(data_dir, dataset_file, tmp_path, server):
    # Its own server on the same data folder (the module's server is idle between tests, so nothing competes).
    # The job waits at step 3, after the checkpoint of step 2, until the kill: polling alone could see it finish.
    hold = StepHold(tmp_path, step=3)
    first = start(data_dir, tmp_path / "first.log", preload=hold.preload)
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            dataset = upload(client, dataset_file)
            job = client.post(
                "/api/v1/jobs",
                json={
                    "dataset_id": dataset["id"],
                    "model": "uds-tiny",
                    **{**TINY_JOB, "max_steps": 10, "checkpoint_every": 2},
                },
            ).json()

            def past_a_checkpoint():
                checkpoints = client.get(f"/api/v1/jobs/{job['id']}/checkpoints").json()["data"]
                step = client.get(f"/api/v1/jobs/{job['id']}").json()["progress"]["step"]
                return checkpoints and step > checkpoints[0]["step"] and step < 10

            wait_for(past_a_checkpoint, 300, "a step after a checkpoint", interval=0.1, on_timeout=first.log)
    finally:
        first.kill()  # SIGKILL: no shutdown hook runs, the job row still says running

    second = start(data_dir, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=second.url, timeout=60) as client:
            final = poll_job(client, job["id"], {"succeeded"}, timeout=300, on_timeout=second.log)
            assert final["attempts"] == 2
            steps = [
                m["step"]
                for m in client.get(f"/api/v1/jobs/{job['id']}/metrics", params={"limit": 1000}).json()["data"]
            ]
            assert steps == list(range(1, 11))  # no gap, no duplicate
            assert final["examples_scored"] == 80 and final["examples_trained"] == 20
            events = client.get(f"/api/v1/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
            messages = " | ".join(e["message"] for e in events)
            assert "re-queued" in messages and "Resumed from the checkpoint" in messages
            # On CPU with a fixed seed, the resumed run's adapter equals the same job's run without interruption.
            reference = client.post(
                "/api/v1/jobs",
                json={
                    "dataset_id": dataset["id"],
                    "model": "uds-tiny",
                    **{**TINY_JOB, "max_steps": 10, "checkpoint_every": 2},
                },
            ).json()
            poll_job(client, reference["id"], {"succeeded"}, timeout=300, on_timeout=second.log)
            assert_same_tensors(
                adapter_tensors(client, reference["id"], tmp_path / "reference"),
                adapter_tensors(client, job["id"], tmp_path / "resumed"),
            )
    finally:
        second.stop()


def test_demo_starts_the_service_with_two_jobs(tmp_path, tiny_model_dir):
    import sys

    from tests.utils.service import Process

    data = with_tiny_model(tmp_path / "data", tiny_model_dir)
    port = free_port()
    demo = Process(
        [sys.executable, "-c", f"from cli.demo import demo; demo(port={port}, model='uds-tiny')"],
        server_env(data),
        tmp_path / "demo.log",
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            def two_jobs():
                try:
                    jobs = client.get("/api/v1/jobs").json()["data"]
                except httpx.HTTPError:
                    return None
                return jobs if len(jobs) == 2 else None

            jobs = wait_for(two_jobs, 120, "the demo's jobs", on_timeout=demo.log)
            assert {j["method"] for j in jobs} == {"uds", "random"} and {j["model"] for j in jobs} == {"uds-tiny"}
            assert all(j["status"] in ("queued", "running") for j in jobs)
    finally:
        demo.stop()
