"""`uds worker`: one Celery worker process group for the GPU queue (distributed mode)."""

from __future__ import annotations

import logging


def run_worker(concurrency: int = 1, queues: str | None = None, hostname: str | None = None,
               loglevel: str = "INFO", pool: str | None = None) -> int:
    """Run a Celery worker until it is stopped. `queues` defaults to UDS_QUEUE ("gpu"); `concurrency` is the
    number of jobs trained at once on this host (one per GPU)."""
    from api.db import migrate
    from api.settings import get_settings

    settings = get_settings()
    if settings.broker_url is None:
        logging.getLogger(__name__).error(
            "UDS_BROKER_URL is not set: a worker needs a broker. Without one, `uds serve` runs jobs itself.")
        return 2
    migrate(settings.sqlalchemy_url)  # before consuming: a task must never meet an old schema

    from worker.celery_app import app

    argv = ["worker", f"--concurrency={concurrency}", f"--queues={queues or settings.queue}", f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if pool:
        argv.append(f"--pool={pool}")
    app.worker_main(argv)
    return 0
