"""Event and checkpoint ids are opaque: their rows' keys are a counter shared by every tenant, so
ids that showed it would tell a tenant how busy the others are. Cursors still work, and ids survive a restart."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api import ids
from api.main import create_app
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload


def event_ids(client, key, job_id, **params) -> dict:
    response = client.get(f"/api/v1/jobs/{job_id}/events", headers=bearer(key), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_event_ids_do_not_show_the_global_counter_and_page_as_cursors(client, key):
    dataset = upload(client, key, jsonl(chat_rows(4))).json()
    jobs = [create_job(client, key, dataset["id"]).json()["id"] for _ in range(2)]
    for job_id in jobs:
        client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(key))
    first = event_ids(client, key, jobs[0], limit=1)
    rest = event_ids(client, key, jobs[0], after=first["last_id"], limit=100)
    shown = [e["id"] for e in first["data"] + rest["data"]]
    assert len(shown) >= 2 and len(set(shown)) == len(shown)
    for public in shown + [e["id"] for e in event_ids(client, key, jobs[1])["data"]]:
        hex_part = public.removeprefix("ftevent-")
        assert len(hex_part) == 16 and int(hex_part, 16) > 2**32  # not a small counter
    # Consecutive rows are not consecutive, nor even ordered, numbers.
    assert abs(int(shown[0][8:], 16) - int(shown[1][8:], 16)) > 1000


@pytest.mark.parametrize("bad", ["ftevent-12", "ftevent-" + "f" * 16, "ftevent-" + "g" * 16, "nonsense"])
def test_unknown_or_old_style_event_cursors_are_400(client, key, bad):
    dataset = upload(client, key, jsonl(chat_rows(4))).json()
    job_id = create_job(client, key, dataset["id"]).json()["id"]
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(key))
    response = client.get(f"/api/v1/jobs/{job_id}/events", headers=bearer(key), params={"after": bad})
    assert response.status_code == 400 and response.json()["error"]["param"] == "after"


def test_the_permutation_round_trips_and_differs_by_kind():
    for key in (0, 1, 2, 12345, ids.MAX_INT):
        assert ids.parse_event_id(ids.event_public_id(key)) == key
        assert ids.parse_checkpoint_id(ids.checkpoint_public_id(key)) == key
        assert ids.event_public_id(key)[8:] != ids.checkpoint_public_id(key)[7:]


def test_ids_survive_a_restart_with_the_same_data_folder(settings, client, key):
    dataset = upload(client, key, jsonl(chat_rows(4))).json()
    job_id = create_job(client, key, dataset["id"]).json()["id"]
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(key))
    before = event_ids(client, key, job_id)["data"]
    ids.use_id_key(b"another process's key until it starts")
    with TestClient(create_app(settings)) as again:
        assert event_ids(again, key, job_id)["data"] == before
