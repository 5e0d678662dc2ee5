"""A job is claimed by exactly one worker; a redelivered or duplicate task never trains twice."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading

import pytest
from sqlalchemy import select

from api.models import JobEvent, utcnow
from tests.utils.factories import job_row, set_job
from worker.identity import owner_is_dead, worker_id
from worker.recovery import recover_jobs
from worker.runner import claim, run_job


def test_claim_queued_once(sessions, make_job, settings):
    job_id = make_job()
    assert claim(sessions, job_id, "host-a:1:aaaa", settings.stale_after_seconds) is not None
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.attempts) == ("running", "host-a:1:aaaa", 1)
    assert job.started_at is not None and job.heartbeat_at is not None
    # Another worker (a redelivered message) finds it running with a live heartbeat: not claimable.
    assert claim(sessions, job_id, "host-b:2:bbbb", settings.stale_after_seconds) is None
    assert job_row(sessions, job_id).attempts == 1


def test_run_job_does_nothing_for_running_or_finished_jobs(sessions, make_job, settings):
    running = make_job(status="running")
    set_job(sessions, running, worker_id="elsewhere:7:beef", heartbeat_at=utcnow())
    assert run_job(running, "host-b:2:bbbb", settings) is None
    after = job_row(sessions, running)
    assert (after.status, after.worker_id, after.attempts) == ("running", "elsewhere:7:beef", 0)
    for status in ("succeeded", "failed", "cancelled"):
        done = make_job(status=status)
        assert run_job(done, "host-b:2:bbbb", settings) is None
        assert job_row(sessions, done).status == status and job_row(sessions, done).attempts == 0
    assert run_job("ftjob-does-not-exist", "w", settings) is None


def test_stale_or_dead_owner_can_be_taken_over(sessions, make_job, settings):
    stale = make_job(status="running")
    set_job(
        sessions,
        stale,
        worker_id="elsewhere:7:beef",
        attempts=1,
        heartbeat_at=utcnow() - dt.timedelta(seconds=settings.stale_after_seconds + 1),
    )
    assert claim(sessions, stale, "me:1:cafe", settings.stale_after_seconds) is not None
    assert job_row(sessions, stale).attempts == 2

    # Same host, process gone: no need to wait for the heartbeat to go stale.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_owner = worker_id().rsplit(":", 2)[0] + f":{gone.pid}:0000"
    assert owner_is_dead(dead_owner) and not owner_is_dead(worker_id()) and not owner_is_dead("elsewhere:7:beef")
    dead = make_job(status="running")
    set_job(sessions, dead, worker_id=dead_owner, heartbeat_at=utcnow())
    assert claim(sessions, dead, "me:1:cafe", settings.stale_after_seconds) is not None


def test_concurrent_claims_have_one_winner(sessions, make_job, settings):
    job_id = make_job()
    barrier = threading.Barrier(6)
    winners = []

    def contend(i):
        barrier.wait()
        if claim(sessions, job_id, f"host-{i}:{i}:0000", settings.stale_after_seconds) is not None:
            winners.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert job_row(sessions, job_id).attempts == 1


def test_recovery_requeues_lost_jobs_only(sessions, make_job, settings):
    old = utcnow() - dt.timedelta(seconds=settings.stale_after_seconds * 2)
    lost = make_job(status="running")
    set_job(sessions, lost, worker_id="elsewhere:7:beef", heartbeat_at=old, current_step=12)
    alive = make_job(status="running")
    set_job(sessions, alive, worker_id="elsewhere:8:beef", heartbeat_at=utcnow())
    cancelling = make_job(status="running")
    set_job(sessions, cancelling, worker_id="elsewhere:9:beef", heartbeat_at=old, cancel_requested=True)
    dispatched = []
    requeued = recover_jobs(settings, lambda job_id, _devices: dispatched.append(job_id))
    assert lost in requeued and dispatched == requeued and alive not in requeued
    assert job_row(sessions, lost).status == "queued" and job_row(sessions, lost).worker_id is None
    assert job_row(sessions, alive).status == "running"
    assert job_row(sessions, cancelling).status == "cancelled"
    with sessions() as session:
        message = session.scalars(select(JobEvent.message).where(JobEvent.job_id == lost)).all()[-1]
    assert "step 12" in message and "re-queued" in message
    assert lost not in recover_jobs(settings)  # a second sweep finds nothing more to do


@pytest.mark.parametrize("missing", ["row", "file"])
def test_missing_dataset_fails_with_a_code(sessions, make_job, settings, missing):
    from api.models import Dataset

    job_id = make_job()
    with sessions.begin() as session:
        dataset = session.get(Dataset, job_row(sessions, job_id).dataset_id)
        if missing == "row":
            session.delete(dataset)
        else:
            settings.resolve(dataset.storage_path).unlink()
    assert run_job(job_id, "me:1:cafe", settings) == "failed"
    job = job_row(sessions, job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.error_code == "dataset_missing"
    assert job.error_message
