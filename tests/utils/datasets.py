"""Dataset files for tests: the toy tasks of uds.toy_data written as JSONL, plus raw lines for malformed-file tests.

Usage: ``write_dataset(tmp_path / "train.jsonl", 64, fmt="alpaca", seed=1)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from uds.toy_data import make_rows


def write_jsonl(path, rows: Iterable) -> Path:
    """Write one line per row: dicts as JSON, str and bytes as they are (for malformed-line tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for row in rows:
            if isinstance(row, bytes):
                line = row
            elif isinstance(row, str):
                line = row.encode("utf-8")
            else:
                line = json.dumps(row, ensure_ascii=False).encode("utf-8")
            handle.write(line + b"\n")
    return path


def make_jsonl(tmp_path, rows: Iterable, name: str = "data.jsonl") -> Path:
    """`write_jsonl` into `tmp_path / name`; returns the file's path."""
    return write_jsonl(Path(tmp_path) / name, rows)


def write_dataset(
    path, n: int, fmt: str = "chat", seed: int = 0, task: str = "reverse", system: str | None = None
) -> Path:
    """Write `n` examples of `task` in format `fmt` to `path` (a JSONL file); returns the path."""
    return write_jsonl(path, make_rows(n, fmt=fmt, task=task, seed=seed, system=system))
