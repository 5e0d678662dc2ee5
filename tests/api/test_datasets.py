"""POST/GET/DELETE /api/v1/datasets: streaming upload, size limit, full validation, nothing left on failure."""

from __future__ import annotations

import gzip
import hashlib
import io
import json

import pytest

from tests.utils.factories import alpaca_rows, bearer, chat_rows, completion_rows, jsonl, upload


def stored_files(settings) -> list[str]:
    """Everything on disk under the data dir that an upload could have left."""
    return sorted(
        str(p.relative_to(settings.data_dir))
        for p in settings.data_dir.rglob("*")
        if p.is_file() and p.suffix != ".db" and p.parent.name != "secrets"
    )


def dataset_ids(client, key) -> list[str]:
    return [d["id"] for d in client.get("/api/v1/datasets", headers=bearer(key), params={"limit": 100}).json()["data"]]


@pytest.mark.parametrize(
    "rows, fmt", [(chat_rows(6), "chat"), (alpaca_rows(5), "alpaca"), (completion_rows(4), "completion")]
)
def test_upload_each_format(client, key, settings, rows, fmt):
    data = jsonl(rows)
    body = upload(client, key, data, filename="my data.jsonl").json()
    assert body["id"].startswith("file-") and len(body["id"]) == len("file-") + 24
    assert body["format"] == fmt and body["n_examples"] == len(rows) and body["status"] == "processed"
    assert body["bytes"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["filename"] == "my data.jsonl" and body["purpose"] == "fine-tune"
    assert stored_files(settings) == [f"datasets/{body['id']}.jsonl", f"datasets/{body['id']}.jsonl.rows"]
    assert (settings.data_dir / "datasets" / f"{body['id']}.jsonl").read_bytes() == data
    assert client.get(f"/api/v1/datasets/{body['id']}", headers=bearer(key)).json() == body


GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})

BAD_DATASETS = {
    "bad JSON": (f"{GOOD}\n{GOOD}\n{{not json\n".encode(), 3),
    "not an object": (f"{GOOD}\n[1, 2]\n{GOOD}\n".encode(), 2),
    "empty messages": (f'{GOOD}\n{{"messages": []}}\n'.encode(), 2),
    "no assistant turn": (f'{GOOD}\n{{"messages": [{{"role": "user", "content": "x"}}]}}\n'.encode(), 2),
    "bad role": (
        f'{GOOD}\n{{"messages": [{{"role": "robot", "content": "x"}}, {{"role": "assistant", "content": "y"}}]}}\n'.encode(),
        2,
    ),
    "mixed formats": (f'{GOOD}\n{{"prompt": "a", "completion": "b"}}\n'.encode(), 2),
    "alpaca without output": (b'{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', 2),
    "unknown format": (b'{"text": "a"}\n{"text": "b"}\n', 1),
    "too few examples": (f"{GOOD}\n".encode(), 0),
    "empty file": (b"", 0),
    "gzip file": (gzip.compress(f"{GOOD}\n{GOOD}\n".encode()), 0),
    "not UTF-8": (f"{GOOD}\n".encode() + b'{"prompt": "\xff\xfe", "completion": "x"}\n', 2),
}


@pytest.mark.parametrize("kind", list(BAD_DATASETS))
def test_bad_dataset_is_refused_with_its_line_and_nothing_is_kept(client, key, settings, kind):
    data, line = BAD_DATASETS[kind]
    response = upload(client, key, data, expect=422)
    body = response.json()
    assert body["error"]["code"] == "invalid_dataset" and body["error"]["param"] == "file"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["problems"], body
    assert line in [p["line"] for p in body["problems"]], body
    where = f"line {line}" if line else "file"
    assert where in body["error"]["message"]
    assert stored_files(settings) == []
    assert dataset_ids(client, key) == []


def test_problems_are_listed_for_every_bad_line(client, key):
    data = f"{GOOD}\nnope\n{GOOD}\n{{}}\n\n[]\n".encode()
    problems = upload(client, key, data, expect=422).json()["problems"]
    assert [p["line"] for p in problems] == [2, 4, 6]
    assert all(p["reason"] for p in problems)


def multipart_chunks(data: bytes, chunk: int = 8192, boundary: str = "b0undary"):
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_size_limit_is_enforced_while_streaming(client, key, settings):
    # No Content-Length (chunked), so the server can only notice by counting: it must stop at the limit.
    line = (GOOD + "\n").encode()
    data = line * (settings.max_upload_bytes // len(line) + 50)
    sent = []

    def body():
        for part in multipart_chunks(data):
            sent.append(len(part))
            yield part

    response = client.post(
        "/api/v1/datasets",
        headers={**bearer(key), "Content-Type": "multipart/form-data; boundary=b0undary"},
        content=body(),
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "file_too_large"
    assert stored_files(settings) == [] and dataset_ids(client, key) == []


def test_declared_oversize_is_refused_before_reading(client, key, settings):
    data = b"x" * (settings.max_upload_bytes + 200 * 1024)
    response = upload(client, key, data, expect=413)
    assert str(settings.max_upload_bytes) in response.json()["error"]["message"]
    assert stored_files(settings) == []


def test_exactly_at_the_limit_is_accepted(client, key, settings):
    line = (GOOD + "\n").encode()
    data = line * (settings.max_upload_bytes // len(line))
    assert len(data) <= settings.max_upload_bytes
    assert upload(client, key, data).json()["bytes"] == len(data)


@pytest.mark.parametrize("case", ["no file part", "not multipart", "bad purpose"])
def test_malformed_upload_requests(client, key, settings, case):
    if case == "no file part":
        response = client.post(
            "/api/v1/datasets",
            headers=bearer(key),
            data={"purpose": "fine-tune"},
            files={"other": ("x.jsonl", io.BytesIO(b"{}"))},
        )
        expected = ("missing_required_parameter", "file")
    elif case == "not multipart":
        response = client.post("/api/v1/datasets", headers=bearer(key), json={"file": "x"})
        expected = ("invalid_content_type", "file")
    else:
        response = upload(client, key, jsonl(chat_rows(3)), expect=None, purpose="batch")
        expected = ("invalid_value", "purpose")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == expected
    assert stored_files(settings) == []


def test_list_is_newest_first_with_exact_pagination(client, key):
    ids = [upload(client, key, jsonl(chat_rows(2 + i))).json()["id"] for i in range(5)]
    newest_first = ids[::-1]
    seen, after, pages = [], None, []
    while True:
        page = client.get(
            "/api/v1/datasets", headers=bearer(key), params={"limit": 2, **({"after": after} if after else {})}
        ).json()
        assert page["object"] == "list"
        pages.append(page["has_more"])
        seen += [d["id"] for d in page["data"]]
        assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == newest_first
    assert pages == [True, True, False]
    # A page that ends exactly at the last object says has_more false (fetching one extra row, not guessing).
    exact = client.get("/api/v1/datasets", headers=bearer(key), params={"limit": 5}).json()
    assert exact["has_more"] is False and len(exact["data"]) == 5
    bad = client.get("/api/v1/datasets", headers=bearer(key), params={"after": "file-nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"


def test_delete_removes_row_and_file(client, key, settings):
    dataset = upload(client, key, jsonl(chat_rows(3))).json()
    response = client.delete(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key))
    assert response.status_code == 200 and response.json() == {
        "id": dataset["id"],
        "object": "dataset",
        "deleted": True,
    }
    assert stored_files(settings) == []
    missing = client.get(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "dataset_not_found"
    assert client.delete(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key)).status_code == 404


def test_delete_refused_while_a_job_uses_it(client, key):
    dataset = upload(client, key, jsonl(chat_rows(3))).json()
    eval_set = upload(client, key, jsonl(chat_rows(2))).json()
    job = client.post(
        "/api/v1/jobs",
        headers=bearer(key),
        json={"dataset_id": dataset["id"], "eval_dataset_id": eval_set["id"], "model": "uds-tiny"},
    ).json()
    for dataset_id in (dataset["id"], eval_set["id"]):
        response = client.delete(f"/api/v1/datasets/{dataset_id}", headers=bearer(key))
        assert response.status_code == 400 and response.json()["error"]["code"] == "dataset_in_use"
        assert job["id"] in response.json()["error"]["message"]
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(key))
    assert client.delete(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key)).status_code == 200


def test_row_previews(client, key):
    rows = alpaca_rows(5)
    dataset = upload(client, key, b"\n" + jsonl(rows)).json()  # a blank first line shifts line numbers
    page = client.get(
        f"/api/v1/datasets/{dataset['id']}/rows", headers=bearer(key), params={"offset": 1, "limit": 3}
    ).json()
    assert page["total"] == 5 and page["has_more"] is True
    assert [r["row"] for r in page["data"]] == [1, 2, 3]
    assert [r["line"] for r in page["data"]] == [3, 4, 5]
    first = page["data"][0]
    assert first["preview"].startswith("user: Add 1 and 2.") and "assistant: 3" in first["preview"]
    assert first["messages"][-1]["role"] == "assistant"
    last = client.get(
        f"/api/v1/datasets/{dataset['id']}/rows", headers=bearer(key), params={"offset": 3, "limit": 2}
    ).json()
    assert last["has_more"] is False and len(last["data"]) == 2


def sharegpt_rows(n: int) -> list[dict]:
    return [
        {
            "conversations": [{"from": "human", "value": f"Add {i} and 2."}, {"from": "gpt", "value": str(i + 2)}],
            "system": "You add numbers.",
        }
        for i in range(n)
    ]


def test_sharegpt_is_accepted_and_previewed_as_chat(client, key):
    """ShareGPT (LLaMA-Factory's conversations) is a fourth format, converted to chat."""
    dataset = upload(client, key, jsonl(sharegpt_rows(4))).json()
    assert dataset["format"] == "sharegpt" and dataset["n_examples"] == 4
    row = client.get(f"/api/v1/datasets/{dataset['id']}/rows", headers=bearer(key), params={"limit": 1}).json()["data"][
        0
    ]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["preview"] == "user: Add 0 and 2. | assistant: 2"


@pytest.mark.parametrize(
    "data, sentence",
    [
        (b"prompt,completion\na,b\nc,d\n", "the file looks like CSV (comma-separated) with columns prompt, completion"),
        (b'[\n  {"prompt": "a", "completion": "b"}\n]\n', "the file is a JSON array, not JSON Lines"),
    ],
)
def test_a_wrong_shape_is_the_first_problem_and_the_message(client, key, data, sentence):
    body = upload(client, key, data, expect=422).json()
    assert body["problems"][0] == {"line": 0, "reason": body["problems"][0]["reason"]}
    assert sentence in body["problems"][0]["reason"] and sentence in body["error"]["message"]
    assert any(p["line"] >= 1 for p in body["problems"][1:])
