"""run_job with the real trainer on uds-tiny: success with an adapter, shutdown + resume without gaps, cancel.

SQLite only here (the distributed end-to-end test trains on Postgres); each test trains for real, a few seconds.
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
import time

import pytest
from sqlalchemy import func, select, update

from api.models import Checkpoint, Job, JobEvent, Selection, StepMetric
from tests.utils.service import migrated_sqlite
from worker.runner import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):  # these tests train for real: SQLite only
    return migrated_sqlite(tmp_path_factory, "runner")


def when(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_success_records_metrics_selections_and_adapter(sessions, make_job, tiny_in_data_dir):
    settings = tiny_in_data_dir
    job_id = make_job(max_steps=4, checkpoint_every=2)
    assert run_job(job_id, "me:1:cafe", settings) == "succeeded"
    with sessions() as session:
        job = session.get(Job, job_id)
        steps = session.scalars(
            select(StepMetric.step).where(StepMetric.job_id == job_id).order_by(StepMetric.step)
        ).all()
        n_selections = session.scalar(select(func.count()).select_from(Selection).where(Selection.job_id == job_id))
        picked = session.scalar(
            select(func.count()).select_from(Selection).where(Selection.job_id == job_id, Selection.selected.is_(True))
        )
        checkpoint_steps = session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)).all()
        types = session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
    assert steps == [1, 2, 3, 4] and n_selections == 32 and picked == 8 and sorted(checkpoint_steps) == [2, 4]
    assert (job.current_step, job.total_steps, job.examples_scored, job.examples_trained) == (4, 4, 32, 8)
    assert job.finished_at and job.tokens_trained > 0
    assert job.fine_tuned_model.startswith("ft:uds-tiny:") and job.fine_tuned_model.endswith(job_id)
    archive = settings.resolve(job.adapter_path)
    assert archive.stat().st_size == job.adapter_bytes
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == job.adapter_sha256
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "adapter/adapter_config.json" in names and "adapter/adapter_model.safetensors" in names
    assert types[0] == "status" and "started" in types and "checkpoint" in types and types[-1] == "status"
    # A redelivered task afterwards does nothing.
    assert run_job(job_id, "other:2:beef", settings) is None


def test_shutdown_requeues_and_the_next_run_resumes_without_gaps(sessions, make_job, tiny_in_data_dir):
    settings = tiny_in_data_dir
    job_id = make_job(max_steps=6, checkpoint_every=2)
    stop = threading.Event()
    requeued = []

    def stop_after_first_checkpoint():
        def has_checkpoint():
            with sessions() as session:
                return (
                    session.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.job_id == job_id)) > 0
                )

        when(has_checkpoint)
        stop.set()

    watcher = threading.Thread(target=stop_after_first_checkpoint)
    watcher.start()
    assert run_job(job_id, "me:1:cafe", settings, stop_event=stop, on_requeue=requeued.append) == "queued"
    watcher.join()
    assert requeued == [job_id]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.status == "queued" and job.worker_id is None and job.current_step >= 2

    assert run_job(job_id, "me:1:cafe", settings) == "succeeded"
    with sessions() as session:
        job = session.get(Job, job_id)
        steps = session.scalars(
            select(StepMetric.step).where(StepMetric.job_id == job_id).order_by(StepMetric.step)
        ).all()
        per_step = dict(
            session.execute(
                select(Selection.step, func.count()).where(Selection.job_id == job_id).group_by(Selection.step)
            ).all()
        )
        messages = session.scalars(
            select(JobEvent.message).where(JobEvent.job_id == job_id, JobEvent.type == "resumed")
        ).all()
    assert steps == [1, 2, 3, 4, 5, 6] and per_step == {s: 8 for s in range(1, 7)}
    assert job.attempts == 2 and job.examples_scored == 48 and job.examples_trained == 12
    assert messages and "Resumed from the checkpoint at step" in messages[0]


def test_cancel_mid_run(sessions, make_job, tiny_in_data_dir):
    settings = tiny_in_data_dir
    job_id = make_job(max_steps=200, checkpoint_every=50)

    def cancel_after_two_steps():
        def two_steps():
            with sessions() as session:
                return session.scalar(select(Job.current_step).where(Job.id == job_id)) >= 2

        when(two_steps)
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))

    canceller = threading.Thread(target=cancel_after_two_steps)
    canceller.start()
    assert run_job(job_id, "me:1:cafe", settings) == "cancelled"
    canceller.join()
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.status == "cancelled" and job.finished_at is not None and job.adapter_path is None
        assert 2 <= job.current_step < 200
        last = session.scalar(select(func.max(StepMetric.step)).where(StepMetric.job_id == job_id))
    # Metrics of every step that ran are kept (flushed on the way out).
    assert last == job.current_step
