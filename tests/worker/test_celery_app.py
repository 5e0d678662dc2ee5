"""The Celery app's delivery settings (what makes a redelivered job safe) and per-process GPU assignment."""

from __future__ import annotations

from types import SimpleNamespace

from api.dispatch import TASK_NAME


def test_delivery_settings():
    from worker import tasks
    from worker.celery_app import app, settings

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert [q.name for q in conf.task_queues] == [settings.queue] and conf.task_default_queue == settings.queue
    assert conf.broker_transport_options["visibility_timeout"] >= 3600
    task = app.tasks[TASK_NAME]
    assert task.name == tasks.run_job.name == "uds.run_job" and task.acks_late and task.reject_on_worker_lost
    assert task.max_retries == 5 and task.autoretry_for  # declared on the decorator


def test_pool_process_i_gets_gpu_i(monkeypatch):
    import billiard.process

    from worker import celery_app

    for device, index, expected in (
        ("cuda", 2, "cuda:2"),
        ("cuda", 0, "cuda:0"),
        ("cpu", 3, "cpu"),
        ("cuda:1", 3, "cuda:1"),
    ):
        monkeypatch.setattr(celery_app.settings, "device", device)
        monkeypatch.setattr(billiard.process, "current_process", lambda: SimpleNamespace(index=index))  # noqa: B023 (called before the loop moves on)
        celery_app._after_fork()
        assert celery_app.settings.device == expected
