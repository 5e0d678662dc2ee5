"""A task a pretrained chat model gets wrong before fine-tuning and can get right after it: arithmetic with exact
answers, generated from a seed (offline, no downloads).

    user: What is 47 + 89?          assistant: 136
    user: What is 82 - 15?          assistant: 67
    user: What is 7 * 12?           assistant: 84

Addition and subtraction of 2-digit numbers, the times table to 12; the answer is the number alone, so exact match
of the greedy answer is the metric (an instruction-tuned model answers in a sentence, or with a wrong number,
before it is tuned). Sized so that a 135 M-parameter model gets some of it right after a few hundred rows. The held-out split is clean, and no (operands, operator) of it is in
the training split.

Two training splits:

- ``clean``: every row correct;
- ``noisy``: the same questions with what scraped data has, in the man-page task's shares
  (`manpages.KIND_SHARES`): ``clean`` rows; ``duplicate`` (a clean row again, cosmetically changed);
  ``truncated`` (the answer's last digits cut off); ``off_topic`` (a Debian package's synopsis); ``wrong`` (the
  answer off by a few units or tens). ``train_meta.jsonl`` gives the kind of each row.

    .venv/bin/python -m benchmarks.quality.arithmetic --out /tmp/arith [--noisy]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from benchmarks.quality import corpus
from benchmarks.quality.manpages import KIND_SHARES, kind_counts

OPERATORS = ("+", "-", "*")


def problem(rng: random.Random) -> tuple[int, str, int]:
    """(a, operator, b): two 2-digit numbers for + and - (the result never negative), the times table to 12 for *."""
    operator = rng.choice(OPERATORS)
    if operator == "*":
        return rng.randint(2, 12), operator, rng.randint(2, 12)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return (max(a, b), operator, min(a, b)) if operator == "-" else (a, operator, b)


def answer(a: int, operator: str, b: int) -> int:
    return a + b if operator == "+" else a - b if operator == "-" else a * b


def question(a: int, operator: str, b: int) -> str:
    return f"What is {a} {operator} {b}?"


def _chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def problems(n: int, rng: random.Random, exclude: set) -> list[tuple[int, str, int]]:
    """`n` distinct problems, none of them in `exclude` (which is extended with them)."""
    drawn: list[tuple[int, str, int]] = []
    while len(drawn) < n:
        p = problem(rng)
        if p not in exclude:
            exclude.add(p)
            drawn.append(p)
    return drawn


def _cosmetic(user: str, rng: random.Random) -> str:
    change = rng.randrange(3)
    if change == 0:
        return user.lower()
    if change == 1:
        return user.replace("What is", "What's")
    return user.replace("?", " ?")


def _wrong(value: int, rng: random.Random) -> int:
    offset = rng.choice((1, 2, 10, 20, 100)) * rng.choice((-1, 1))
    return value + offset


def build(n_train: int, n_eval: int, seed: int = 0, noisy: bool = False) -> tuple[list[dict], list[str], list[dict]]:
    """(training rows, their kinds, clean held-out rows)."""
    rng = random.Random(seed)
    seen: set = set()
    eval_rows = [_chat(question(*p), str(answer(*p))) for p in problems(n_eval, rng, seen)]
    if not noisy:
        return (
            [_chat(question(*p), str(answer(*p))) for p in problems(n_train, rng, seen)],
            ["clean"] * n_train,
            eval_rows,
        )
    counts = kind_counts(n_train, KIND_SHARES)
    rows: list[tuple[dict, str]] = []
    clean = [(question(*p), str(answer(*p))) for p in problems(counts["clean"], rng, seen)]
    rows += [(_chat(user, reply), "clean") for user, reply in clean]
    for _ in range(counts["duplicate"]):
        user, reply = rng.choice(clean)
        rows.append((_chat(_cosmetic(user, rng), reply), "duplicate"))
    for p in problems(counts["truncated"], rng, seen):
        text = str(answer(*p))
        cut = text[: max(1, len(text) // 2)] if len(text) > 1 else text + "0"  # never the right answer
        rows.append((_chat(question(*p), cut), "truncated"))
    for p in problems(counts["wrong"], rng, seen):
        rows.append((_chat(question(*p), str(_wrong(answer(*p), rng))), "wrong"))
    packages = [p for p in corpus.dpkg_packages() if p["Description"]]
    for package in rng.sample(packages, min(counts["off_topic"], len(packages))):
        rows.append((_chat(f"What is the package {package['Package']} for?", package["Description"]), "off_topic"))
    rng.shuffle(rows)
    return [row for row, _ in rows], [kind for _, kind in rows], eval_rows


def write(out: Path, n_train: int = 256, n_eval: int = 64, seed: int = 0, noisy: bool = False) -> dict:
    """train.jsonl, train_meta.jsonl (the kind of each row) and eval.jsonl under `out`; returns the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, kinds, eval_rows = build(n_train, n_eval, seed, noisy)
    (out / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in train))
    (out / "train_meta.jsonl").write_text("".join(json.dumps({"kind": kind}) + "\n" for kind in kinds))
    (out / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in eval_rows))
    return {"train": len(train), "eval": len(eval_rows), "kinds": {k: kinds.count(k) for k in dict.fromkeys(kinds)}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-rows", type=int, default=256)
    parser.add_argument("--eval-rows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noisy", action="store_true")
    args = parser.parse_args()
    print(write(Path(args.out), args.train_rows, args.eval_rows, args.seed, args.noisy))
