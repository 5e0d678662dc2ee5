"""Ids and file names never reach outside the artifact folder: traversal in ids (raw and percent-encoded),
absolute paths and '..' in upload file names and stored paths, and symlinks planted in the data folder that
point outside it (a download then answers 404 instead of serving the target)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import update

from api.db import session_factory
from api.models import Job, utcnow
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload

SECRET = b"root:x:0:0:secret outside the data folder\n"

TRAVERSALS = [
    "..",
    "../..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "%2Fetc%2Fpasswd",
    "file-..%2F..%2Fuds.db",
    "ftjob-..%5C..%5Cuds.db",
]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_traversal_in_ids_is_404(client, key, bad):
    for path in (
        f"/api/v1/jobs/{bad}/adapter",
        f"/api/v1/datasets/{bad}",
        f"/api/v1/datasets/{bad}/rows",
        f"/v1/files/{bad}/content",
        f"/v1/fine_tuning/jobs/{bad}",
        f"/api/v1/jobs/{bad}/checkpoints",
    ):
        response = client.get(path, headers=bearer(key))
        assert response.status_code in (404, 400), (path, response.status_code)
        assert SECRET not in response.content and b"root:" not in response.content


@pytest.mark.parametrize("name", ["../../evil.jsonl", "/etc/passwd", "..\\..\\evil.jsonl", "a/../../b.jsonl"])
def test_upload_file_names_never_become_paths(client, key, settings, name):
    dataset = upload(client, key, jsonl(chat_rows(3)), filename=name).json()
    assert "/" not in dataset["filename"] and "\\" not in dataset["filename"] and dataset["filename"] != ".."
    files = [
        p for p in settings.data_dir.rglob("*") if p.is_file() and p.suffix != ".db" and p.parent.name != "secrets"
    ]
    assert sorted(str(p.relative_to(settings.data_dir)) for p in files) == [
        f"datasets/{dataset['id']}.jsonl",
        f"datasets/{dataset['id']}.jsonl.rows",
    ]
    assert not (settings.data_dir.parent / "evil.jsonl").exists()


def test_stored_paths_outside_the_data_folder_are_refused(settings):
    for bad in ("/etc/passwd", "../outside", "jobs/../../outside", "jobs/x/../../../etc/passwd", "/"):
        with pytest.raises(ValueError):
            settings.resolve(bad)
        assert settings.served_file(bad) is None
    assert settings.resolve("jobs/ftjob-1/adapter.tar.gz") == settings.data_dir / "jobs/ftjob-1/adapter.tar.gz"


def test_symlinks_planted_in_the_data_folder_are_not_followed_out(client, key, settings, database_url, tmp_path):
    outside = tmp_path / "outside-secret"
    outside.write_bytes(SECRET)
    dataset = upload(client, key, jsonl(chat_rows(3))).json()
    job = create_job(client, key, dataset["id"]).json()
    # The job's adapter archive and the dataset's file are replaced by links to a file outside the volume.
    archive = settings.data_dir / "jobs" / job["id"] / "adapter.tar.gz"
    archive.parent.mkdir(parents=True)
    os.symlink(outside, archive)
    stored = settings.data_dir / "datasets" / f"{dataset['id']}.jsonl"
    stored.unlink()
    os.symlink(outside, stored)
    with session_factory(database_url).begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job["id"])
            .values(
                status="succeeded",
                finished_at=utcnow(),
                adapter_path=f"jobs/{job['id']}/adapter.tar.gz",
                adapter_sha256="0" * 64,
                adapter_bytes=len(SECRET),
            )
        )
    for path in (
        f"/api/v1/jobs/{job['id']}/adapter",
        f"/v1/files/{dataset['id']}/content",
        f"/api/v1/datasets/{dataset['id']}/rows",
    ):
        response = client.get(path, headers=bearer(key))
        assert SECRET not in response.content, path
        assert response.status_code == 404 or response.json()["data"] == [], (path, response.text)
    # A link that stays inside the data folder is fine (an operator may organise the volume with links).
    inside = settings.data_dir / "jobs" / job["id"] / "real.tar.gz"
    inside.write_bytes(b"archive bytes")
    archive.unlink()
    os.symlink(inside, archive)
    assert client.get(f"/api/v1/jobs/{job['id']}/adapter", headers=bearer(key)).content == b"archive bytes"
