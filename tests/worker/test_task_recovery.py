"""Exports and try-it generations left `running` by a dead worker: re-queued by the sweep, failed when lost twice;
the embedded TaskWorker stops at shutdown and gives a running generation back to the queue."""

from __future__ import annotations

import datetime as dt
import secrets
import socket
import threading

import pytest
from sqlalchemy import delete

import worker.job_tasks as job_tasks
from api.models import Job, JobTask, utcnow
from worker.identity import worker_id
from worker.task_recovery import recover_tasks

DEAD = f"{socket.gethostname()}:999999999:dead"  # this host, a pid that cannot exist: provably gone
PARAMS = {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 4, "temperature": 0.0}


@pytest.fixture
def add_task(sessions, make_job):
    job_id = make_job(status="succeeded")
    made = []

    def add(status="running", owner=DEAD, attempts=1, started_ago=1.0, cancel=False, kind="generate") -> str:
        task_id = "gen-" + secrets.token_hex(12)
        with sessions.begin() as session:
            tenant = session.get(Job, job_id).tenant_id
            session.add(
                JobTask(
                    id=task_id,
                    tenant_id=tenant,
                    job_id=job_id,
                    kind=kind,
                    status=status,
                    params=PARAMS if kind == "generate" else {"kind": "merged"},
                    cancel_requested=cancel,
                    worker_id=owner,
                    attempts=attempts,
                    created_at=utcnow(),
                    started_at=utcnow() - dt.timedelta(seconds=started_ago),
                )
            )
        made.append(task_id)
        return task_id

    yield add
    with sessions.begin() as session:  # no task of ours is left for a later test's sweep
        session.execute(delete(JobTask).where(JobTask.id.in_(made)))


def state(sessions, task_id):
    with sessions() as session:
        task = session.get(JobTask, task_id)
        return task.status, task.worker_id, task.error_code


def test_a_task_of_a_dead_worker_is_requeued_once_then_failed(settings, sessions, add_task):
    first = add_task(attempts=1)
    second = add_task(attempts=2, kind="export")
    cancelled = add_task(cancel=True)
    alive = add_task(owner=worker_id())  # this very process: alive, and not stale
    out = recover_tasks(settings)
    assert (set(out["queued"]), set(out["failed"]), set(out["cancelled"])) >= ({first}, {second}, {cancelled})
    assert state(sessions, first) == ("queued", None, None)
    assert state(sessions, second) == ("failed", None, "worker_lost")
    assert state(sessions, cancelled)[0] == "cancelled"
    assert state(sessions, alive) == ("running", worker_id(), None)
    assert recover_tasks(settings)["queued"] == []  # a second sweeper finds nothing left to do


def test_a_task_running_too_long_on_another_host_is_requeued(settings, sessions, add_task):
    elsewhere = "other-host:1:abcd"  # liveness of another host cannot be checked: only its age counts
    fresh = add_task(owner=elsewhere, started_ago=10)
    old = add_task(owner=elsewhere, started_ago=settings.task_stale_after_seconds + 60)
    out = recover_tasks(settings)
    assert old in out["queued"] and fresh not in out["queued"]
    assert state(sessions, fresh)[0] == "running"


def test_claims_are_counted(settings, sessions, add_task, monkeypatch):
    task_id = add_task(status="queued", owner=None, attempts=0)
    monkeypatch.setitem(job_tasks.RUNNERS, "generate", lambda *args: {"result": {}})
    assert job_tasks.run_task(task_id, "w:count", settings) == "succeeded"
    with sessions() as session:
        assert session.get(JobTask, task_id).attempts == 1


def test_the_task_worker_stops_and_requeues_the_generation_it_was_running(settings, sessions, add_task, monkeypatch):
    started = threading.Event()

    def generation_until_shutdown(settings, sessions, task, job, stop_event):
        started.set()
        assert stop_event.wait(30)  # a real generation stops at its next token (should_stop sees the event)
        return {"result": {"fine_tuned": {"text": "partial", "tokens": 1, "seconds": 0.1}}}

    monkeypatch.setitem(job_tasks.RUNNERS, "generate", generation_until_shutdown)
    task_id = add_task(status="queued", owner=None, attempts=0)
    thread = job_tasks.TaskWorker(settings)
    thread.start()
    assert started.wait(30)
    assert state(sessions, task_id)[0] == "running"
    thread.stop(timeout=10)
    assert not thread.is_alive()
    with sessions() as session:
        task = session.get(JobTask, task_id)
        assert (task.status, task.worker_id, task.result) == ("queued", None, None)  # the next start answers it


def test_the_generation_stop_check_sees_shutdown_at_once(sessions, add_task):
    stop = threading.Event()
    check = job_tasks._cancel_check(sessions, add_task(), stop)
    assert check() is False
    stop.set()
    assert check() is True


def test_one_tenants_generation_does_not_hold_up_anothers(settings, sessions, add_task, make_job, monkeypatch):
    """Tenant A's generation is held running (as a long prefill would be); tenant B's, queued after A's second,
    still runs: the embedded worker runs tasks in parallel slots, one per tenant, tenants in turn."""
    release, holding = threading.Event(), threading.Event()
    ran: list[str] = []

    def generation(settings, sessions, task, job, stop_event):
        ran.append(task.id)
        if task.id == held:
            holding.set()
            assert release.wait(30)
        return {"result": {}}

    monkeypatch.setitem(job_tasks.RUNNERS, "generate", generation)
    held, second_of_a = add_task(status="queued", owner=None, attempts=0), add_task(status="queued", owner=None)
    other_tenant_job = make_job(status="succeeded")
    with sessions.begin() as session:  # make_job's tenant is shared; give this job a tenant of its own
        from api.auth import get_or_create_tenant

        other = get_or_create_tenant(session, "worker-tests-other")
        session.get(Job, other_tenant_job).tenant_id = other.id
        session.add(
            JobTask(
                id=(of_b := "gen-" + secrets.token_hex(12)),
                tenant_id=other.id,
                job_id=other_tenant_job,
                kind="generate",
                status="queued",
                params=PARAMS,
                cancel_requested=False,
                created_at=utcnow(),
            )
        )
    thread = job_tasks.TaskWorker(settings.model_copy(update={"task_slots": 2}))
    thread.start()
    try:
        assert holding.wait(30)
        deadline = dt.datetime.now() + dt.timedelta(seconds=60)
        while state(sessions, of_b)[0] != "succeeded" and dt.datetime.now() < deadline:
            thread.wakeup.wait(0.1)
        assert state(sessions, of_b)[0] == "succeeded"
        assert state(sessions, held)[0] == "running" and state(sessions, second_of_a)[0] == "queued"
    finally:
        release.set()
        thread.stop(timeout=30)
        with sessions.begin() as session:
            session.execute(delete(JobTask).where(JobTask.id == of_b))
    assert ran[:2] == [held, of_b] or ran[:2] == [of_b, held]
