"""JobLease: one thread keeps the job's heartbeat, reads its cancel flag and notices when the job was taken away."""

from __future__ import annotations

import threading
import time

from api.models import utcnow
from tests.utils.factories import job_row, set_job
from worker.lease import JobLease

ME = "host:1:me"


def running(sessions, make_job) -> str:
    job_id = make_job()
    set_job(sessions, job_id, status="running", worker_id=ME, heartbeat_at=utcnow())
    return job_id


def eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_one_thread_renews_and_sees_cancel(sessions, make_job):
    job_id = running(sessions, make_job)
    before = job_row(sessions, job_id).heartbeat_at
    lease = JobLease(sessions, job_id, ME, heartbeat_seconds=0.1, poll_seconds=0.02).start()
    try:
        assert eventually(lambda: job_row(sessions, job_id).heartbeat_at > before), "no heartbeat"
        assert lease.should_stop() is False
        set_job(sessions, job_id, cancel_requested=True)
        assert eventually(lease.should_stop), "the cancel was not seen"
        assert not lease.lost  # cancelled, still ours: the runner records `cancelled`
        assert [t for t in threading.enumerate() if t.name == f"lease-{job_id}"] != []
    finally:
        lease.stop()
    assert [t for t in threading.enumerate() if t.name == f"lease-{job_id}"] == []


def test_a_taken_job_is_lost_and_never_beaten_again(sessions, make_job):
    job_id = running(sessions, make_job)
    lease = JobLease(sessions, job_id, ME, heartbeat_seconds=0.05, poll_seconds=0.02).start()
    try:
        set_job(sessions, job_id, worker_id="host:2:other", heartbeat_at=None)  # re-queued and claimed elsewhere
        assert eventually(lambda: lease.lost), "the lease never noticed"
        assert lease.should_stop() is True
        time.sleep(0.2)
        assert job_row(sessions, job_id).heartbeat_at is None  # the new owner's row is left alone
    finally:
        lease.stop()


def test_renew_is_fenced_by_ownership(sessions, make_job):
    job_id = running(sessions, make_job)
    lease = JobLease(sessions, job_id, ME)
    lease.renew()
    assert not lease.lost
    set_job(sessions, job_id, status="queued", worker_id=None)
    lease.renew()
    assert lease.lost and lease.should_stop()


def test_shutdown_stops_without_losing_the_job(sessions, make_job):
    job_id = running(sessions, make_job)
    shutdown = threading.Event()
    lease = JobLease(sessions, job_id, ME, shutdown=shutdown)
    assert lease.should_stop() is False
    shutdown.set()
    assert lease.should_stop() is True and not lease.lost
