"""Races, each with one defined outcome (SQLite and Postgres):

- a worker vanishes and never returns: its job is taken over exactly once, however many sweepers and workers
  race for it, and the vanished owner can write nothing afterwards;
- two workers receive the same job id at once: one trains it, the other returns without touching it;
- cancel during the first step: the job stops after that step, `cancelled`, its one step recorded, no adapter;
- cancel racing a worker's claim: either cancelled before it started, or it runs and ends `cancelled`;
- cancel racing success: either the cancel is refused (400) and the job succeeded, or it is cancelled
  without an adapter; never both;
- deleting a dataset while a job is being created on it: either the job exists and the delete was refused
  (`dataset_in_use`), or the dataset is gone and the job creation was a 404; never a job without its dataset.
The API-level single-request cases (cancel twice, cancel after success) are in tests/api/test_jobs.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.models import Dataset, Job, JobEvent, StepMetric, utcnow
from tests.utils.factories import job_row, set_job
from worker.recovery import recover_jobs
from worker.runner import _transition, claim, run_job


def together(*calls):
    """Run the calls in threads released at the same instant; return their results in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)
    errors = []

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def status_events(sessions, job_id) -> list[str]:
    with sessions() as session:
        events = session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.type == "status").order_by(JobEvent.id)
        ).all()
    return [e.data["status"] for e in events]


@pytest.mark.parametrize("round_", range(3))
def test_a_vanished_worker_is_taken_over_exactly_once(sessions, make_job, settings, round_):
    job_id = make_job(status="running")
    gone = "elsewhere:7:beef"  # another host: only its heartbeat can say it is gone
    set_job(
        sessions,
        job_id,
        worker_id=gone,
        attempts=1,
        current_step=4,
        heartbeat_at=utcnow() - dt.timedelta(seconds=settings.stale_after_seconds + 5),
    )
    dispatched = []
    stale = settings.stale_after_seconds
    results = together(
        lambda: recover_jobs(settings, lambda job, _devices: dispatched.append(job)),
        lambda: recover_jobs(settings, lambda job, _devices: dispatched.append(job)),
        lambda: claim(sessions, job_id, "w1:1:aaaa", stale),
        lambda: claim(sessions, job_id, "w2:2:bbbb", stale),
    )
    claimed = [r for r in results[2:] if r is not None]
    if not claimed:  # the sweep re-queued it before either claim looked: the re-dispatched task claims it
        assert dispatched == [job_id] and job_row(sessions, job_id).status == "queued"
        assert claim(sessions, job_id, "w3:3:cccc", stale) is not None
    job = job_row(sessions, job_id)
    assert job.status == "running" and job.worker_id != gone and job.attempts == 2
    assert len(dispatched) <= 1
    assert status_events(sessions, job_id).count("running") == 1  # one takeover
    assert status_events(sessions, job_id).count("queued") == len(dispatched)

    # The vanished owner comes back after all: it can finish nothing and its heartbeat matches nothing.
    assert _transition(sessions, job_id, gone, "succeeded", "zombie", finished_at=utcnow()) is False
    assert job_row(sessions, job_id).status == "running"


@pytest.mark.slow
@pytest.mark.parametrize(
    "status, values",
    [("succeeded", {"finished_at": utcnow()}), ("queued", {"worker_id": None, "heartbeat_at": None})],
)
def test_a_transition_retried_after_its_commit_landed_counts_as_done(sessions, make_job, status, values):
    # What a retry sees when the first commit landed but its acknowledgement was lost: the row as it left it.
    job_id = make_job(status="running")
    set_job(sessions, job_id, worker_id="w:1:ack", heartbeat_at=utcnow())
    assert _transition(sessions, job_id, "w:1:ack", status, "first", **values) is True
    assert _transition(sessions, job_id, "w:1:ack", status, "retry", **values) is True
    assert job_row(sessions, job_id).status == status and status_events(sessions, job_id).count(status) == 1


def test_two_workers_receiving_the_same_job_train_it_once(sessions, make_job, tiny_in_data_dir):
    settings = tiny_in_data_dir
    job_id = make_job(max_steps=3, checkpoint_every=3)
    results = together(lambda: run_job(job_id, "a:1:aaaa", settings), lambda: run_job(job_id, "b:2:bbbb", settings))
    assert sorted(results, key=str) == [None, "succeeded"], results
    job = job_row(sessions, job_id)
    assert job.status == "succeeded" and job.attempts == 1
    with sessions() as session:
        steps = session.scalars(
            select(StepMetric.step).where(StepMetric.job_id == job_id).order_by(StepMetric.step)
        ).all()
    assert steps == [1, 2, 3]
    assert status_events(sessions, job_id).count("running") == 1


@pytest.mark.slow
def test_cancel_during_the_first_step(sessions, make_job, tiny_in_data_dir, monkeypatch):
    import uds.trainer

    settings = tiny_in_data_dir
    job_id = make_job(max_steps=5, checkpoint_every=5)
    real_step = uds.trainer._step

    def step_with_cancel(run, step):
        if step == 1:  # the user's cancel lands while step 1 computes
            set_job(sessions, job_id, cancel_requested=True)
            # The logger's watcher reads the flag every 0.25 s; a uds-tiny step can be shorter than that, so
            # step 1 lasts a few watcher periods, as any real model's step does (otherwise the test is a race).
            time.sleep(1.0)
        return real_step(run, step)

    monkeypatch.setattr(uds.trainer, "_step", step_with_cancel)
    assert run_job(job_id, "me:1:cafe", settings) == "cancelled"
    job = job_row(sessions, job_id)
    assert (job.status, job.current_step, job.adapter_path, bool(job.finished_at)) == ("cancelled", 1, None, True)
    with sessions() as session:
        assert session.scalars(select(StepMetric.step).where(StepMetric.job_id == job_id)).all() == [1]
    assert status_events(sessions, job_id)[-1] == "cancelled"


def test_cancel_racing_the_claim(sessions, make_job, settings):
    from api.services.jobs import cancel_job

    for i in range(4):
        job_id = make_job()

        def cancel():
            with sessions() as session:
                return cancel_job(session, session.get(Job, job_id)).status  # noqa: B023 (together() joins both before the loop moves on)

        _, claimed = together(cancel, lambda: claim(sessions, job_id, f"w:{i}:race", settings.stale_after_seconds))  # noqa: B023 (together() joins both before the loop moves on)
        job = job_row(sessions, job_id)
        if claimed is None:
            assert job.status == "cancelled" and job.attempts == 0  # cancelled before it started
        else:
            # The worker won: the flag is set, and run_job's first check ends it cancelled without training.
            assert job.status == "running" and job.cancel_requested is True
            set_job(sessions, job_id, status="queued", worker_id=None)  # hand it back to run_job's own claim
            assert run_job(job_id, "w:9:next", settings) == "cancelled"
            assert job_row(sessions, job_id).current_step == 0


def test_cancel_racing_success(sessions, make_job, settings):
    from api.errors import APIError
    from api.services.jobs import cancel_job

    for i in range(4):
        job_id = make_job(status="running")
        owner = f"w:{i}:done"
        set_job(sessions, job_id, worker_id=owner, heartbeat_at=utcnow())

        def cancel():
            with sessions() as session:
                try:
                    return cancel_job(session, session.get(Job, job_id)).status  # noqa: B023 (together() joins both before the loop moves on)
                except APIError as exc:
                    return exc.code

        def succeed(job_id=job_id, owner=owner):
            return _transition(
                sessions, job_id, owner, "succeeded", "done", finished_at=utcnow(), adapter_path="jobs/x/adapter.tar.gz"
            )

        outcome, finished = together(cancel, succeed)
        job = job_row(sessions, job_id)
        assert finished is True and job.status == "succeeded" and job.adapter_path  # success is never undone
        # The cancel either came first (flagged, too late to matter) or after (refused as not cancellable).
        assert outcome in ("running", "job_not_cancellable"), outcome


def test_deleting_a_dataset_while_a_job_is_created_on_it(sessions, settings, database_url):
    from api.main import create_app
    from tests.utils.factories import bearer, chat_rows, jsonl, new_tenant_key, upload

    api_settings = settings.model_copy(update={"require_auth": True, "min_examples": 2, "broker_url": None})
    _, key = new_tenant_key(database_url)
    with TestClient(create_app(api_settings)) as client:
        for _ in range(4):
            dataset = upload(client, key, jsonl(chat_rows(4))).json()
            created, deleted = together(
                lambda dataset=dataset: client.post(
                    "/api/v1/jobs", headers=bearer(key), json={"dataset_id": dataset["id"], "model": "uds-tiny"}
                ),
                lambda dataset=dataset: client.delete(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key)),
            )
            with sessions() as session:
                exists = session.get(Dataset, dataset["id"]) is not None
                jobs = session.scalar(select(func.count()).select_from(Job).where(Job.dataset_id == dataset["id"]))
            if created.status_code == 201:
                assert deleted.status_code == 400 and deleted.json()["error"]["code"] == "dataset_in_use"
                assert exists and jobs == 1
            else:
                assert created.status_code == 404 and deleted.status_code == 200, (created.text, deleted.text)
                assert not exists and jobs == 0
