"""`uds demo`: the embedded service, plus a demo dataset and two jobs on uds-tiny (uds and random) to watch."""

from __future__ import annotations

import logging
import time

from api.settings import Settings, get_settings
from cli.service import serve
from uds.toy_data import make_rows, to_jsonl

log = logging.getLogger("uds.demo")

DEMO_JOB = {
    "model": "uds-tiny",
    "budget": 0.25,
    "candidate_batch_size": 16,
    "epochs": 2,
    "max_seq_len": 64,
    "learning_rate": 1e-3,
}
METHODS = ("uds", "random")


def demo(port: int | None = None, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    if settings.broker_url is not None:  # the demo is the embedded mode, whatever the environment says
        settings = settings.model_copy(update={"broker_url": None})
    return serve(port=port, settings=settings, on_ready=submit_demo_jobs)


def submit_demo_jobs(settings: Settings) -> None:
    """Upload the demo dataset and submit one job per method, once the server answers."""
    import httpx

    base = f"http://{settings.host}:{settings.port}"
    wait_until_up(base)
    with httpx.Client(base_url=base, timeout=60) as client:
        body = to_jsonl(make_rows(256, task="mixed"))
        dataset = client.post("/api/v1/datasets", files={"file": ("demo.jsonl", body)}).json()
        for method in METHODS:
            job = client.post(
                "/api/v1/jobs",
                json={**DEMO_JOB, "dataset_id": dataset["id"], "method": method, "name": f"demo {method}"},
            ).json()
            # The dashboard page, which a person opens; the API URL is one click away from it (Details).
            log.info("demo job %s (%s): %s/#/jobs/%s", job.get("id"), method, base, job.get("id"))


def wait_until_up(base: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
