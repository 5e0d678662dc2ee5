"""One job on two devices, end to end through the embedded service: a real `uds serve` (SQLite, in-process worker)
that offers two devices (UDS_WORKER_DEVICES=2), here two gloo processes on the CPU started by torchrun.

- a 2-device job picks exactly what the same job picks on one device, at every step, and its adapter equals the
  one-device adapter within float reduction-order tolerance;
- kill -9 of one rank mid-job: torchrun's agent starts both again, they resume from the newest checkpoint, and
  every step is stored once; the adapter still equals the uninterrupted one;
- cancel stops both ranks;
- a job asking for more devices than the server offers is a 400 naming `devices`.

The ranks get the test's step hold through a `sitecustomize` on their PYTHONPATH (they inherit the server's
environment), so the test holds rank 0 at a step instead of racing the training loop.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import torch

from tests.utils.adapters import adapter_tensors
from tests.utils.datasets import write_dataset
from tests.utils.factories import TINY_JOB
from tests.utils.hold import StepHold
from tests.utils.service import Server, child_env, free_port, poll_job, wait_for, with_tiny_model

pytestmark = pytest.mark.slow

JOB = {**TINY_JOB, "max_steps": 8, "checkpoint_every": 2, "lora_dropout": 0.0, "groups_per_step": 2}


@pytest.fixture(scope="module")
def hold(tmp_path_factory):
    """Engaged by the tests that need rank 0 held at step 3; released otherwise."""
    return StepHold(tmp_path_factory.mktemp("hold"), step=3, engaged=False)


# In the ranks (sitecustomize): rank 1 alone runs out of memory at step 2 while the trigger file exists.
FAIL_RANK_1 = """
import os
if os.environ.get("RANK") == "1":
    import uds.trainer
    _step = uds.trainer._step
    def _failing_step(run, step, _step=_step):
        if step == 2 and os.path.exists({trigger!r}):
            raise uds.trainer.TrainingError("out_of_memory", "The GPU ran out of memory (rank 1 only).")
        return _step(run, step)
    uds.trainer._step = _failing_step
"""


@pytest.fixture(scope="module")
def fail_rank_1(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fail") / "fail-rank-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, hold, fail_rank_1):
    data_dir = with_tiny_model(tmp_path_factory.mktemp("multi-device-data"), tiny_model_dir)
    hooks = tmp_path_factory.mktemp("hooks")
    hook = hold.preload + "\n" + FAIL_RANK_1.format(trigger=str(fail_rank_1))
    (hooks / "sitecustomize.py").write_text(hook, encoding="utf-8")
    env = child_env(
        UDS_DATA_DIR=str(data_dir),
        UDS_MIN_EXAMPLES="8",
        UDS_HEARTBEAT_SECONDS="1",
        UDS_STALE_AFTER_SECONDS="60",
        UDS_METRICS_FLUSH_SECONDS="0.3",
        UDS_DEVICE="cpu",
        UDS_WORKER_DEVICES="2",
    )
    env["PYTHONPATH"] = f"{hooks}{os.pathsep}{env['PYTHONPATH']}"
    server = Server(free_port(), env, tmp_path_factory.mktemp("logs") / "server.log")
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def upload_dataset(client, folder) -> dict:
    """The 64-row dataset both multi-device modules train on, uploaded."""
    path = folder / "reverse.jsonl"
    write_dataset(path, 64, fmt="chat", seed=11)
    with open(path, "rb") as f:
        response = client.post("/api/v1/datasets", files={"file": (path.name, f)})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def dataset(client, tmp_path_factory):
    return upload_dataset(client, tmp_path_factory.mktemp("datasets"))


def submit(client, dataset, **overrides) -> str:
    body = {"dataset_id": dataset["id"], "model": "uds-tiny", **JOB, **overrides}
    response = client.post("/api/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def picks(client, job_id) -> dict[int, list[int]]:
    """Rows trained on, by step."""
    by_step: dict[int, list[int]] = {}
    after = None
    while True:
        params = {"selected": "true", "limit": 1000, **({"after": after} if after else {})}
        page = client.get(f"/api/v1/jobs/{job_id}/selections", params=params).json()
        for row in page["data"]:
            by_step.setdefault(row["step"], []).append(row["row"])
        if not page["has_more"]:
            return {step: sorted(rows) for step, rows in by_step.items()}
        after = page["data"][-1]["id"]


def metric_steps(client, job_id) -> list[int]:
    return sorted(
        m["step"] for m in client.get(f"/api/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]
    )


def assert_close_adapters(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys() and expected
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)


def rank_pids(job_id: str) -> dict[int, int]:
    """pid of each rank process of the job (python -m worker.ranks .../<job>/devices/run.json), by RANK."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker.ranks" in command and any(job_id.encode() in part for part in command):
            ranks = [part for part in environ if part.startswith(b"RANK=")]
            if ranks:
                found[int(ranks[0].split(b"=")[1])] = int(entry.name)
    return found


@pytest.fixture(scope="module")
def one_device(client, dataset, tmp_path_factory):
    """The reference: the same job on one device."""
    job_id = submit(client, dataset, devices=1)
    poll_job(client, job_id, {"succeeded"}, timeout=300)
    return job_id, picks(client, job_id), adapter_tensors(client, job_id, tmp_path_factory.mktemp("one"))


def test_two_devices_pick_what_one_device_picks(client, dataset, one_device, tmp_path):
    _, reference_picks, reference_adapter = one_device
    job_id = submit(client, dataset, devices=2)
    job = poll_job(client, job_id, {"succeeded"}, timeout=300)
    assert job["config"]["devices"] == 2
    events = client.get(f"/api/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    started = next(event for event in events if event["type"] == "started")
    assert started["data"]["devices"] == 2
    assert picks(client, job_id) == reference_picks and len(reference_picks) == JOB["max_steps"]
    assert_close_adapters(reference_adapter, adapter_tensors(client, job_id, tmp_path))


def test_kill_9_of_one_rank_resumes_with_every_step_once(client, dataset, one_device, hold, tmp_path):
    _, reference_picks, reference_adapter = one_device
    hold.engage()
    try:
        job_id = submit(client, dataset, devices=2)
        wait_for(lambda: metric_steps(client, job_id) == [1, 2, 3], timeout=300, what="rank 0 held at step 3")
        ranks = wait_for(
            lambda: (found := rank_pids(job_id)) and len(found) == 2 and found, timeout=30, what="both ranks"
        )
        os.kill(ranks[1], signal.SIGKILL)
    finally:
        hold.release()
    job = poll_job(client, job_id, {"succeeded", "failed"}, timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert metric_steps(client, job_id) == list(range(1, JOB["max_steps"] + 1))
    assert picks(client, job_id) == reference_picks
    resumed = [
        event
        for event in client.get(f"/api/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
        if event["type"] == "resumed"
    ]
    assert [event["data"]["step"] for event in resumed] == [2]  # from the checkpoint before the killed step
    assert_close_adapters(reference_adapter, adapter_tensors(client, job_id, tmp_path))


def test_cancel_stops_both_ranks(client, dataset, hold):
    hold.engage()
    try:
        job_id = submit(client, dataset, devices=2)
        wait_for(lambda: metric_steps(client, job_id) == [1, 2, 3], timeout=300, what="rank 0 held at step 3")
        assert (
            len(
                wait_for(
                    lambda: (found := rank_pids(job_id)) and len(found) == 2 and found, timeout=30, what="both ranks"
                )
            )
            == 2
        )
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        job = poll_job(client, job_id, {"cancelled"}, timeout=120)
    finally:
        hold.release()
    assert job["progress"]["step"] == 3
    assert rank_pids(job_id) == {}  # both processes are gone, not left waiting at a collective


def test_a_rank_failing_alone_fails_the_job_with_its_error_and_leaves_no_process(client, dataset, fail_rank_1):
    fail_rank_1.touch()
    try:
        job_id = submit(client, dataset, devices=2)
        job = poll_job(client, job_id, {"failed", "succeeded"}, timeout=300)
    finally:
        fail_rank_1.unlink()
    assert job["status"] == "failed" and job["error"]["code"] == "out_of_memory", job
    assert "rank 1 only" in job["error"]["message"]
    assert rank_pids(job_id) == {}  # rank 0, left waiting at a collective, was stopped


def test_more_devices_than_the_server_offers_is_refused(client, dataset):
    response = client.post("/api/v1/jobs", json={"dataset_id": dataset["id"], "model": "uds-tiny", **JOB, "devices": 3})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "devices_unavailable" and error["param"] == "devices"
    assert "at most 2" in error["message"]
