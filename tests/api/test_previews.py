"""Dataset previews cost what they show: a row index written with the dataset, one line read per
row shown. Bytes are counted through api.previews.open_file, the one way previews read files."""

from __future__ import annotations

import json

import pytest

from api import previews
from api.models import Dataset
from tests.utils.factories import alpaca_rows, bearer, jsonl, upload

BIG_ROWS = 60_000  # about 4 MB: a preview that read the file would read a thousand times its bound


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"max_upload_bytes": 16 * 1024 * 1024})


class ByteCounter:
    """Wraps previews.open_file: the bytes every file opened by previews gave back."""

    def __init__(self, monkeypatch):
        self.bytes = 0
        real_open = previews.open_file

        def counting_open(*args, **kwargs):
            handle = real_open(*args, **kwargs)
            real_read = handle.read

            def read(*a):
                data = real_read(*a)
                self.bytes += len(data)
                return data

            handle.read = read
            return handle

        monkeypatch.setattr(previews, "open_file", counting_open)


@pytest.fixture
def big_dataset(client, key):
    return upload(client, key, jsonl(alpaca_rows(BIG_ROWS))).json()


def rows(client, key, dataset_id, **params):
    response = client.get(f"/api/v1/datasets/{dataset_id}/rows", headers=bearer(key), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def index_of(settings, dataset) -> object:
    return settings.data_dir / "datasets" / f"{dataset['id']}.jsonl.rows"


def test_a_one_row_preview_reads_one_line_not_the_file(client, key, settings, big_dataset, monkeypatch):
    assert index_of(settings, big_dataset).is_file()  # written with the dataset
    counter = ByteCounter(monkeypatch)
    first = rows(client, key, big_dataset["id"], limit=1)
    assert first["total"] == BIG_ROWS and first["has_more"] is True
    assert first["data"][0]["row"] == 0 and first["data"][0]["preview"].startswith("user: Add 0 and 1.")
    assert counter.bytes < 100_000 < big_dataset["bytes"] // 40
    counter.bytes = 0
    last = rows(client, key, big_dataset["id"], offset=BIG_ROWS - 1, limit=1)["data"][0]
    assert last["line"] == BIG_ROWS and last["messages"][-1]["content"] == str(2 * (BIG_ROWS - 1) + 1)
    assert counter.bytes < 100_000


def test_selection_previews_read_only_their_rows(settings, big_dataset, monkeypatch):
    dataset = Dataset(id=big_dataset["id"], storage_path=f"datasets/{big_dataset['id']}.jsonl")
    counter = ByteCounter(monkeypatch)
    examples = previews.examples_for(settings, dataset)
    shown = {row: previews.row_preview(examples, row) for row in (7, 30_000, BIG_ROWS - 1, BIG_ROWS)}
    assert shown[7].startswith("user: Add 7 and 8.") and shown[BIG_ROWS] is None
    assert counter.bytes < 3 * 100_000


def test_datasets_stored_before_get_their_index_once(client, key, settings, monkeypatch):
    dataset = upload(client, key, jsonl(alpaca_rows(50))).json()
    index = index_of(settings, dataset)
    index.unlink()  # as a dataset stored by an older version
    assert rows(client, key, dataset["id"], offset=49)["data"][0]["line"] == 50
    assert index.is_file()
    monkeypatch.setattr(previews, "write_index", lambda path: pytest.fail(f"{path} indexed twice"))
    assert rows(client, key, dataset["id"], limit=1)["data"][0]["line"] == 1


def test_an_index_of_another_file_is_rebuilt_not_trusted(client, key, settings):
    dataset = upload(client, key, jsonl(alpaca_rows(5))).json()
    path = settings.data_dir / "datasets" / f"{dataset['id']}.jsonl"
    path.write_bytes(b"\n\n" + jsonl(alpaca_rows(6)))  # replaced behind our back: other offsets, other size
    page = rows(client, key, dataset["id"], offset=5)
    assert page["total"] == 6 and page["data"][0]["line"] == 8


def test_bom_and_blank_lines_keep_rows_and_lines(client, key):
    data = (
        b"\xef\xbb\xbf" + jsonl(alpaca_rows(2)) + b"\n  \n" + json.dumps(alpaca_rows(3)[2]).encode()
    )  # no final newline
    dataset = upload(client, key, data).json()
    page = rows(client, key, dataset["id"])
    assert [(r["row"], r["line"]) for r in page["data"]] == [(0, 1), (1, 2), (2, 5)]
    assert (
        page["data"][0]["preview"].startswith("user: Add 0 and 1.")
        and page["data"][2]["messages"][-1]["content"] == "5"
    )


def test_deleting_a_dataset_deletes_its_index(client, key, settings):
    dataset = upload(client, key, jsonl(alpaca_rows(5))).json()
    assert client.delete(f"/api/v1/datasets/{dataset['id']}", headers=bearer(key)).status_code == 200
    assert not index_of(settings, dataset).exists()


def test_row_labels_read_the_file_once_for_every_poll_of_a_report(tmp_path, monkeypatch):
    # A comparison's report is polled every few seconds while its jobs run; a stored dataset never changes.
    path = tmp_path / "labelled.jsonl"
    path.write_text(
        "".join(f'{{"instruction": "q{i}", "output": "a", "kind": "{"ab"[i % 2]}"}}\n' for i in range(50))
        + '{"instruction": "q", "output": "a"}\n'
    )
    counter = ByteCounter(monkeypatch)
    first = previews.row_labels(path, "kind")
    read_once = counter.bytes
    assert previews.row_labels(path, "kind") == first and counter.bytes == read_once == path.stat().st_size
    assert first[:3] == ("a", "b", "a") and first[-1] is None and len(first) == 51
    assert previews.row_labels(path, "other") == (None,) * 51  # another field is another pass
    path.write_text('{"instruction": "q", "output": "a", "kind": "c"}\n')  # a changed file is read again
    assert previews.row_labels(path, "kind") == ("c",)


def test_previews_of_huge_rows_read_a_bounded_prefix_once_per_row(client, key, settings, monkeypatch):
    """Rows of 4 MB: a page of 1000 selections over three of them reads each row's first PREVIEW_LINE_BYTES once,
    not 1000 x 4 MB, and still says whose words they are."""
    huge = [
        {
            "messages": [
                {"role": "user", "content": f"question {i} " + "w" * 4_000_000},
                {"role": "assistant", "content": "a"},
            ]
        }
        for i in range(3)
    ]
    uploaded = upload(
        client,
        key,
        jsonl(huge + [{"messages": [{"role": "user", "content": "short"}, {"role": "assistant", "content": "row"}]}]),
    ).json()
    dataset = Dataset(id=uploaded["id"], storage_path=f"datasets/{uploaded['id']}.jsonl")
    counter = ByteCounter(monkeypatch)
    examples = previews.examples_for(settings, dataset)
    shown = previews.previews_of(examples, [step % 4 for step in range(1000)])
    assert counter.bytes < 4 * (previews.PREVIEW_LINE_BYTES + 1000)
    assert shown[1].startswith("user: question 1 www") and shown[1].endswith("…") and len(shown[1]) <= 200
    assert shown[3] == "user: short | assistant: row"  # a row that fits is previewed as before
