"""A second task where data quality varies for real: instruction data about command-line options, built from the
man pages on this machine (offline).

Two kinds of question, half each, both about an option `X` of a command `Y` as its man page documents it:

    user: What does the option --all of the command ls do?          assistant: do not ignore entries starting with .
    user: Which option of ls does this: do not ignore entries ...?  assistant: --all

The held-out split is clean, and its commands are those whose man page the BPE base never saw (`corpus.is_heldout`),
so it measures a skill (reading/guessing from names and descriptions), not recall. The training split mixes in
what scraped instruction data has, in measured shares (`KIND_SHARES`):

- ``clean``      correct rows;
- ``duplicate``  a clean row again with cosmetic changes (case, spacing, "What's");
- ``truncated``  the answer cut after a third to a half of its words;
- ``off_topic``  a row about something else: a Debian package's synopsis ("What is the package X for?");
- ``wrong``      the answer belongs to another option of another command.

    .venv/bin/python -m benchmarks.quality.manpages --out /tmp/manpages      # train.jsonl, train_meta.jsonl, eval.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from benchmarks.quality import corpus

KIND_SHARES = {"clean": 0.50, "duplicate": 0.15, "truncated": 0.10, "off_topic": 0.10, "wrong": 0.15}
MAX_ANSWER_CHARS = 90
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)")


def first_sentence(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    """The description's first sentence, cut at a word boundary under `limit` characters."""
    text = " ".join(text.split())
    match = re.match(r"(.+?[.;:])(\s|$)", text)
    text = (match.group(1) if match else text).rstrip(".;:")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0]
    return text


def option_entries(source: str) -> list[tuple[str, str]]:
    """(option, description) pairs of a man page's roff source: a tag line (after .TP or in .IP) that starts with
    an option, followed by its description text. The option is the long form when the tag has one."""
    entries, tag, text = [], None, []

    def close():
        if tag and text:
            options = _OPTION.findall(tag)
            if options:
                option = next((o for o in options if o.startswith("--")), options[0])
                description = first_sentence(" ".join(text))
                if len(description.split()) >= 3:
                    entries.append((option, description))

    for kind, line in corpus.roff_lines(source):
        if kind == "tag":
            close()
            tag, text = (line if line.startswith("-") else None), []
        elif kind == "text" and tag is not None:
            text.append(line)
        elif kind in ("heading", "para") and text:
            close()
            tag, text = None, []
    close()
    # One entry per option (some pages document an option twice).
    seen, unique = set(), []
    for option, description in entries:
        if option not in seen:
            seen.add(option)
            unique.append((option, description))
    return unique


def _question(command: str, option: str, description: str, which: bool) -> tuple[str, str]:
    if which:
        return f"Which option of {command} does this: {description}?", option
    return f"What does the option {option} of the command {command} do?", description


def _chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def _cosmetic(user: str, rng: random.Random) -> str:
    change = rng.randrange(3)
    if change == 0:
        return user.lower()
    if change == 1:
        return "  ".join(user.split(" "))
    return user.replace("What does", "What's").replace("Which option", "which option")


def collect(seed: int, heldout: bool, want: int, per_command: int = 3) -> list[tuple[str, str, str]]:
    """(command, option, description) from section-1/8 man pages, held-out commands or the others, seeded order,
    at most `per_command` from one family of pages, so that a few huge pages (bash, gcc) or families (gcloud_*) do
    not make up the task."""
    rng = random.Random(seed)
    paths = [
        p for p in corpus.man_page_paths(("man1", "man8")) if corpus.is_heldout(f"man:{corpus.man_name(p)}") == heldout
    ]
    rng.shuffle(paths)
    rows, families = [], {}
    for path in paths:
        # Families (gcloud has thousands of near-identical subcommand pages, git-*, systemd-*) count as one command.
        family = re.split(r"[_.-]", corpus.man_name(path))[0]
        if families.get(family, 0) >= per_command:
            continue
        source = corpus._read_text(path)
        if not source or source.lstrip().startswith(".so "):
            continue
        entries = option_entries(source)
        rng.shuffle(entries)
        entries = entries[: per_command - families.get(family, 0)]
        families[family] = families.get(family, 0) + len(entries)
        rows += [(corpus.man_name(path), option, description) for option, description in entries]
        if len(rows) >= want:
            break
    return rows[:want]


def kind_counts(n: int, shares: dict[str, float] = KIND_SHARES) -> dict[str, int]:
    """Rows of each kind for `n` training rows (largest remainder, so they add up to n)."""
    raw = {kind: share * n for kind, share in shares.items()}
    counts = {kind: int(value) for kind, value in raw.items()}
    for kind in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[kind] += 1
    return counts


def build(n_train: int = 320, n_eval: int = 48, seed: int = 0) -> tuple[list[dict], list[str], list[dict]]:
    """(training rows, their kinds, clean held-out rows)."""
    rng = random.Random(seed)
    counts = kind_counts(n_train)
    # clean, wrong and duplicate rows each need their own source entry; duplicates copy clean rows.
    sources = collect(seed, heldout=False, want=counts["clean"] + counts["truncated"] + 2 * counts["wrong"])
    rows: list[tuple[dict, str]] = []
    cursor = 0

    def take():
        nonlocal cursor
        cursor += 1
        return sources[cursor - 1]

    clean = []
    for _ in range(counts["clean"]):
        user, answer = _question(*take(), which=rng.random() < 0.5)
        clean.append((user, answer))
        rows.append((_chat(user, answer), "clean"))
    for _ in range(counts["duplicate"]):
        user, answer = rng.choice(clean)
        rows.append((_chat(_cosmetic(user, rng), answer), "duplicate"))
    for _ in range(counts["truncated"]):
        command, option, description = take()
        words = description.split()
        cut = " ".join(words[: max(1, int(len(words) * rng.uniform(0.33, 0.5)))])
        user, _ = _question(command, option, description, which=False)
        rows.append((_chat(user, cut), "truncated"))
    for _ in range(counts["wrong"]):
        command, option, description = take()
        _, other_option, other_description = take()
        which = rng.random() < 0.5
        user, _ = _question(command, option, description, which)
        rows.append((_chat(user, other_option if which else other_description), "wrong"))
    packages = [p for p in corpus.dpkg_packages() if p["Description"]]
    for package in rng.sample(packages, min(counts["off_topic"], len(packages))):
        rows.append((_chat(f"What is the package {package['Package']} for?", package["Description"]), "off_topic"))
    rng.shuffle(rows)
    eval_rows = [
        _chat(*_question(*entry, which=i % 2 == 1))
        for i, entry in enumerate(collect(seed + 1, heldout=True, want=n_eval))
    ]
    return [row for row, _ in rows], [kind for _, kind in rows], eval_rows


def write(out: Path, n_train: int = 320, n_eval: int = 48, seed: int = 0) -> dict:
    """train.jsonl, train_meta.jsonl (the kind of each row) and eval.jsonl under `out`; returns the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, kinds, eval_rows = build(n_train, n_eval, seed)
    (out / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in train))
    (out / "train_meta.jsonl").write_text("".join(json.dumps({"kind": kind}) + "\n" for kind in kinds))
    (out / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in eval_rows))
    return {"train": len(train), "eval": len(eval_rows), "kinds": {k: kinds.count(k) for k in KIND_SHARES}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-rows", type=int, default=320)
    parser.add_argument("--eval-rows", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(Path(args.out), args.train_rows, args.eval_rows, args.seed))
