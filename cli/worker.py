"""`uds worker`: one Celery worker process group for the GPU queue (distributed mode)."""

from __future__ import annotations

import logging


def visible_gpus() -> int:
    import torch  # the worker trains with it anyway; the API never comes here

    return torch.cuda.device_count()


def worker_concurrency(concurrency: int | str, device: str, count_gpus=visible_gpus, devices_each: int = 1) -> int:
    """Processes for `uds worker`. With UDS_DEVICE=cuda process i trains on its own `devices_each` GPUs
    (UDS_WORKER_DEVICES; cuda:i when 1, worker.celery_app), so `auto` is the visible GPUs divided among them, and
    more processes than the GPUs allow is refused rather than failing each job on a missing cuda:N. Any other
    device (cpu, cuda:N) keeps what was asked, 1 for auto."""
    if device != "cuda":
        return 1 if concurrency == "auto" else int(concurrency)
    gpus = count_gpus()
    if concurrency == "auto":
        if gpus < devices_each:
            raise RuntimeError(
                f"UDS_DEVICE=cuda with {devices_each} GPU(s) per process but {gpus} are visible to this worker "
                "(--concurrency auto)"
            )
        return gpus // devices_each
    if int(concurrency) * devices_each > gpus:
        raise RuntimeError(
            f"--concurrency {concurrency} with UDS_DEVICE=cuda and {devices_each} GPU(s) per process needs "
            f"{int(concurrency) * devices_each} GPUs; {gpus} are visible to this worker"
        )
    return int(concurrency)


def run_worker(
    concurrency: int | str = 1,
    queues: str | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
    pool: str | None = None,
) -> int:
    """Run a Celery worker until it is stopped. `queues` defaults to UDS_QUEUE ("gpu"); `concurrency` is the
    number of jobs trained at once on this host (one per GPU), or "auto" (worker_concurrency)."""
    from api.db import migrate
    from api.settings import get_settings

    settings = get_settings()
    if settings.broker_url is None:
        logging.getLogger(__name__).error(
            "UDS_BROKER_URL is not set: a worker needs a broker. Without one, `uds serve` runs jobs itself."
        )
        return 2
    concurrency = worker_concurrency(concurrency, settings.device, devices_each=settings.worker_devices)
    migrate(settings.sqlalchemy_url)  # before consuming: a task must never meet an old schema

    from api.dispatch import worker_queues
    from worker.celery_app import app

    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={','.join(worker_queues(queues or settings.queue, settings.worker_devices))}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if pool:
        argv.append(f"--pool={pool}")
    app.worker_main(argv)
    return 0
