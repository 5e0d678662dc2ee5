"""Dataset uploads fuzzed, through both upload endpoints: every bad file is a 4xx that names the problem and its
line, the error stays small whatever the input, and nothing is stored (no row, no file) unless the upload is 201.
The cases the hand-written table in test_datasets.py does not have, then random mutations of a good file."""

from __future__ import annotations

import gzip
import io
import json
import random
import zipfile

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.utils.factories import bearer, chat_rows, jsonl

GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
MAX_ERROR_BYTES = 64 * 1024  # whatever the upload, the 4xx body stays small


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"create_rate_per_minute": 0})  # dozens of uploads with one key


def stored(settings) -> list[str]:
    return sorted(
        str(p.relative_to(settings.data_dir))
        for p in settings.data_dir.rglob("*")
        if p.is_file() and p.suffix != ".db" and p.parent.name != "secrets"
    )


def post(client, key, data: bytes, api: str):
    files = {"file": ("train.jsonl", io.BytesIO(data))}
    if api == "native":
        return client.post("/api/v1/datasets", headers=bearer(key), files=files)
    return client.post("/v1/files", headers=bearer(key), files=files, data={"purpose": "fine-tune"})


def nothing_stored(client, key, settings) -> None:
    assert stored(settings) == []
    assert client.get("/api/v1/datasets", headers=bearer(key)).json()["data"] == []


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("train.jsonl", (GOOD + "\n") * 4)
    return buffer.getvalue()


CASES = {
    # name: (bytes, line named in the problems, words the reason must contain)
    "truncated JSON": (f"{GOOD}\n{GOOD}\n{GOOD[:25]}".encode(), 3, "JSON"),
    "trailing garbage": (f"{GOOD}\n{GOOD}}}\n".encode(), 2, "JSON"),
    "content is a number": (
        f'{GOOD}\n{{"messages": [{{"role": "user", "content": 5}}, '
        f'{{"role": "assistant", "content": "x"}}]}}\n'.encode(),
        2,
        "content",
    ),
    "messages is a string": (f'{GOOD}\n{{"messages": "hello"}}\n'.encode(), 2, "messages"),
    "weight is a string": (
        f'{GOOD}\n{{"messages": [{{"role": "user", "content": "a"}}, '
        f'{{"role": "assistant", "content": "b", "weight": "yes"}}]}}\n'.encode(),
        2,
        "weight",
    ),
    "role is null": (
        f'{GOOD}\n{{"messages": [{{"role": null, "content": "a"}}, '
        f'{{"role": "assistant", "content": "b"}}]}}\n'.encode(),
        2,
        "role",
    ),
    "prompt is a list": (b'{"prompt": "a", "completion": "b"}\n{"prompt": ["a"], "completion": "b"}\n', 2, "prompt"),
    "binary with NUL": (b"\x00\x01\x02\x03" * 64, 0, "binary"),
    "invalid UTF-8 on line 3": (f"{GOOD}\n{GOOD}\n".encode() + b"\xc3\x28\n", 3, "UTF-8"),
    "empty": (b"", 0, ""),
    "only blank lines": (b"\n\n  \n", 0, ""),
    "gzip (not accepted)": (gzip.compress(((GOOD + "\n") * 4).encode()), 0, "gzip"),
    "zip (not accepted)": (zip_bytes(), 0, ""),
    # A 40 KB line: a huge role value must not be echoed back whole.
    "huge line with a huge role": (
        f'{GOOD}\n{{"messages": [{{"role": "{"r" * 40000}", "content": "a"}}, '
        f'{{"role": "assistant", "content": "b"}}]}}\n'.encode(),
        2,
        "role",
    ),
    "huge line of garbage": (f"{GOOD}\n".encode() + b"{" + b"x" * 50000 + b"\n", 2, "JSON"),
    "deeply nested JSON": (f"{GOOD}\n".encode() + b"[" * 20000 + b"]" * 20000 + b"\n", 2, ""),
    # Past Python's int-conversion limit (4,300 digits) json.loads raises a plain ValueError, not JSONDecodeError.
    "integer of 5,000 digits": (
        f'{GOOD}\n{GOOD}\n{{"prompt": "a", "completion": "b", "n": {"7" * 5000}}}\n'.encode(),
        3,
        "digits",
    ),
}


@pytest.mark.parametrize("api", ["native", "openai"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_is_a_4xx_naming_the_line_and_nothing_is_stored(client, key, settings, case, api):
    data, line, words = CASES[case]
    response = post(client, key, data, api)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:500])
    assert len(response.content) <= MAX_ERROR_BYTES, (case, len(response.content))
    body = response.json()
    error = body["error"]
    assert error["param"] == "file" and error["code"] == "invalid_dataset", body
    assert line in [p["line"] for p in body["problems"]], body
    assert (f"line {line}" if line else "file") in error["message"]
    if words:
        assert words.lower() in " ".join(p["reason"] for p in body["problems"]).lower(), body
    nothing_stored(client, key, settings)


def mutate(rng: random.Random, data: bytearray, how: str) -> bytes:
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == "truncate":
        del data[rng.randrange(1, len(data)) :]
    elif how == "insert":
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif how == "duplicate line break":
        at = rng.randrange(len(data))
        data[at:at] = b"\n" * rng.randint(1, 3)
    return bytes(data)


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), how=st.sampled_from(["flip", "truncate", "insert", "duplicate line break"]))
def test_random_mutations_are_201_or_a_4xx_naming_a_line(client, key, settings, seed, how):
    rng = random.Random(seed)
    data = mutate(rng, bytearray(jsonl(chat_rows(6))), how)
    response = post(client, key, data, "native")
    assert response.status_code in (201, 422), (response.status_code, response.text[:500])
    if response.status_code == 201:
        dataset = response.json()
        assert client.delete(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key)).status_code == 200
    else:
        body = response.json()
        assert body["problems"] and all(isinstance(p["line"], int) and p["reason"] for p in body["problems"])
        assert len(response.content) <= MAX_ERROR_BYTES
    nothing_stored(client, key, settings)
