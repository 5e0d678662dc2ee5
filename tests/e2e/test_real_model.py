"""The built-in real model end to end: a real `uds serve` process (embedded: SQLite, in-process worker), driven over
real HTTP, trains smollm2-135m-instruct for 2 steps and answers a question through the generate endpoint, with the
adapter and without it. The model is the session's conversion (`real_model_dir`), linked where the service looks.

Kept small: 2 steps of 2 examples at 64 tokens, a 12-token answer.
"""

from __future__ import annotations

import httpx
import pytest

from tests.utils.datasets import write_dataset
from tests.utils.service import Server, child_env, free_port, poll_job, wait_for, with_builtin_model
from uds.smollm2 import REAL_MODEL

pytestmark = pytest.mark.slow

REAL_JOB = dict(
    method="uds",
    candidate_batch_size=4,
    budget=0.5,  # 2 of every 4 candidates: 2 examples a step
    max_steps=2,
    max_seq_len=64,
    micro_batch_size=2,
    lora_r=4,
    lora_alpha=8,
    learning_rate=1e-4,
    warmup_ratio=0.0,
    checkpoint_every=2,
)


@pytest.fixture
def server(tmp_path, real_model_dir):
    data = with_builtin_model(tmp_path / "data", REAL_MODEL, real_model_dir)
    env = child_env(UDS_DATA_DIR=str(data), UDS_MIN_EXAMPLES="8", UDS_DEVICE="cpu", UDS_METRICS_FLUSH_SECONDS="0.5")
    server = Server(free_port(), env, tmp_path / "server.log")
    server.wait_ready()
    yield server
    server.stop()


def test_the_real_model_trains_two_steps_and_answers(server, tmp_path):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        offered = [m["id"] for m in client.get("/api/v1/models").json()["data"] if m["kind"] == "base"]
        assert offered[0] == REAL_MODEL
        path = write_dataset(tmp_path / "reverse.jsonl", 16, fmt="chat", seed=5)
        with open(path, "rb") as f:
            dataset = client.post("/api/v1/datasets", files={"file": (path.name, f)}).json()
        created = client.post("/api/v1/jobs", json={"dataset_id": dataset["id"], "model": REAL_MODEL, **REAL_JOB})
        assert created.status_code == 201, created.text
        job = poll_job(client, created.json()["id"], {"succeeded"}, timeout=600, on_timeout=server.log)
        assert job["progress"]["step"] == 2 and job["_polled_steps"] == [1, 2]

        asked = client.post(
            f"/api/v1/jobs/{job['id']}/generate",
            json={"prompt": "What is the capital of France?", "max_new_tokens": 12},
        )
        assert asked.status_code in (200, 201, 202), asked.text

        def answered():
            generation = client.get(f"/api/v1/generations/{asked.json()['id']}").json()
            if generation["status"] == "failed":
                raise AssertionError(generation["error"])
            return generation if generation["status"] == "succeeded" else None

        generation = wait_for(answered, 300, "the answers", interval=0.5, on_timeout=server.log)
    base, tuned = generation["base"], generation["fine_tuned"]
    # The pretrained model knows this; two tiny steps of LoRA leave it an answer in words, whatever they changed.
    assert "Paris" in base["text"], base
    assert tuned["text"].strip() and tuned["tokens"] > 0, tuned
