"""/v1/files through the official `openai` client (and raw HTTP where the client hides the wire): the file object,
validation on upload, content, deletion, pagination, tenancy, and the error shape on every failure."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.utils.factories import bearer, chat_rows, jsonl
from tests.utils.openai_server import oai, openai_server  # noqa: F401 (fixtures)

FILE_FIELDS = {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}


def upload(client, rows=None, name="train.jsonl"):
    return client.files.create(file=(name, jsonl(rows or chat_rows(6))), purpose="fine-tune")


def test_upload_retrieve_content_delete(oai, openai_server):
    data = jsonl(chat_rows(6))
    created = oai.files.create(file=("my data.jsonl", data), purpose="fine-tune")
    assert FILE_FIELDS <= set(created.to_dict())
    assert created.id.startswith("file-") and len(created.id) == len("file-") + 24 and created.object == "file"
    assert created.bytes == len(data) and created.filename == "my data.jsonl" and created.purpose == "fine-tune"
    assert created.status == "processed" and isinstance(created.created_at, int)
    assert created.n_examples == 6 and created.format == "chat"  # extras the native API also shows
    assert oai.files.retrieve(created.id) == created
    assert oai.files.content(created.id).content == data
    # The same row is the native dataset.
    native = httpx.get(f"{openai_server.url}/api/v1/datasets/{created.id}", headers=bearer(oai.api_key)).json()
    assert native["id"] == created.id and native["bytes"] == len(data)

    deleted = oai.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True and deleted.object == "file"
    for call in (oai.files.retrieve, oai.files.content, oai.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)


def test_list_pages_with_limit_after_and_order(oai):
    ids = [upload(oai, chat_rows(2 + i)).id for i in range(5)]
    newest_first = list(reversed(ids))
    page = oai.files.list(limit=2)
    assert [f.id for f in page.data] == newest_first[:2] and page.has_more is True
    seen, after = [], None
    while True:
        page = oai.files.list(limit=2, **({"after": after} if after else {}))
        seen += [f.id for f in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == newest_first
    assert [f.id for f in oai.files.list(limit=2)] == newest_first  # the client's auto-pagination
    assert [f.id for f in oai.files.list(order="asc")] == ids
    assert [f.id for f in oai.files.list(order="asc", after=ids[1], limit=2).data] == ids[2:4]
    last = oai.files.list(limit=5)
    assert last.has_more is False and len(last.data) == 5  # exact: no empty page after a full one
    assert list(oai.files.list(purpose="fine-tune-results")) == []
    with pytest.raises(openai.BadRequestError) as caught:
        oai.files.list(after="file-" + "f" * 24)
    assert caught.value.param == "after"


def test_invalid_training_file_is_refused_with_line_numbers_and_nothing_kept(oai, openai_server):
    good = jsonl(chat_rows(3))
    bad = good + b"{not json\n" + b'{"messages": [{"role": "user", "content": "only a question"}]}\n'
    before = sorted(p.name for p in openai_server.settings.datasets_dir.glob("*"))
    with pytest.raises(openai.BadRequestError) as caught:
        oai.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    error = caught.value
    assert error.status_code == 400 and error.code == "invalid_dataset" and error.param == "file"
    assert "line 4" in error.message and "2 problems" in error.message
    body = error.response.json()
    assert (
        set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["type"] == "invalid_request_error"
    )
    assert [p["line"] for p in body["problems"]] == [4, 5]
    assert list(oai.files.list()) == []
    assert sorted(p.name for p in openai_server.settings.datasets_dir.glob("*")) == before


def test_purpose_other_than_fine_tune_is_refused(oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.files.create(file=("a.jsonl", jsonl(chat_rows(3))), purpose="assistants")
    assert caught.value.param == "purpose"


def test_too_large_is_413_and_not_retried(oai):
    with pytest.raises(openai.APIStatusError) as caught:
        oai.files.create(file=("big.jsonl", b"x" * (70 * 1024)), purpose="fine-tune")
    assert caught.value.status_code == 413 and caught.value.code == "file_too_large"


def test_another_tenants_files_are_not_found(oai, openai_server):
    mine = upload(oai)
    other = openai_server.client()
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(mine.id)
    assert list(other.files.list()) == []
    assert oai.files.retrieve(mine.id).id == mine.id


def test_a_file_used_by_an_unfinished_job_cannot_be_deleted(oai):
    file = upload(oai)
    job = oai.fine_tuning.jobs.create(model="uds-tiny", training_file=file.id)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.files.delete(file.id)
    assert caught.value.code == "dataset_in_use" and job.id in caught.value.message
    oai.fine_tuning.jobs.cancel(job.id)
    assert oai.files.delete(file.id).deleted is True


def test_wrong_or_missing_key_is_an_authentication_error(openai_server):
    wrong = openai_server.client(key="uds-" + "w" * 40)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.files.list()
    assert caught.value.code == "invalid_api_key"
    response = httpx.get(f"{openai_server.url}/v1/files")
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize(
    "method, path, kwargs, status, param",
    [
        ("GET", "/v1/files", {"params": {"limit": "many"}}, 400, "limit"),
        ("GET", "/v1/files", {"params": {"order": "sideways"}}, 400, "order"),
        ("POST", "/v1/files", {"content": b"not multipart", "headers": {"content-type": "text/plain"}}, 400, "file"),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            None,
        ),
        ("POST", "/v1/fine_tuning/jobs", {"json": {"model": "uds-tiny"}}, 400, "training_file"),
        ("GET", "/v1/no-such-thing", {}, 404, None),
        ("PUT", "/v1/files", {}, 405, None),
    ],
)
def test_every_failure_has_the_openai_error_shape(openai_server, oai, method, path, kwargs, status, param):
    headers = {**bearer(oai.api_key), **kwargs.pop("headers", {})}
    response = httpx.request(method, openai_server.url + path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
