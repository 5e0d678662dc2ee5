"""A queued job whose message was lost is sent again by the recovery sweep: at most once per
UDS_REDISPATCH_AFTER_SECONDS however many sweepers run, never for a job that is not queued, and a failed send is
tried again at the next sweep. (End to end with Redis and a real worker: tests/reliability/test_lost_message.py.)"""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select

from api.models import Job, JobEvent, utcnow
from tests.utils.factories import set_job
from worker.recovery import RecoveryLoop, recover_jobs, redispatch_queued


def dispatched_at(sessions, job_id):
    with sessions() as session:
        return session.scalar(select(Job.dispatched_at).where(Job.id == job_id))


def sweep(settings, mine) -> list[str]:
    """One sweep; the ids it sent among `mine` (the session's database holds other tests' queued jobs too)."""
    sent: list[str] = []
    redispatch_queued(settings, lambda job_id, _devices: sent.append(job_id))
    return [job_id for job_id in sent if job_id in mine]


def test_sent_once_per_period_and_only_while_queued(sessions, make_job, settings):
    period = settings.redispatch_after_seconds
    never_sent = make_job()  # dispatched_at NULL: a send that failed at creation
    recent = make_job()
    set_job(sessions, recent, dispatched_at=utcnow())
    long_ago = utcnow() - dt.timedelta(seconds=period + 5)
    overdue = make_job()
    set_job(sessions, overdue, dispatched_at=long_ago)
    others = {status: make_job(status=status) for status in ("running", "succeeded", "cancelled", "failed")}
    for job_id in others.values():
        set_job(sessions, job_id, dispatched_at=None)
    mine = {never_sent, recent, overdue, *others.values()}

    assert sorted(sweep(settings, mine)) == sorted([never_sent, overdue])
    assert dispatched_at(sessions, overdue) > long_ago and dispatched_at(sessions, never_sent) is not None
    for _ in range(3):  # no flood: the next sweeps, within the period, send nothing
        assert sweep(settings, mine) == []
    # A period later, still queued (waiting behind busy workers, or lost again): one more message each.
    for job_id in (never_sent, recent, overdue):
        set_job(sessions, job_id, dispatched_at=long_ago)
    assert sorted(sweep(settings, mine)) == sorted([never_sent, recent, overdue])
    with sessions() as session:
        events = session.scalars(
            select(JobEvent.message).where(JobEvent.job_id == overdue, JobEvent.type == "dispatch")
        ).all()
    assert len(events) == 2 and "sent to the workers again" in events[0]


def test_concurrent_sweepers_send_each_job_once(sessions, make_job, settings):
    jobs = {make_job() for _ in range(4)}
    sent: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def record(job_id, devices=1):
        with lock:
            sent.append(job_id)

    def sweeper():
        barrier.wait()
        redispatch_queued(settings, record)

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(j for j in sent if j in jobs) == sorted(jobs)  # each exactly once


def test_a_failed_send_is_tried_again_at_the_next_sweep(sessions, make_job, settings):
    job_id = make_job()
    calls: list[str] = []

    def broker_down(sent_id, devices=1):
        calls.append(sent_id)
        raise ConnectionError("broker down")

    redispatch_queued(settings, broker_down)
    assert len(calls) == 1  # the first failure ends the sweep: the broker is down for every job
    assert dispatched_at(sessions, job_id) is None  # the stamp was undone
    assert job_id in sweep(settings, {job_id})


def test_a_requeued_lost_job_is_sent_once_not_twice(sessions, make_job, settings):
    """recover_jobs sends a job it re-queues and stamps it, so the same sweep's redispatch leaves it alone."""
    job_id = make_job(status="running")
    set_job(
        sessions,
        job_id,
        worker_id="elsewhere:7:beef",
        dispatched_at=None,
        heartbeat_at=utcnow() - dt.timedelta(seconds=settings.stale_after_seconds * 2),
    )
    requeued: list[str] = []
    assert job_id in recover_jobs(settings, lambda job_id, _devices: requeued.append(job_id)) and job_id in requeued
    assert sweep(settings, {job_id}) == []


def test_the_loop_sweeps_at_least_every_half_period(settings):
    fast = settings.model_copy(update={"redispatch_after_seconds": 0.2, "stale_after_seconds": 60})
    sent: list[str] = []
    loop = RecoveryLoop(fast, lambda job_id, _devices: sent.append(job_id))
    waits: list[float] = []
    loop.done.wait = lambda timeout: waits.append(timeout) or len(waits) >= 2  # type: ignore[method-assign]
    loop.run()
    assert waits == [0.1, 0.1]
