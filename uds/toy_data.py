"""Small learnable toy tasks for uds-tiny: the demo's dataset, the tests' datasets and the benchmarks' data.

Each task is a deterministic string function of a short random word over a small alphabet, so a byte-level model
(uds-tiny) sees the same few characters everywhere and its loss falls within a few dozen LoRA steps:

- ``reverse``: "Reverse: abc" -> "cba"
- ``copy``:    "Copy: abc"    -> "abc"
- ``upper``:   "Upper: abc"   -> "ABC"
- ``add``:     "Add: 3+4"     -> "7"
- ``mixed``:   reverse, copy or upper, drawn per row

Pure Python (no torch), so the API side and the CLI can use it without loading the ML stack.
"""

from __future__ import annotations

import json
import random

FORMATS = ("chat", "alpaca", "completion", "sharegpt")
TASKS = ("reverse", "copy", "upper", "add", "mixed")
WORD_TASKS = ("reverse", "copy", "upper")
ALPHABET = "abcdefgh"


def _word(rng: random.Random, min_len: int = 3, max_len: int = 6) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(min_len, max_len)))


def make_pair(rng: random.Random, task: str = "reverse") -> tuple[str, str]:
    """One (prompt, answer) pair of `task`."""
    if task == "mixed":
        task = rng.choice(WORD_TASKS)
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
    """One JSONL record in format `fmt` ("chat", "alpaca", "completion" or "sharegpt")."""
    if fmt == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        return {"messages": messages}
    if fmt == "alpaca":
        instruction, _, argument = prompt.partition(": ")
        return {"instruction": instruction, "input": argument, "output": answer}
    if fmt == "completion":
        return {"prompt": prompt, "completion": answer}
    if fmt == "sharegpt":
        turns = [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
        return {"conversations": turns, **({"system": system} if system else {})}
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def make_rows(n: int, fmt: str = "chat", task: str = "reverse", seed: int = 0, system: str | None = None) -> list[dict]:
    return [pair_to_row(prompt, answer, fmt, system) for prompt, answer in make_pairs(n, task, seed)]


def to_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
