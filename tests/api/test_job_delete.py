"""DELETE /api/v1/jobs/{id}: a finished job goes with every row and file of it; an unfinished one is a 409, also
when it finishes while the delete waits for its row; and the metadata filter of the native job list."""

from __future__ import annotations

import secrets
import threading

import pytest
from sqlalchemy import func, select, text

from api.db import session_factory
from api.models import (
    Checkpoint,
    Job,
    JobEvent,
    JobTask,
    ResultFile,
    Selection,
    StepMetric,
    WebhookDelivery,
    utcnow,
)
from api.services import jobs as job_service
from tests.api.test_jobs import set_job, step_metrics
from tests.utils.factories import (
    bearer,
    chat_rows,
    create_job,
    jsonl,
    new_tenant_key,
    upload,
)
from worker.db_logger import DbLogger

CHILD_TABLES = (Selection, StepMetric, JobEvent, Checkpoint, ResultFile, JobTask)


@pytest.fixture
def dataset(client, key):
    return upload(client, key, jsonl(chat_rows(20))).json()


def count_rows(settings, job_id: str) -> dict[str, int]:
    with session_factory(settings.sqlalchemy_url)() as session:
        counts = {
            m.__tablename__: session.scalar(select(func.count()).select_from(m).where(m.job_id == job_id))
            for m in (*CHILD_TABLES, WebhookDelivery)
        }
        counts["jobs"] = session.scalar(select(func.count()).select_from(Job).where(Job.id == job_id))
    return counts


def finished_job_with_everything(client, key, dataset, settings) -> dict:
    """A succeeded job as a worker leaves it: metrics, selections, a checkpoint, events, its adapter and result
    files, a finished export, and webhook deliveries (one sent, one still pending); all under jobs/<id>."""
    job = create_job(client, key, dataset["id"], metadata={"team": "a"}).json()
    set_job(settings, job["id"], status="running", worker_id="w1", heartbeat_at=utcnow())
    folder = settings.data_dir / "jobs" / job["id"]
    logger = DbLogger(session_factory(settings.sqlalchemy_url), job["id"], "w1", flush_steps=2, flush_seconds=3600)
    for step in range(1, 4):
        rows = [(step * 3 + i) % 20 for i in range(4)]
        logger.log_step(step_metrics(step, rows, {rows[0]}))
    logger.log_checkpoint(3, str(folder / "checkpoints" / "step-00000003"), {"loss": 0.5})
    logger.flush()
    (folder / "checkpoints" / "step-00000003").mkdir(parents=True)
    (folder / "checkpoints" / "step-00000003" / "state.pt").write_bytes(b"state")
    (folder / "adapter.tar.gz").write_bytes(b"archive")
    set_job(
        settings,
        job["id"],
        status="succeeded",
        finished_at=utcnow(),
        adapter_path=f"jobs/{job['id']}/adapter.tar.gz",
        adapter_bytes=7,
        adapter_sha256="0" * 64,
        fine_tuned_model=f"ft:uds-tiny:x::{job['id']}",
        current_step=3,
    )
    hook = client.post("/api/v1/webhooks", headers=bearer(key), json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.text
    files = client.get("/v1/files", headers=bearer(key)).json()["data"]  # records the OpenAI result files
    assert any(f["purpose"] == "fine-tune-results" for f in files)
    with session_factory(settings.sqlalchemy_url).begin() as session:
        tenant_id = session.get(Job, job["id"]).tenant_id
        session.add(
            JobTask(
                id="export-" + secrets.token_hex(12),
                tenant_id=tenant_id,
                job_id=job["id"],
                kind="export",
                status="succeeded",
                params={"kind": "merged"},
                cancel_requested=False,
                created_at=utcnow(),
            )
        )
        for status in ("delivered", "pending"):
            session.add(
                WebhookDelivery(
                    id="msg_" + secrets.token_hex(12),
                    webhook_id=hook.json()["id"],
                    tenant_id=tenant_id,
                    job_id=job["id"],
                    event="job.succeeded",
                    payload="{}",
                    status=status,
                    attempts=1,
                    created_at=utcnow(),
                )
            )
    return job


def test_a_finished_job_is_deleted_with_its_rows_and_folder(client, key, dataset, settings):
    job = finished_job_with_everything(client, key, dataset, settings)
    other = finished_job_with_everything(client, key, dataset, settings)
    before, other_before = count_rows(settings, job["id"]), count_rows(settings, other["id"])
    assert all(before[m.__tablename__] for m in CHILD_TABLES), before
    folder = settings.data_dir / "jobs" / job["id"]
    assert folder.is_dir()

    response = client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.json() == {"id": job["id"], "object": "job", "deleted": True}
    after = count_rows(settings, job["id"])
    # The pending delivery announces a change that happened: it is still sent; the delivered one is gone.
    assert after == {**{m.__tablename__: 0 for m in CHILD_TABLES}, "webhook_deliveries": 1, "jobs": 0}, after
    assert not folder.exists()
    for url in (f"/api/v1/jobs/{job['id']}", f"/v1/fine_tuning/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/metrics"):
        assert client.get(url, headers=bearer(key)).status_code == 404, url
    assert job["id"] not in client.get("/v1/files", headers=bearer(key)).text
    assert job["id"] not in client.get("/api/v1/models", headers=bearer(key)).text
    again = client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer(key))
    assert again.status_code == 404 and again.json()["error"]["code"] == "job_not_found"
    # The other job is untouched.
    assert count_rows(settings, other["id"]) == other_before
    assert (settings.data_dir / "jobs" / other["id"] / "adapter.tar.gz").is_file()
    assert client.get(f"/api/v1/jobs/{other['id']}/metrics", headers=bearer(key)).json()["last_step"] == 3


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_and_cancelled_jobs_are_deleted(client, key, dataset, settings, status):
    job = create_job(client, key, dataset["id"]).json()
    if status == "cancelled":
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(key)).status_code == 200
    else:
        set_job(settings, job["id"], status="failed", finished_at=utcnow(), error_code="out_of_memory")
    assert client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer(key)).status_code == 200
    assert count_rows(settings, job["id"])["jobs"] == 0


def test_an_unfinished_job_is_a_409_naming_its_status(client, key, dataset, settings):
    queued = create_job(client, key, dataset["id"]).json()
    response = client.delete(f"/api/v1/jobs/{queued['id']}", headers=bearer(key))
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert (
        error["code"] == "job_not_finished" and "queued" in error["message"] and "cancel it first" in error["message"]
    )

    set_job(settings, queued["id"], status="running", worker_id="w", heartbeat_at=utcnow())
    response = client.delete(f"/api/v1/jobs/{queued['id']}", headers=bearer(key))
    assert response.status_code == 409 and "running" in response.json()["error"]["message"]
    client.post(f"/api/v1/jobs/{queued['id']}/cancel", headers=bearer(key))  # flagged; the worker has not stopped yet
    response = client.delete(f"/api/v1/jobs/{queued['id']}", headers=bearer(key))
    assert response.status_code == 409 and "wait for it to stop" in response.json()["error"]["message"]
    assert count_rows(settings, queued["id"])["jobs"] == 1
    assert client.get(f"/api/v1/jobs/{queued['id']}", headers=bearer(key)).json()["status"] == "running"


def test_a_job_with_an_unfinished_export_is_a_409(client, key, dataset, settings):
    job = create_job(client, key, dataset["id"]).json()
    set_job(settings, job["id"], status="succeeded", finished_at=utcnow())
    export_id = "export-" + secrets.token_hex(12)
    with session_factory(settings.sqlalchemy_url).begin() as session:
        session.add(
            JobTask(
                id=export_id,
                tenant_id=session.get(Job, job["id"]).tenant_id,
                job_id=job["id"],
                kind="export",
                status="running",
                params={"kind": "merged"},
                cancel_requested=False,
                created_at=utcnow(),
            )
        )
    response = client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer(key))
    assert response.status_code == 409 and response.json()["error"]["code"] == "job_in_use"
    assert export_id in response.json()["error"]["message"]
    assert count_rows(settings, job["id"])["jobs"] == 1


def test_another_tenants_job_is_404_and_kept(client, key, dataset, settings, database_url):
    job = create_job(client, key, dataset["id"]).json()
    set_job(settings, job["id"], status="succeeded", finished_at=utcnow())
    _, other_key = new_tenant_key(database_url)
    response = client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer(other_key))
    assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
    assert count_rows(settings, job["id"])["jobs"] == 1


def test_openai_api_has_no_job_delete(client, key, dataset, settings):
    job = create_job(client, key, dataset["id"]).json()
    set_job(settings, job["id"], status="succeeded", finished_at=utcnow())
    assert client.delete(f"/v1/fine_tuning/jobs/{job['id']}", headers=bearer(key)).status_code in (404, 405)
    assert count_rows(settings, job["id"])["jobs"] == 1


def test_a_delete_waits_for_a_cancel_in_flight_and_then_deletes(client, key, dataset, settings, monkeypatch):
    """The cancel's transaction is held open (a hook in its event write) after it set `cancelled`: the delete must
    wait for it (Postgres: the row lock; SQLite: the write lock) and then delete the cancelled job, never refuse on
    the stale `queued` nor delete under the cancel."""
    job = create_job(client, key, dataset["id"]).json()
    in_cancel, release = threading.Event(), threading.Event()
    real_add_event = job_service.add_event

    def held_add_event(session, job_id, *args, **kwargs):
        real_add_event(session, job_id, *args, **kwargs)
        if threading.current_thread().name == "canceller":
            in_cancel.set()
            assert release.wait(30)

    monkeypatch.setattr(job_service, "add_event", held_add_event)
    sessions = session_factory(settings.sqlalchemy_url)
    outcome: dict = {}

    def cancel():
        with sessions() as session:
            job_service.cancel_job(session, session.get(Job, job["id"]))

    def delete():
        with sessions() as session:
            try:
                job_service.delete_job(session, settings, session.get(Job, job["id"]))
                outcome["deleted"] = True
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                outcome["error"] = exc

    canceller = threading.Thread(target=cancel, name="canceller")
    canceller.start()
    assert in_cancel.wait(30)
    deleter = threading.Thread(target=delete, name="deleter")
    deleter.start()
    if settings.sqlalchemy_url.startswith("postgresql"):
        # Deterministic: let the cancel go only once the delete is waiting for the job's row lock.
        with sessions() as session:
            for _ in range(3000):
                waiting = session.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                )
                if waiting:
                    break
                # pg_stat_activity is read once per transaction and then cached: end it, or every later read
                # repeats the first one (taken, under load, before the delete reached the lock).
                session.rollback()
                threading.Event().wait(0.01)
            assert waiting, "the delete did not wait for the cancel's row lock"
    else:
        deleter.join(0.5)  # SQLite: its UPDATE waits on the write lock (busy_timeout) whether it got there yet or not
        assert deleter.is_alive()
    release.set()
    canceller.join(30)
    deleter.join(30)
    assert outcome == {"deleted": True}, outcome
    assert count_rows(settings, job["id"]) == {
        **{m.__tablename__: 0 for m in CHILD_TABLES},
        "webhook_deliveries": 0,
        "jobs": 0,
    }


# ---- the metadata filter on the native list (shared with /v1/fine_tuning/jobs) ----------------------------------


def test_native_list_filters_by_metadata(client, key, dataset):
    metas = ({"team": "a", "run": 3}, {"team": "b"}, None, {"team": "a", "run": 4, "ok": True}, {"team": "a b/é"})
    jobs = [create_job(client, key, dataset["id"], metadata=m).json()["id"] for m in metas]

    def ids(**params):
        response = client.get("/api/v1/jobs", headers=bearer(key), params=params)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["data"]]

    assert ids(**{"metadata[team]": "a"}) == [jobs[3], jobs[0]]
    assert ids(**{"metadata[team]": "a", "metadata[run]": "3"}) == [jobs[0]]  # all must match; a number by its text
    assert ids(**{"metadata[ok]": "true"}) == [jobs[3]]
    assert ids(**{"metadata[team]": "a b/é"}) == [jobs[4]]
    assert ids(**{"metadata[team]": "c"}) == []
    assert ids(**{"metadata[nope]": "a"}) == []
    assert ids(metadata="null") == [jobs[2]]
    # With the status filter and paging: filters apply before the page is cut.
    assert ids(**{"metadata[team]": "a", "limit": 1}) == [jobs[3]]
    assert ids(**{"metadata[team]": "a", "after": jobs[3]}) == [jobs[0]]
    assert ids(**{"metadata[team]": "a", "status": "succeeded"}) == []
    # The OpenAI list answers the same (the filter is shared).
    openai = client.get("/v1/fine_tuning/jobs", headers=bearer(key), params={"metadata[team]": "a"}).json()
    assert [j["id"] for j in openai["data"]] == [jobs[3], jobs[0]]


@pytest.mark.parametrize(
    "params, param",
    [
        ({"metadata": "x"}, "metadata"),
        ({"metadata[]": "x"}, "metadata[]"),
        ({"metadataz": "x"}, "metadataz"),
        ({"metadata": "null", "metadata[team]": "a"}, "metadata"),
        ({"metdata[team]": "a"}, "metdata[team]"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/jobs", "/v1/fine_tuning/jobs"])
def test_bad_metadata_filters_are_400(client, key, params, param, path):
    response = client.get(path, headers=bearer(key), params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_metadata_keys_with_quotes_filter_without_error(client, key, dataset):
    job = create_job(client, key, dataset["id"], metadata={'we"ird\\key': "v", "team": "a"}).json()
    response = client.get("/api/v1/jobs", headers=bearer(key), params={'metadata[we"ird\\key]': "v"})
    assert response.status_code == 200, response.text
    found = [j["id"] for j in response.json()["data"]]
    assert found in (
        [job["id"]],
        [],
    )  # Postgres finds it; SQLite's JSON path cannot name such a key: no match, no error
