"""`uds serve`: the API, and in the embedded mode (no broker) the in-process worker thread next to it.

Here, not in api/, is where the two meet: api/ never imports worker/. The worker is handed the wake-up event of the
app's dispatcher, so a job created through the API starts at once instead of at the worker's next poll.
"""

from __future__ import annotations

import logging
import threading

from api.settings import Settings, bootstrap_key_problem, get_settings, is_loopback

log = logging.getLogger("uds.serve")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(
    host: str | None = None,
    port: int | None = None,
    settings: Settings | None = None,
    log_level: str = "info",
    on_ready=None,
) -> int:
    """Run the API (and, without UDS_BROKER_URL, the in-process worker) until interrupted.

    host/port default to UDS_HOST/UDS_PORT (127.0.0.1:8000). Binding anywhere but loopback requires API keys.
    `on_ready(settings)`, if given, runs in a thread once the server is starting (the demo submits its jobs there).
    """
    import uvicorn

    from api.main import create_app, prepare

    settings = settings or get_settings()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if updates:
        settings = settings.model_copy(update=updates)
    _configure_logging(log_level)
    if not is_loopback(settings.host) and settings.require_auth is False:
        log.error(
            "UDS_REQUIRE_AUTH=false is only allowed on a loopback address; refusing to serve on %s without API keys.",
            settings.host,
        )
        return 2
    problem = bootstrap_key_problem(settings)
    if problem:
        log.error("%s", problem)
        return 2
    prepare(settings)  # migrate before the worker thread or the first request touches the database

    app = create_app(settings)
    workers = _start_embedded_worker(settings, app.state.dispatcher)
    mode = "embedded (SQLite/in-process worker)" if settings.embedded else f"distributed (queue {settings.queue})"
    log.info(
        "UDS service on http://%s:%s, %s, data in %s, API keys %s",
        settings.host,
        settings.port,
        mode,
        settings.data_dir,
        "required" if settings.auth_required else "optional on loopback",
    )
    if on_ready is not None:
        threading.Thread(target=on_ready, args=(settings,), daemon=True).start()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        # The running job stops at its next step boundary and goes back to `queued`; the next start resumes it. A
        # running try-it answer is re-queued the same way; an export finishes or is re-queued by the next start.
        for thread in workers:
            thread.stop()
    return 0


def _start_embedded_worker(settings: Settings, dispatcher) -> list:
    """The in-process worker threads (jobs, short tasks, webhook deliveries), woken by the app's dispatcher (a
    LocalDispatcher in the embedded mode). Returned in the order they are to be stopped."""
    if not (settings.embedded and settings.embedded_worker):
        return []
    from worker.embedded import EmbeddedWorker
    from worker.webhooks import WebhookSender

    worker = EmbeddedWorker(settings, wakeup=dispatcher.wakeup)
    worker.start()
    tasks = _start_task_worker(settings, dispatcher)
    sender = WebhookSender(settings)  # last to stop: the final status changes of the others still go out
    sender.start()
    return [worker, tasks, sender]


def _start_task_worker(settings: Settings, dispatcher):
    """Exports and try-it generations on their own thread: they must not wait for a training run to end."""
    from worker.job_tasks import TaskWorker

    tasks = TaskWorker(settings, wakeup=dispatcher.task_wakeup)
    tasks.start()
    return tasks
