"""Helpers for tests that need real services: fresh Postgres databases, Redis, and server/worker processes.

When UDS_REQUIRE_SERVICES=1 (CI), a missing Postgres or Redis fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks import stack
from benchmarks.stack import REPO, Process, Worker, child_env, distributed_env, free_port

__all__ = ["REPO", "Process", "Worker", "child_env", "distributed_env", "free_port"]  # the stack's, used by tests

POSTGRES_URL = stack.POSTGRES_URL
REDIS_URL = os.environ.get("UDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def services_required() -> bool:
    return os.environ.get("UDS_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable ({why})"
    if services_required():
        pytest.fail(message + "; UDS_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "uds_test"):
    """Create an empty database on the test server, yield its URL, drop it afterwards (skip or fail if unreachable)."""
    with contextlib.ExitStack() as exits:
        try:
            url = exits.enter_context(stack.fresh_postgres_database(prefix, POSTGRES_URL))
        except stack.Unavailable as exc:
            unavailable("PostgreSQL at " + POSTGRES_URL, exc.__cause__)
        yield url


@contextlib.contextmanager
def migrated_database(kind: str, prefix: str, tmp_path_factory):
    """A fresh database at the head revision: a SQLite file (kind "sqlite") or a Postgres database (kind "postgres")."""
    from api.db import migrate

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp(prefix) / 'uds.db'}"
        migrate(url)
        yield url
        return
    with fresh_postgres_database(prefix) as url:
        migrate(url)
        yield url


def with_tiny_model(data_dir, tiny_model_dir) -> Path:
    """`data_dir` with uds-tiny where a service looks for it (models/uds-tiny): the session's model, linked, not
    built again. Returns `data_dir`."""
    models = Path(data_dir) / "models"
    models.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_model_dir, models / "uds-tiny")
    return Path(data_dir)


def migrated_sqlite(tmp_path_factory, name: str) -> str:
    """A fresh SQLite database at the head revision, for test modules that train for real on SQLite only."""
    from api.db import migrate

    url = f"sqlite:///{tmp_path_factory.mktemp(name) / f'{name}.db'}"
    migrate(url)
    return url


def require_redis() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        unavailable("Redis at " + REDIS_URL, exc)
    return REDIS_URL


class Server(Process):
    """`uds serve` in a child process. `preload`: Python code run first there (a StepHold of tests/utils/hold.py)."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path, host: str = "127.0.0.1", preload: str = ""):
        code = f"{preload}\nfrom cli.service import serve; serve(host={host!r}, port={port})"
        super().__init__([sys.executable, "-c", code], env, log_path)
        self.url = f"http://{host}:{port}"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")


# ---- end-to-end checks over HTTP ---------------------------------------------------------------------------


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2, on_timeout=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")
        time.sleep(interval)


def poll_job(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 300, on_timeout=None) -> dict:
    """Poll GET /jobs/{id} (and the incremental metrics, as a dashboard does) until the job is in `statuses`."""
    state = {"after": 0, "steps": []}

    def done():
        job = client.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
        page = client.get(f"/api/v1/jobs/{job_id}/metrics", params={"after_step": state["after"]}).json()
        state["steps"] += [m["step"] for m in page["data"]]
        state["after"] = page["last_step"]
        if job["status"] in ("failed",) and "failed" not in statuses:
            raise AssertionError(f"job failed: {job['error']}")
        return job if job["status"] in statuses else None

    job = wait_for(done, timeout, f"job {job_id} to reach {statuses}", interval=0.3, on_timeout=on_timeout)
    job["_polled_steps"] = state["steps"]
    return job


def check_succeeded_job(
    client: httpx.Client, job: dict, tmp_path: Path, base_model_dir: str, steps: int, candidates: int, selected: int
) -> None:
    """Everything a user gets from a finished job: metrics per step, selections, events, and an adapter that
    loads with PeftModel.from_pretrained on the base model and generates."""
    import hashlib
    import tarfile

    job_id = job["id"]
    assert job["status"] == "succeeded" and job["error"] is None, job
    assert job["progress"]["step"] == steps == job["progress"]["total_steps"] and job["progress"]["fraction"] == 1.0
    assert job["examples_scored"] == steps * candidates and job["examples_trained"] == steps * selected
    assert job["backward_saved_fraction"] == round(1 - selected / candidates, 4)
    assert job["fine_tuned_model"] and job["finished_at"] and job["started_at"]

    metrics = client.get(f"/api/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    for m in metrics:
        assert m["candidates"] == candidates and m["selected"] == selected and m["loss"] is not None
        assert m["time_scoring"] > 0 and m["time_training"] > 0 and m["tokens_trained"] > 0
        for group in ("candidates", "selected"):
            for name in ("utility", "diversity", "score"):
                summary = m["stats"][group][name]
                assert summary is not None and set(summary) >= {"mean", "std", "min", "max"}, (group, name, m)
    assert sorted(set(job.get("_polled_steps", []))) == list(range(1, steps + 1))  # polling saw every step

    picked = client.get(f"/api/v1/jobs/{job_id}/selections", params={"selected": "true", "limit": 1000}).json()
    assert len(picked["data"]) == steps * selected and all(r["preview"] for r in picked["data"])
    everything = client.get(f"/api/v1/jobs/{job_id}/selections", params={"limit": 1000}).json()["data"]
    assert len(everything) == steps * candidates
    summary = client.get(f"/api/v1/jobs/{job_id}/selections/summary", params={"order": "most"}).json()
    assert summary["data"][0]["times_selected"] >= 1 and summary["rows_seen"] > 0
    events = client.get(f"/api/v1/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    statuses = [e["data"]["status"] for e in reversed(events) if e["type"] == "status"]
    assert statuses[:3] == ["validating_files", "queued", "running"] and statuses[-1] == "succeeded", statuses
    assert client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["data"][0]["step"] == steps
    models = [m["id"] for m in client.get("/api/v1/models").json()["data"]]
    assert job["fine_tuned_model"] in models

    archive = tmp_path / f"{job_id}.tar.gz"
    digest = hashlib.sha256()
    with client.stream("GET", f"/api/v1/jobs/{job_id}/adapter") as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
        header = response.headers["x-checksum-sha256"]
        with open(archive, "wb") as f:
            for chunk in response.iter_bytes():
                digest.update(chunk)
                f.write(chunk)
    assert digest.hexdigest() == header == job["adapter"]["sha256"]
    assert archive.stat().st_size == job["adapter"]["bytes"]
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / job_id, filter="data")
    folder = tmp_path / job_id / "adapter"
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = PeftModel.from_pretrained(base, str(folder))
    model.eval()
    inputs = tokenizer("Reverse: abc", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # The adapter really changed the model (LoRA B matrices are zero at start: trained ones are not).
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().max()) > 0 for p in lora_b)
