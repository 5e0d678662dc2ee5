"""DbLogger: batched writes (never a transaction per step), idempotent on (job_id, step), fenced by ownership."""

from __future__ import annotations

import math

from sqlalchemy import event, func, select, update

from api.db import get_engine
from api.models import Checkpoint, Job, Selection, StepMetric, utcnow
from worker.db_logger import DbLogger
from worker.lease import JobLease

ME = "host:1:me"


def metrics(step: int, loss: float = 1.0, rows=(0, 1, 2, 3), picked=(0,)) -> dict:
    s = {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}
    return {
        "step": step,
        "total_steps": 10,
        "epoch": 1,
        "loss": loss,
        "token_accuracy": 0.1,
        "learning_rate": 1e-3,
        "grad_norm": 0.5,
        "tokens_trained": 7,
        "candidates": len(rows),
        "selected": len(picked),
        "time_scoring": 0.01,
        "time_training": 0.02,
        "alpha": 0.3,
        "stats": {
            "candidates": {"utility": s, "diversity": s, "score": s},
            "selected": {"utility": s, "diversity": s, "score": s},
        },
        "eval_loss": None,
        "eval_accuracy": None,
        "selections": [
            {"row": r, "selected": r in picked, "utility": 1.0, "diversity": 0.1, "score": 1.1} for r in rows
        ],
    }


def running(sessions, make_job) -> str:
    job_id = make_job()
    with sessions.begin() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status="running", worker_id=ME, heartbeat_at=utcnow())
        )
    return job_id


def steps_in_db(sessions, job_id) -> list[int]:
    with sessions() as session:
        return list(
            session.scalars(select(StepMetric.step).where(StepMetric.job_id == job_id).order_by(StepMetric.step))
        )


def count_commits(url: str) -> list[int]:
    commits = [0]

    def on_commit(_conn):
        commits[0] += 1

    event.listen(get_engine(url), "commit", on_commit)
    return commits


def test_batches_by_steps_and_flushes_at_the_end(sessions, make_job, settings):
    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=5, flush_seconds=3600)
    commits = count_commits(settings.sqlalchemy_url)
    for step in range(1, 5):
        logger.log_step(metrics(step))
    assert steps_in_db(sessions, job_id) == [] and commits[0] == 0  # buffered, nothing written yet
    logger.log_step(metrics(5))  # handed to the writer thread; flush() waits for it (and has nothing more to add)
    logger.flush()
    assert steps_in_db(sessions, job_id) == [1, 2, 3, 4, 5] and commits[0] == 1
    for step in range(6, 21):
        logger.log_step(metrics(step))
        assert logger.should_stop() is False  # a read, never a commit
    logger.log_step(metrics(21))
    logger.flush()
    assert steps_in_db(sessions, job_id) == list(range(1, 22))
    assert commits[0] == 5  # 21 steps: flushes at 5, 10, 15, 20 and the final one
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.current_step == 21 and job.examples_scored == 84 and job.examples_trained == 21
        assert job.tokens_trained == 147 and job.latest_loss == 1.0 and job.alpha_used == 0.3
        assert session.scalar(select(func.count()).select_from(Selection).where(Selection.job_id == job_id)) == 84
    logger.close()


def test_flushes_on_time(sessions, make_job):
    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=1000, flush_seconds=0.0)
    logger.log_step(metrics(1))
    assert logger._metrics == []  # handed off by time, not by count
    logger.close()
    assert steps_in_db(sessions, job_id) == [1] and logger.batches_written == 1


def test_training_thread_does_not_wait_for_the_database(sessions, make_job):
    """A slow database delays the writer thread, not log_step (up to the back-pressure limit)."""
    import threading

    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=1, flush_seconds=3600)
    gate = threading.Event()
    original = logger._write
    logger._write = lambda batch: (gate.wait(10), original(batch))
    import time

    start = time.perf_counter()
    for step in range(1, 4):
        logger.log_step(metrics(step))
    assert time.perf_counter() - start < 1.0 and steps_in_db(sessions, job_id) == []
    gate.set()
    logger.flush()
    assert steps_in_db(sessions, job_id) == [1, 2, 3]


def test_a_write_error_stops_the_run(sessions, make_job):
    import pytest

    from worker.db_logger import MetricsWriteError

    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=1, flush_seconds=3600)

    def broken(_batch):
        raise OSError("disk full")

    logger._write = broken
    logger.log_step(metrics(1))
    with pytest.raises(MetricsWriteError, match="disk full"):
        logger.flush()
    logger.close()


def test_resume_deletes_rows_after_the_checkpoint_and_rewrites_idempotently(sessions, make_job):
    job_id = running(sessions, make_job)
    first = DbLogger(sessions, job_id, ME, flush_steps=2, flush_seconds=3600)
    for step in range(1, 8):
        first.log_step(metrics(step, loss=10.0 + step))
        if step == 4:
            first.log_checkpoint(4, "/data/jobs/x/checkpoints/step-00000004", {"loss": 14.0})
    first.flush()
    assert steps_in_db(sessions, job_id) == list(range(1, 8))

    # The process died after step 7; the newest checkpoint is step 4. The resumed run redoes steps 5-8.
    resumed = DbLogger(sessions, job_id, ME, resume_step=4, flush_steps=3, flush_seconds=3600)
    assert steps_in_db(sessions, job_id) == [1, 2, 3, 4]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert (job.current_step, job.examples_scored, job.latest_loss) == (4, 16, 14.0)
    for step in range(5, 9):
        resumed.log_step(metrics(step, loss=20.0 + step))
    resumed.log_step(metrics(8, loss=30.0))  # the same step twice (e.g. logged again after a flush): kept once
    resumed.flush()
    assert steps_in_db(sessions, job_id) == list(range(1, 9))
    with sessions() as session:
        losses = dict(
            session.execute(select(StepMetric.step, StepMetric.loss).where(StepMetric.job_id == job_id)).all()
        )
        assert losses[4] == 14.0 and losses[5] == 25.0 and losses[8] == 30.0
        per_step = session.execute(
            select(Selection.step, func.count()).where(Selection.job_id == job_id).group_by(Selection.step)
        ).all()
        assert dict(per_step) == {s: 4 for s in range(1, 9)}
        assert session.scalars(select(Checkpoint.step).where(Checkpoint.job_id == job_id)).all() == [4]
        job = session.get(Job, job_id)
        assert job.current_step == 8 and job.examples_scored == 32 and job.examples_trained == 8


def test_ownership_fences_every_write(sessions, make_job):
    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=100, flush_seconds=3600)
    logger.log_step(metrics(1))
    with sessions.begin() as session:  # re-queued and claimed by someone else meanwhile
        session.execute(update(Job).where(Job.id == job_id).values(worker_id="host:2:other"))
    assert logger.should_stop() is True and logger.lost
    logger.flush()
    logger.log_step(metrics(2))
    logger.log_event("x", "should not appear")
    assert steps_in_db(sessions, job_id) == []
    with sessions() as session:
        assert session.get(Job, job_id).current_step == 0
    # And a stale logger cannot wipe the new owner's rows on "resume".
    DbLogger(sessions, job_id, ME, resume_step=0)
    assert steps_in_db(sessions, job_id) == []


def test_should_stop_sees_cancel_and_shutdown(sessions, make_job):
    import threading

    job_id = running(sessions, make_job)
    stop = threading.Event()
    logger = DbLogger(sessions, job_id, ME, lease=JobLease(sessions, job_id, ME, shutdown=stop))
    assert logger.should_stop() is False
    stop.set()
    assert logger.should_stop() is True
    other = DbLogger(sessions, job_id, ME)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert other.should_stop() is True and not other.lost
    logger.close()
    other.close()


def test_non_finite_numbers_are_stored_as_null(sessions, make_job):
    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=1)
    m = metrics(1, loss=math.nan)
    m["grad_norm"] = math.inf
    m["stats"]["candidates"]["utility"]["std"] = math.nan
    m["selections"][0]["score"] = -math.inf
    logger.log_step(m)
    logger.flush()
    with sessions() as session:
        row = session.get(StepMetric, (job_id, 1))
        assert row.loss is None and row.grad_norm is None and row.stats["candidates"]["utility"]["std"] is None
        assert session.get(Selection, (job_id, 1, 0)).score is None


def test_metrics_are_stored_before_a_checkpoint_can_exist(sessions, make_job):
    """log_step of a checkpoint step returns only once every step up to it is in the database."""
    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=100, flush_seconds=3600, checkpoint_every=4)
    for step in range(1, 4):
        logger.log_step(metrics(step))
    assert steps_in_db(sessions, job_id) == []
    logger.log_step(metrics(4))
    assert steps_in_db(sessions, job_id) == [1, 2, 3, 4]
    for step in range(5, 10):
        logger.log_step(metrics(step))
    assert steps_in_db(sessions, job_id) == [1, 2, 3, 4, 5, 6, 7, 8]
    logger.log_step(metrics(10))  # the last step (total_steps 10) always gets a checkpoint
    assert steps_in_db(sessions, job_id) == list(range(1, 11))
    logger.close()


def test_should_stop_reads_on_the_lease_thread(sessions, make_job, settings):
    """After its first call, should_stop costs the training thread no query; a cancel arrives within a poll."""
    import threading
    import time

    job_id = running(sessions, make_job)
    lease = JobLease(sessions, job_id, ME, poll_seconds=0.05)
    logger = DbLogger(sessions, job_id, ME, lease=lease)
    assert logger.should_stop() is False  # reads synchronously once, then leaves it to the lease's thread
    lease.start()
    training_thread = threading.get_ident()
    queries_here = []

    def count(*_args, **_kwargs):
        if threading.get_ident() == training_thread:
            queries_here.append(1)

    engine = get_engine(settings.sqlalchemy_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(50):
            assert logger.should_stop() is False
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
        queries_here.clear()
        start = time.monotonic()
        while not logger.should_stop():
            assert time.monotonic() - start < 5, "the watcher never saw the cancellation"
            time.sleep(0.01)
        assert queries_here == [] and not logger.lost
    finally:
        event.remove(engine, "before_cursor_execute", count)
        logger.close()
        lease.stop()


def test_events_and_checkpoints_follow_their_steps_in_order(sessions, make_job):
    from api.models import JobEvent

    job_id = running(sessions, make_job)
    logger = DbLogger(sessions, job_id, ME, flush_steps=100, flush_seconds=3600)
    logger.log_event("started", "go")
    logger.log_step(metrics(1))
    logger.log_checkpoint(1, "/x/step-00000001", {"loss": 1.0})
    logger.log_event("eval", "evaluated")
    logger.close()
    with sessions() as session:
        types = session.scalars(select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        assert types == ["started", "checkpoint", "eval"]
        assert session.scalars(select(Checkpoint.path).where(Checkpoint.job_id == job_id)).all() == ["/x/step-00000001"]
    assert steps_in_db(sessions, job_id) == [1]
