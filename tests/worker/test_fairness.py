"""Fair turns across tenants and the run-time limit: one tenant's long job cannot keep another
tenant's job queued. The embedded worker's order is checked with the first job held by a hook, not by timing."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest

from api.auth import get_or_create_tenant
from api.models import utcnow
from tests.utils.factories import job_row, set_job
from worker import embedded
from worker.fairness import QueuedJob, next_job_order
from worker.recovery import redispatch_queued
from worker.runner import claim, run_job

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def queued(*specs) -> list[QueuedJob]:
    return [QueuedJob(job_id, tenant, T0 + dt.timedelta(seconds=i)) for i, (job_id, tenant) in enumerate(specs)]


def test_round_robin_by_tenant_least_recently_served_first():
    jobs = queued(("a1", 1), ("a2", 1), ("a3", 1), ("b1", 2), ("c1", 3), ("b2", 2))
    assert next_job_order(jobs, {}) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert next_job_order(jobs, {1: T0 + dt.timedelta(hours=1)}) == ["b1", "c1", "a1", "b2", "a2", "a3"]
    assert next_job_order(jobs, {}, running={1: 2, 2: 1}, cap=2) == ["b1", "c1"]
    assert next_job_order([], {}) == []


@pytest.fixture
def tenant_job(make_job, sessions):
    """make_job for a named tenant: tenant_job("b") -> a queued job of tenant b (tenants new to each test, so no
    earlier test's jobs count as their past turns)."""
    suffix = uuid.uuid4().hex[:8]

    def make(tenant: str, **config) -> str:
        job_id = make_job(**config)
        with sessions.begin() as session:
            tenant_id = get_or_create_tenant(session, f"fairness-{tenant}-{suffix}").id
        set_job(sessions, job_id, tenant_id=tenant_id)
        return job_id

    return make


def test_embedded_worker_runs_another_tenants_job_before_the_first_tenants_next(
    settings, sessions, tenant_job, monkeypatch
):
    long_job, a2, a3 = tenant_job("a"), tenant_job("a"), tenant_job("a")
    started: list[str] = []
    holding, release, all_done = threading.Event(), threading.Event(), threading.Event()

    ours = {long_job, a2, a3}

    def fake_run_job(job_id, worker_id, settings, stop_event=None):
        if job_id not in ours and not job_id_is_b1(job_id):
            # A job another test left queued in this database: not part of this order, out of the way at once.
            set_job(sessions, job_id, status="cancelled", finished_at=utcnow())
            return "cancelled"
        set_job(sessions, job_id, status="running", started_at=utcnow(), heartbeat_at=utcnow(), worker_id=worker_id)
        started.append(job_id)
        if job_id == long_job:
            holding.set()
            release.wait(30)  # tenant a's long job holds the only worker until the test has queued b's
        set_job(sessions, job_id, status="succeeded", finished_at=utcnow())
        if len(started) == 4:
            all_done.set()
        return "succeeded"

    b_jobs: list[str] = []

    def job_id_is_b1(job_id: str) -> bool:
        return job_id in b_jobs

    monkeypatch.setattr(embedded, "run_job", fake_run_job)
    worker = embedded.EmbeddedWorker(settings)
    worker.start()
    try:
        assert holding.wait(30)
        b1 = tenant_job("b")  # submitted after a2 and a3, while a's first job runs
        b_jobs.append(b1)
        release.set()
        assert all_done.wait(30)
    finally:
        release.set()
        worker.stop(10)
    assert started == [long_job, b1, a2, a3]


def test_a_tenant_at_its_running_cap_waits_while_another_tenant_waits(settings, sessions, tenant_job):
    running = [tenant_job("a"), tenant_job("a")]
    for job_id in running:
        set_job(sessions, job_id, status="running", heartbeat_at=utcnow(), worker_id="w:1:0")
    third = tenant_job("a")
    set_job(sessions, third, dispatched_at=utcnow())
    other = tenant_job("b")
    assert claim(sessions, third, "w:2:0", settings.stale_after_seconds, running_cap=2) is None
    after = job_row(sessions, third)
    assert after.status == "queued" and after.dispatched_at is None  # the next sweep sends it again
    assert claim(sessions, other, "w:2:0", settings.stale_after_seconds, running_cap=2) is not None
    set_job(sessions, other, status="cancelled")
    # Nobody else waiting: the cap does not leave a worker idle.
    assert claim(sessions, third, "w:2:0", settings.stale_after_seconds, running_cap=2) is not None


def test_the_sweep_sends_in_turns_and_skips_tenants_at_their_cap(settings, sessions, tenant_job):
    a = [tenant_job("a") for _ in range(3)]
    b = [tenant_job("b") for _ in range(2)]
    sent: list[str] = []
    ours = set(a + b)  # other tests may have left queued jobs in this database; the sweep sends those too
    redispatch_queued(
        settings.model_copy(update={"max_running_jobs_per_tenant": 0}), lambda job_id, _devices: sent.append(job_id)
    )
    assert [job for job in sent if job in ours] == [a[0], b[0], a[1], b[1], a[2]]

    for job_id in a + b:
        set_job(sessions, job_id, dispatched_at=None)
    set_job(sessions, a[0], status="running", heartbeat_at=utcnow(), worker_id="w:1:0")
    sent.clear()
    redispatch_queued(
        settings.model_copy(update={"max_running_jobs_per_tenant": 1}), lambda job_id, _devices: sent.append(job_id)
    )
    assert [job for job in sent if job in ours] == [b[0]]


def test_a_job_past_the_run_time_limit_fails_with_a_clear_code(tiny_in_data_dir, sessions, make_job):
    settings = tiny_in_data_dir.model_copy(update={"max_job_seconds": 3600})
    job_id = make_job(max_steps=4)
    set_job(sessions, job_id, started_at=utcnow() - dt.timedelta(hours=2))  # its first attempt began 2 h ago
    assert run_job(job_id, "me:1:cafe", settings) == "failed"
    job = job_row(sessions, job_id)
    assert job.error_code == "time_limit_exceeded" and "UDS_MAX_JOB_SECONDS" in job.error_message


def test_a_job_within_the_limit_is_not_stopped(tiny_in_data_dir, sessions, make_job):
    settings = tiny_in_data_dir.model_copy(update={"max_job_seconds": 3600})
    job_id = make_job(max_steps=2, checkpoint_every=2)
    assert run_job(job_id, "me:1:cafe", settings) == "succeeded"
