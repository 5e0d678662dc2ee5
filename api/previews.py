"""Dataset rows for the row and selections views, read from the stored (already validated) file one row at a time.

A preview must cost what it shows: `rows?limit=1` of a 2 M-row file reads one line, not the file. So each stored
dataset has a sidecar row index next to it (`<dataset>.rows`): for every example, the byte offset of its line and
its line number. It is written with the dataset at upload, and built once, lazily, for datasets stored before.

A preview line costs what it shows as well: it reads at most PREVIEW_LINE_BYTES of its row. A longer row (a
4 MB conversation) is previewed from that prefix by `prefix_preview`, which picks the roles and texts out of the
JSON that is there without parsing the rest; a page of previews reads each distinct row once (`previews_of`).

Index layout: a header (magic, the dataset's size in bytes, the number of rows), then one fixed-size record per
row, so row `r` is one seek. The size in the header ties the index to its file: a file of another size (replaced
or truncated) gets its index rebuilt instead of serving other rows.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

from api.models import Dataset
from api.settings import Settings

INDEX_SUFFIX = ".rows"
_MAGIC = b"UDSROWS1"
_HEADER = struct.Struct("<8sQQ")  # magic, dataset bytes, rows
_RECORD = struct.Struct("<QI")  # byte offset of the row's line, its 1-based line number
_SCAN_CHUNK = 1 << 20
_LINE_CHUNK = 64 * 1024
_BOM = b"\xef\xbb\xbf"
PREVIEW_LINE_BYTES = 64 * 1024
# A JSON string literal, possibly cut off by the end of the prefix; then whether a colon follows (it is a key).
_STRING = re.compile(rb'"((?:[^"\\]|\\.)*)(?:"(\s*:)?|$)')
TEXT_KEYS = ("content", "text", "prompt", "completion", "instruction", "input", "output", "response")

# Every read of a dataset or an index goes through this, so a test can count the bytes a preview costs.
open_file = open


def index_path(dataset_path: Path) -> Path:
    return dataset_path.with_name(dataset_path.name + INDEX_SUFFIX)


def _scan_rows(dataset_path: Path) -> Iterator[tuple[int, int]]:
    """(offset, line) of every non-blank line: in a validated file, every one of them is an example, in order."""
    for offset, line, _ in _scan_lines(dataset_path):
        yield offset, line


def _scan_lines(dataset_path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(offset, line, text) of every non-blank line, read in large chunks."""
    offset, line, pending = 0, 0, b""
    with open_file(dataset_path, "rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            data = pending + chunk
            start = 0
            while (end := data.find(b"\n", start)) != -1:
                line += 1
                text = data[start:end]
                if text.decode("utf-8", "replace").strip():
                    yield offset + start, line, text
                start = end + 1
            offset += start
            pending = data[start:]
    if pending.decode("utf-8", "replace").strip():
        yield offset, line + 1, pending


def row_labels(dataset_path: Path, field: str) -> tuple[str | None, ...]:
    """Per row (row r = the r-th non-blank line, as everywhere here), the string the row's object holds under
    `field`, or None where it holds none (absent, or not a string).

    A comparison's report asks for these on every poll while its jobs run; a stored dataset never changes, so the
    pass over the file is made once per (file, size, mtime, field) and kept for the few most recent."""
    stat = dataset_path.stat()
    return _row_labels(str(dataset_path), stat.st_size, stat.st_mtime_ns, field)


@functools.lru_cache(maxsize=4)
def _row_labels(dataset_path: str, size: int, mtime_ns: int, field: str) -> tuple[str | None, ...]:
    distinct: dict[str, str] = {}  # one object per distinct label: a few labels over millions of rows
    labels: list[str | None] = []
    for _, _, text in _scan_lines(Path(dataset_path)):
        record = json.loads(text.removeprefix(_BOM).decode("utf-8"))
        value = record.get(field) if isinstance(record, dict) else None
        labels.append(distinct.setdefault(value, value) if isinstance(value, str) else None)
    return tuple(labels)


def write_index(dataset_path: Path) -> Path:
    """Write the row index of `dataset_path` (atomically: a concurrent reader sees the old one or the new one)."""
    target = index_path(dataset_path)
    size = dataset_path.stat().st_size
    fd, temp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_HEADER.pack(_MAGIC, size, 0))
            rows = 0
            for offset, line in _scan_rows(dataset_path):
                out.write(_RECORD.pack(offset, line))
                rows += 1
            out.seek(0)
            out.write(_HEADER.pack(_MAGIC, size, rows))
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def remove_index(dataset_path: Path) -> None:
    index_path(dataset_path).unlink(missing_ok=True)


class DatasetRowReader:
    """The examples of one stored dataset as a sequence: `len()` from the index, `reader[row]` reads one line."""

    def __init__(self, dataset_path: Path, rows: int):
        self.dataset_path, self.rows = dataset_path, rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, row: int):
        if not 0 <= row < self.rows:
            raise IndexError(row)
        return self.example(row)

    def page(self, offset: int, limit: int) -> list:
        return [self.example(r) for r in range(offset, min(self.rows, offset + limit))]

    def _locate(self, row: int) -> tuple[int, int]:
        with open_file(index_path(self.dataset_path), "rb") as index:
            index.seek(_HEADER.size + row * _RECORD.size)
            return _RECORD.unpack(index.read(_RECORD.size))

    def example(self, row: int, raw: bytes | None = None):
        """uds.formats.Example of `row`, parsed from its line alone."""
        from uds.formats import Example, detect_format, normalise_record

        offset, line = self._locate(row)
        if raw is None:
            with open_file(self.dataset_path, "rb") as handle:
                raw, _ = _read_line(handle, offset)
        record = json.loads(raw.removeprefix(_BOM).decode("utf-8"))
        fmt = detect_format(record)
        if fmt is None:  # validated on upload: every stored row is in a known format
            raise ValueError(f"row {row} (line {line}) of {self.dataset_path} is in no known format")
        return Example(row=row, line=line, messages=normalise_record(record, fmt))

    def preview(self, row: int, max_chars: int) -> str:
        """The row's one-line preview from at most PREVIEW_LINE_BYTES of it."""
        from uds.formats import example_preview

        offset, _ = self._locate(row)
        with open_file(self.dataset_path, "rb") as handle:
            raw, whole = _read_line(handle, offset, PREVIEW_LINE_BYTES)
        if whole:
            return example_preview(self.example(row, raw), max_chars=max_chars)
        return prefix_preview(raw, max_chars)


def _read_line(handle, offset: int, limit: int | None = None) -> tuple[bytes, bool]:
    """(line, whole): the line starting at `offset`, read in small chunks up to its newline (never the rest of the
    file), or its first `limit` bytes (whole False) when it is longer."""
    handle.seek(offset)
    parts, size = [], 0
    while chunk := handle.read(_LINE_CHUNK if limit is None else min(_LINE_CHUNK, limit + 1 - size)):
        end = chunk.find(b"\n")
        if end != -1:
            parts.append(chunk[:end])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            return b"".join(parts)[:limit], False
    return b"".join(parts), True


def _json_string(body: bytes) -> str:
    """A JSON string literal's body, decoded; one cut off mid-escape loses only the broken escape."""
    text = body.decode("utf-8", "ignore")
    for end in range(len(text), max(-1, len(text) - 7), -1):
        try:
            return json.loads(f'"{text[:end]}"')
        except ValueError:
            continue
    return text


def prefix_preview(prefix: bytes, max_chars: int = 200) -> str:
    """A preview from the first bytes of a row too long to parse whole: its texts in order, each after its role
    ("user: ...") or its key ("prompt: ..."), as far as the prefix goes, ending in an ellipsis."""
    from uds.formats import _cut

    parts: list[str] = []
    key = role = None
    for match in _STRING.finditer(prefix):
        if match.group(2):  # a key: the next string is its value
            key = _json_string(match.group(1))
            continue
        value = _json_string(match.group(1))
        if key == "role" or key == "from":
            role = value
        elif key in TEXT_KEYS or key == "value":
            label = role if key in ("content", "value") and role else key
            parts.append(f"{label}: {' '.join(value.split())}")
            role = None
        key = None
        if sum(len(p) for p in parts) > max_chars:
            break
    return _cut(" | ".join(parts) + " …", max_chars)


def previews_of(examples: DatasetRowReader | None, rows, max_chars: int = 200) -> dict[int, str | None]:
    """row -> preview for a page of rows, each distinct row read once (a page of selections repeats rows)."""
    return {row: row_preview(examples, row, max_chars) for row in set(rows)}


def _index_rows(dataset_path: Path) -> int | None:
    """Rows in the index of `dataset_path`, or None when it is missing, damaged or for another file."""
    try:
        with open_file(index_path(dataset_path), "rb") as index:
            magic, size, rows = _HEADER.unpack(index.read(_HEADER.size))
    except (OSError, struct.error):
        return None
    if magic != _MAGIC or size != dataset_path.stat().st_size:
        return None
    return rows


def examples_for(settings: Settings, dataset: Dataset | None) -> DatasetRowReader | None:
    """The dataset's examples, read on demand, or None if the dataset or its file is gone."""
    if dataset is None:
        return None
    path = settings.served_file(dataset.storage_path)  # None when missing or a link out of the data folder
    if path is None:
        return None
    rows = _index_rows(path)
    if rows is None:  # stored before indexes existed (or the index was lost): one scan, then never again
        write_index(path)
        rows = _index_rows(path)
    return DatasetRowReader(path, rows or 0)


def row_preview(examples: DatasetRowReader | None, row: int, max_chars: int = 200) -> str | None:
    if examples is None or not 0 <= row < len(examples):
        return None
    return examples.preview(row, max_chars)
