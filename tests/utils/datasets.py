"""Factories for small, learnable synthetic datasets in each supported format.

The tasks are deterministic string functions of a short random word over a small alphabet, so a byte-level
model (uds-tiny) sees the same few characters everywhere and its loss falls within a few dozen LoRA steps:

- ``reverse``: "Reverse: abc" -> "cba"
- ``copy``:    "Copy: abc"    -> "abc"
- ``upper``:   "Upper: abc"   -> "ABC"
- ``add``:     "Add: 3+4"     -> "7"

Usage: ``write_dataset(tmp_path / "train.jsonl", 64, fmt="alpaca", seed=1)``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

FORMATS = ("chat", "alpaca", "completion")
TASKS = ("reverse", "copy", "upper", "add")
ALPHABET = "abcdefgh"


def _word(rng: random.Random, min_len: int = 3, max_len: int = 6) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(min_len, max_len)))


def make_pair(rng: random.Random, task: str = "reverse") -> tuple[str, str]:
    """One (prompt, answer) pair of `task`."""
    if task == "add":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"Add: {a}+{b}", str(a + b)
    word = _word(rng)
    if task == "reverse":
        return f"Reverse: {word}", word[::-1]
    if task == "copy":
        return f"Copy: {word}", word
    if task == "upper":
        return f"Upper: {word}", word.upper()
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def make_pairs(n: int, task: str = "reverse", seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [make_pair(rng, task) for _ in range(n)]


def pair_to_row(prompt: str, answer: str, fmt: str = "chat", system: str | None = None) -> dict:
    """One JSONL record in format `fmt` ("chat", "alpaca" or "completion")."""
    if fmt == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return {"messages": messages}
    if fmt == "alpaca":
        instruction, _, argument = prompt.partition(": ")
        return {"instruction": instruction, "input": argument, "output": answer}
    if fmt == "completion":
        return {"prompt": prompt, "completion": answer}
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def make_rows(n: int, fmt: str = "chat", task: str = "reverse", seed: int = 0, system: str | None = None) -> list[dict]:
    return [pair_to_row(prompt, answer, fmt, system) for prompt, answer in make_pairs(n, task, seed)]


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
