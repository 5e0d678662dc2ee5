"""What one tenant may ask of the service. Job costs bounded at submit time, upload forms capped and
accepted in any part order, unstorable values refused as 400s, the key-less loopback mode closed to other origins,
crash leftovers cleaned at start-up, finished jobs' checkpoints pruned, per-tenant storage quotas."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload


@pytest.fixture
def dataset(client, key):
    return upload(client, key, jsonl(chat_rows(24))).json()


def refused(response, param: str, code: str = "job_too_costly") -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == param, error
    return error["message"]


# ---- what a job may cost --------------------------------------------------------------------------------------


def test_the_reported_buffer_is_refused_naming_the_setting_and_the_limit(client, key, dataset):
    message = refused(
        create_job(client, key, dataset["id"], expect=None, buffer_size=2000, proj_r_seq=512, proj_r_voc=512),
        "buffer_size",
    )
    assert "UDS_MAX_SELECTOR_MEMORY_BYTES" in message and "1,073,741,824" in message


def test_the_maxima_are_refused_not_an_internal_error(client, key, dataset):
    refused(
        create_job(client, key, dataset["id"], expect=None, buffer_size=1_000_000, proj_r_seq=512, proj_r_voc=4096),
        "buffer_size",
    )
    refused(create_job(client, key, dataset["id"], expect=None, proj_r_voc=4096), "proj_r_voc")


@pytest.mark.parametrize(
    "fields, param",
    [
        (dict(max_steps=10_000_000), "max_steps"),
        (dict(max_steps=150_000, candidate_batch_size=512, checkpoint_every=1000), "max_steps"),  # 77 M selections
        (dict(max_steps=5000, checkpoint_every=1), "checkpoint_every"),
        (dict(keep_checkpoints=500), "keep_checkpoints"),
        (dict(buffer_size=30_000, proj_r_voc=256, keep_checkpoints=10), "keep_checkpoints"),  # 0.5 GB x 10 on disk
        (dict(max_seq_len=100_000), "max_seq_len"),
    ],
)
def test_each_cost_is_bounded(client, key, dataset, fields, param):
    refused(create_job(client, key, dataset["id"], expect=None, **fields), param)


def test_limits_are_per_deployment(client, key, dataset, settings):
    create_job(client, key, dataset["id"], max_steps=50)  # fine by default
    with TestClient(create_app(settings.model_copy(update={"max_job_steps": 20}))) as strict:
        message = refused(create_job(strict, key, dataset["id"], expect=None, max_steps=50), "max_steps")
        assert "UDS_MAX_JOB_STEPS" in message


def test_default_jobs_pass(client, key, dataset):
    create_job(client, key, dataset["id"])


def test_storage_quota(client, key, settings):
    with TestClient(create_app(settings.model_copy(update={"tenant_storage_bytes": 6000}))) as small:
        first = upload(small, key, jsonl(chat_rows(24)))  # ~4 KB
        over = upload(small, key, jsonl(chat_rows(24)), expect=None)
        assert refused(over, "file", "storage_quota_exceeded")
        assert "UDS_TENANT_STORAGE_BYTES" in over.json()["error"]["message"]
        # The job's checkpoint state counts too: the default buffer is 8 MiB a checkpoint.
        refused(create_job(small, key, first.json()["id"], expect=None), "keep_checkpoints", "storage_quota_exceeded")


def test_storage_quota_counts_everything_stored_for_the_tenant(client, key, settings, dataset, database_url):
    """Exports of any kind, checkpoints and other files under a job's folder count, as the datasets do: two merged
    exports of 7.8 MB each used to leave a 5 MB quota open to the next upload."""
    from api.db import session_factory
    from api.models import Job, utcnow

    job = create_job(client, key, dataset["id"]).json()["id"]
    with session_factory(database_url).begin() as session:
        session.get(Job, job).status, session.get(Job, job).finished_at = "succeeded", utcnow()
    quota = {"tenant_storage_bytes": 5_000_000}
    with TestClient(create_app(settings.model_copy(update=quota))) as small:
        upload(small, key, jsonl(chat_rows(3)))  # room left
        exports = settings.job_dir(job) / "exports"
        exports.mkdir(parents=True)
        (exports / "export-a.tar.gz").write_bytes(b"m" * 2_500_000)  # a merged export
        (exports / "export-b.gguf").write_bytes(b"g" * 2_500_000)  # any other kind is counted alike
        refused(upload(small, key, jsonl(chat_rows(3)), expect=None), "file", "storage_quota_exceeded")
        again = small.post(f"/api/v1/jobs/{job}/exports", headers=bearer(key), json={"kind": "merged"})
        refused(again, "kind", "storage_quota_exceeded")
        tryit = small.post(f"/api/v1/jobs/{job}/generate", headers=bearer(key), json={"prompt": "hi"})
        refused(tryit, "prompt", "storage_quota_exceeded")
        (exports / "export-b.gguf").unlink()
        (settings.job_dir(job) / "checkpoints" / "step-3").mkdir(parents=True)  # a failed job's checkpoints too
        (settings.job_dir(job) / "checkpoints" / "step-3" / "state.pt").write_bytes(b"c" * 2_500_000)
        refused(upload(small, key, jsonl(chat_rows(3)), expect=None), "file", "storage_quota_exceeded")
        (settings.job_dir(job) / "checkpoints" / "step-3" / "state.pt").unlink()
        upload(small, key, jsonl(chat_rows(3)))


# ---- upload forms ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/datasets", "/v1/files"])
def test_a_field_after_the_file_is_fine(client, key, path):
    boundary = "B0undary"
    body = (
        (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.jsonl"\r\n\r\n').encode()
        + jsonl(chat_rows(3))
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--{boundary}--\r\n'
        ).encode()
    )
    response = client.post(
        path, headers={**bearer(key), "Content-Type": f"multipart/form-data; boundary={boundary}"}, content=body
    )
    assert response.status_code in (200, 201), response.text
    assert response.json()["filename"] == "late.jsonl"


def test_form_fields_are_capped_in_number_and_size(client, key, settings):
    many = {f"f{i}": "x" for i in range(settings.max_form_fields + 1)}
    response = client.post(
        "/api/v1/datasets", headers=bearer(key), data=many, files={"file": ("a.jsonl", io.BytesIO(jsonl(chat_rows(3))))}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_form_fields"
    response = client.post(
        "/api/v1/datasets",
        headers=bearer(key),
        data={"note": "x" * 2000},
        files={"file": ("a.jsonl", io.BytesIO(jsonl(chat_rows(3))))},
    )
    assert response.status_code == 400 and "UDS_MAX_FORM_FIELD_BYTES" in response.json()["error"]["message"]


def test_form_fields_count_against_the_upload_limit(client, key, settings):
    # Fields within their own caps, and a file within UDS_MAX_UPLOAD_BYTES (64 KiB here), but not both together.
    fields = {f"f{i}": "x" * 1000 for i in range(settings.max_form_fields)}
    rows = jsonl(chat_rows(3)) * 40
    data = rows + b"\n" * (settings.max_upload_bytes - len(rows) - 100)
    response = client.post("/api/v1/datasets", headers=bearer(key), data=fields, files={"file": ("a.jsonl", data)})
    assert response.status_code == 413, response.text


def test_nul_in_the_file_name_is_dropped(client, key):
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.jsonl"\r\n\r\n'
        + jsonl(chat_rows(3))
        + b"\r\n--B--\r\n"
    )
    response = client.post(
        "/api/v1/datasets", headers={**bearer(key), "Content-Type": "multipart/form-data; boundary=B"}, content=body
    )
    assert response.status_code == 201 and response.json()["filename"] == "ab.jsonl", response.text


# ---- unstorable values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, param",
    [
        (dict(seed=2**31), "seed"),
        (dict(seed=2**62), "seed"),
        (dict(seed=-1), "seed"),
        (dict(name="a\x00b"), "name"),
        (dict(metadata={"k": "v\x00"}), "metadata.k"),
        (dict(metadata={"k\x00": "v"}), "metadata"),
        (dict(lora_targets=["q_proj", "v\x00"]), "lora_targets.1"),
    ],
)
def test_unstorable_job_values_are_400(client, key, dataset, fields, param):
    refused(create_job(client, key, dataset["id"], expect=None, **fields), param, "invalid_value")


@pytest.mark.parametrize(
    "raw, param",
    [
        ('"name": "\\ud800"', "name"),
        ('"metadata": {"x": NaN}', "metadata.x"),
        ('"metadata": {"x": Infinity}', "metadata.x"),
    ],
)
def test_lone_surrogates_and_nan_are_400(client, key, dataset, raw, param):
    body = '{"dataset_id": "%s", "model": "uds-tiny", %s}' % (dataset["id"], raw)
    response = client.post("/api/v1/jobs", headers={**bearer(key), "Content-Type": "application/json"}, content=body)
    refused(response, param, "invalid_value")


@pytest.fixture
def finished_job(client, key, dataset, database_url):
    from api.db import session_factory
    from api.models import Job, JobTask, utcnow

    job = create_job(client, key, dataset["id"]).json()["id"]
    with session_factory(database_url).begin() as session:
        session.get(Job, job).status, session.get(Job, job).finished_at = "succeeded", utcnow()
    yield job
    with session_factory(database_url).begin() as session:  # nothing left queued for later tests' sweeps
        for task in session.query(JobTask).filter(JobTask.job_id == job):
            task.status = "cancelled"


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/api/v1/webhooks", {"url": "https://example.com/a", "description": "a\x00b"}, "description"),
        ("/api/v1/webhooks", {"url": "https://example.com/a\x00"}, "url"),
        ("/api/v1/jobs/{job}/generate", {"prompt": "hi\x00"}, "prompt"),
        ("/api/v1/jobs/{job}/generate", {"messages": [{"role": "user", "content": "\x00"}]}, "messages.0.content"),
        ("/api/v1/jobs/{job}/generate", {"prompt": "\ud800"}, "prompt"),
        ("/api/v1/jobs/{job}/cancel", {"x": "\x00"}, "x"),  # a body no route reads is still checked
    ],
)
def test_unstorable_text_in_any_json_body_is_400_on_both_databases(client, key, finished_job, path, body, param):
    import json

    raw = json.dumps(body)  # NUL and the lone surrogate go as JSON escapes (\u0000, \ud800)
    response = client.post(
        path.format(job=finished_job), headers={**bearer(key), "Content-Type": "application/json"}, content=raw
    )
    refused(response, param, "invalid_value")


@pytest.mark.parametrize(
    "url", ["/api/v1/jobs?after=a%00b", "/api/v1/jobs/ftjob-%00", "/static/a%00b", "/static/" + "a" * 5000]
)
def test_nul_and_huge_urls_are_4xx(client, key, url):
    response = client.get(url, headers=bearer(key))
    assert 400 <= response.status_code < 500, (url[:50], response.status_code)


# ---- the key-less loopback mode against other origins -------------------------------------------------------


@pytest.fixture
def keyless(database_url, tmp_path):
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, require_auth="auto", host="127.0.0.1", min_examples=2
    )
    with TestClient(create_app(settings), client=("127.0.0.1", 50000), base_url="http://127.0.0.1:8000") as client:
        yield client


def test_a_rebound_host_is_refused(keyless):
    response = keyless.get("/api/v1/datasets", headers={"Host": "evil.example:8000"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "app.localhost"):
        assert keyless.get("/api/v1/datasets", headers={"Host": host}).status_code == 200, host


def test_cross_origin_state_changes_are_refused(keyless):
    dataset = upload(keyless, None, jsonl(chat_rows(3))).json()
    job = create_job(keyless, None, dataset["id"]).json()
    csrf = keyless.post(
        f"/api/v1/jobs/{job['id']}/cancel", headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}
    )
    assert csrf.status_code == 403 and csrf.json()["error"]["code"] == "cross_origin_request"
    blind = keyless.post(
        "/api/v1/datasets", headers={"Sec-Fetch-Site": "cross-site"}, files={"file": ("a.jsonl", jsonl(chat_rows(3)))}
    )
    assert blind.status_code == 403
    # Another program on another loopback port is another origin (the port counts), multipart or not.
    for origin in ("http://127.0.0.1:9999", "http://localhost:8000", "https://127.0.0.1:8000"):
        other = keyless.post(
            "/api/v1/datasets", headers={"Origin": origin}, files={"file": ("a.jsonl", jsonl(chat_rows(3)))}
        )
        assert other.status_code == 403 and other.json()["error"]["code"] == "cross_origin_request", origin
    same = keyless.post(
        "/api/v1/datasets",
        headers={"Origin": "http://127.0.0.1:8000"},
        files={"file": ("a.jsonl", jsonl(chat_rows(3)))},
    )
    assert same.status_code == 201, same.text
    # The dashboard (same origin) and tools (no Origin) still work.
    assert (
        keyless.post(f"/api/v1/jobs/{job['id']}/cancel", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200
    )


# ---- retention: what stays on disk ------------------------------------------------------------------------------


def test_start_up_removes_crash_leftovers_but_not_live_uploads(settings, client, key):
    tmp = settings.tmp_dir
    abandoned = tmp / "upload-dead.part"
    abandoned.write_bytes(b"half")
    live = tmp / "upload-live.part"
    live.write_bytes(b"still coming")
    # Another process is writing `live`: it holds the lock, as api/uploads.py does.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'rb'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(live),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        job_dir = settings.job_dir("ftjob-gone") / "checkpoints"
        half = job_dir / "step-00000003.tmp-999999"
        half.mkdir(parents=True)
        (half / "state.pt").write_bytes(b"x" * 100)
        with TestClient(create_app(settings)):
            pass
        assert not abandoned.exists() and live.exists() and not half.exists()
    finally:
        holder.kill()
        holder.wait()


def test_succeeded_jobs_checkpoints_are_pruned(settings, client, key, dataset):
    from api.db import session_factory
    from api.storage import prune_finished_checkpoints
    from tests.utils.factories import set_job

    job = create_job(client, key, dataset["id"]).json()
    folder = settings.job_dir(job["id"]) / "checkpoints" / "step-00000001"
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"x")
    sessions = session_factory(settings.sqlalchemy_url)
    with sessions() as session:
        assert prune_finished_checkpoints(settings, session) == 0  # still queued: kept
    set_job(sessions, job["id"], status="succeeded")
    with sessions() as session:
        assert prune_finished_checkpoints(settings.model_copy(update={"checkpoint_retention": "all"}), session) == 0
        assert folder.exists()
        assert prune_finished_checkpoints(settings, session) == 1
    assert not folder.parent.exists()
