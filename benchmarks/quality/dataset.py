"""The instruction dataset of the quality benchmark, built from Python's standard library (offline, PSF-licensed text).

Task ("signature QA"): the prompt shows a real stdlib callable, its signature and the first sentence of its
docstring, and asks for its first or its last parameter; the answer is that parameter exactly as the signature
writes it (`obj`, `*args`, `**kwds`). It is a skill, not a memory: the answer is in the prompt, so a model can
learn it from some functions and apply it to functions it never saw. Exact match is therefore a fair metric.

    >>> user:      json.dumps(obj, *, skipkeys=False, ensure_ascii=True, ...)
    ...            Serialize ``obj`` to a JSON formatted ``str``.
    ...            What is the last parameter?
    ... assistant: **kw

Splits (by module, so no function, class or docstring of the held-out split is in the training split):

- ``eval.jsonl`` -- CLEAN: module-level functions of the held-out modules, with >= 2 parameters, correct answers,
  no duplicates. One row per (function, question).
- ``train.jsonl`` -- what a user would upload, with the imperfections that make selection matter:
    * ``clean``     correct rows like the eval ones (module-level functions of the training modules);
    * ``easy``      methods of classes: the first parameter is almost always ``self`` (trivially easy rows);
    * ``templated`` methods whose docstring is boilerplate shared by many classes ("Return self==value.",
                    "Initialize self.  See help(type(self))...") -- near-duplicate rows;
    * ``duplicate`` extra copies of random rows with cosmetic changes (case, spacing, punctuation);
    * ``noisy``     a wrong answer: a parameter name of another function, or the answer truncated.
  ``train_meta.jsonl`` holds the kind of each training row (same order), for the analysis of what was selected.

Everything is deterministic given the seed and the Python version (the shipped files were built with 3.11).

    .venv/bin/python -m benchmarks.quality.dataset --out benchmarks/quality/data
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
import warnings
from pathlib import Path

# Modules that import cleanly with no side effects. The first group is training, the second held out.
TRAIN_MODULES = (
    "abc argparse ast base64 bisect bz2 calendar cmath codecs collections colorsys configparser contextlib copy csv "
    "datetime decimal difflib dis email.utils enum filecmp fnmatch fractions ftplib functools getopt gettext glob "
    "gzip hashlib heapq hmac html http.client imaplib inspect io ipaddress itertools keyword linecache locale logging "
    "lzma mailbox math mimetypes operator optparse os os.path pathlib pickle pkgutil platform plistlib poplib pprint "
    "queue quopri random re reprlib sched secrets selectors shelve shlex shutil smtplib socket sqlite3 ssl "
    "stat string struct subprocess sysconfig tarfile tempfile textwrap threading time timeit tokenize"
).split()
EVAL_MODULES = (
    "json statistics traceback typing unicodedata urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom "
    "xml.etree.ElementTree zipfile zlib zoneinfo array binascii cgi chunk codeop compileall concurrent.futures "
    "contextvars dataclasses dbm email.message ensurepip graphlib numbers pydoc pyclbr runpy symtable tabnanny trace"
).split()

QUESTIONS = {"first": "What is the first parameter?", "last": "What is the last parameter?"}
MAX_SIGNATURE_CHARS = 64
MAX_SUMMARY_CHARS = 48


def _summary(doc: str | None) -> str | None:
    if not doc:
        return None
    text = " ".join(doc.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    text = match.group(1) if match else text
    if len(text) > MAX_SUMMARY_CHARS:
        text = text[:MAX_SUMMARY_CHARS].rsplit(" ", 1)[0] + " ..."
    return text or None


def _record(qualname: str, obj, is_method: bool) -> dict | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = [str(p).split("=")[0].split(":")[0].strip() for p in signature.parameters.values()]
    params = [p for p in params if p not in ("/", "*")]
    rendered = f"{qualname}{signature}"
    summary = _summary(inspect.getdoc(obj) if not is_method else (obj.__doc__ or ""))
    if not params or not summary or len(rendered) > MAX_SIGNATURE_CHARS:
        return None
    return {"name": qualname, "signature": rendered, "summary": summary, "params": params, "method": is_method}


def collect(module_names) -> list[dict]:
    """Module-level functions and methods of public classes, each with a signature and a docstring summary."""
    records, seen = [], set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in module_names:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # noqa: BLE001 - a module missing on this build is skipped
                continue
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or getattr(obj, "__module__", module_name) != module.__name__:
                    continue
                if inspect.isfunction(obj) or inspect.isbuiltin(obj):
                    candidates = [(f"{module_name}.{name}", obj, False)]
                elif inspect.isclass(obj):
                    candidates = [
                        (f"{module_name}.{name}.{attr}", member, True)
                        for attr, member in sorted(vars(obj).items())
                        if callable(member)
                        and (
                            not attr.startswith("_")
                            or attr in ("__init__", "__eq__", "__lt__", "__repr__", "__hash__", "__call__")
                        )
                    ]
                else:
                    continue
                for qualname, member, is_method in candidates:
                    if qualname in seen:
                        continue
                    record = _record(qualname, member, is_method)
                    if record is not None:
                        seen.add(qualname)
                        records.append(record)
    return records


def _row(record: dict, question: str, answer: str) -> dict:
    user = f"{record['signature']}\n{record['summary']}\n{QUESTIONS[question]}"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _answer(record: dict, question: str) -> str:
    return record["params"][0] if question == "first" else record["params"][-1]


TEMPLATED = re.compile(r"^(Return self|Initialize self|Implement |Return repr|Return hash|Call self|Return str)")


def build(
    seed: int = 0, noise: float = 0.2, duplicates: float = 0.15, max_eval: int = 64, max_train: int = 384
) -> tuple[list, list, list]:
    rng = random.Random(seed)
    train_records = collect(TRAIN_MODULES)
    eval_records = [r for r in collect(EVAL_MODULES) if not r["method"] and len(r["params"]) >= 2]

    eval_rows = [_row(r, q, _answer(r, q)) for r in eval_records for q in QUESTIONS]
    rng.shuffle(eval_rows)
    eval_rows = eval_rows[:max_eval]

    rows, kinds = [], []
    all_params = sorted({p for r in train_records for p in r["params"]})
    for record in train_records:
        for question in QUESTIONS:
            answer = _answer(record, question)
            if TEMPLATED.match(record["summary"]):
                kind = "templated"
            elif record["method"]:
                kind = "easy" if question == "first" else "clean"
            else:
                kind = "clean"
            if rng.random() < noise:
                wrong = rng.choice(all_params) if rng.random() < 0.7 else answer[: max(1, len(answer) // 2)]
                if wrong != answer:
                    answer, kind = wrong, "noisy"
            rows.append(_row(record, question, answer))
            kinds.append(kind)
    # Near-duplicates: copies of random rows with cosmetic changes (2-4 copies each).
    originals = list(range(len(rows)))
    for index in rng.sample(originals, int(duplicates * len(originals))):
        for _ in range(rng.randint(2, 4)):
            copy = json.loads(json.dumps(rows[index]))
            user = copy["messages"][0]
            user["content"] = rng.choice(
                [
                    user["content"].replace("?", ""),
                    user["content"].lower(),
                    user["content"] + " ",
                    user["content"].replace("\n", " \n"),
                    user["content"].replace("What is", "what's"),
                ]
            )
            rows.append(copy)
            kinds.append("duplicate")
    order = list(range(len(rows)))
    rng.shuffle(order)
    order = order[:max_train]  # a uniform sample keeps the mix of kinds; small enough for CPU runs
    return [rows[i] for i in order], [kinds[i] for i in order], eval_rows


def pretraining_text(seed: int = 0) -> str:
    """General text for the base model: docstrings of the training AND held-out modules (as any web-scale
    corpus would hold them; the base model learns the language, not the task) and Debian package descriptions."""
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in TRAIN_MODULES + EVAL_MODULES:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # noqa: BLE001
                continue
            if module.__doc__:
                parts.append(f"Module {module_name}.\n{inspect.cleandoc(module.__doc__)}")
            for name, obj in sorted(vars(module).items()):
                if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
                    continue
                doc = inspect.getdoc(obj)
                if doc:
                    parts.append(f"{module_name}.{name}\n{doc}")
    status = Path("/var/lib/dpkg/status")
    if status.exists():
        for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            match = re.search(r"^Package: (.+)$", stanza, re.M)
            description = re.search(r"^Description: (.*(?:\n .*)*)", stanza, re.M)
            if match and description:
                body = "\n".join(
                    line[1:] if line.startswith(" ") else line for line in description.group(1).split("\n")
                )
                parts.append(f"Package {match.group(1)}: {body.replace(chr(10) + '.' + chr(10), chr(10) + chr(10))}")
    random.Random(seed).shuffle(parts)
    return "\n\n".join(parts)


def write(out_dir: Path, seed: int = 0) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, kinds, eval_rows = build(seed)
    for name, data in (
        ("train.jsonl", rows),
        ("eval.jsonl", eval_rows),
        ("train_meta.jsonl", [{"kind": k} for k in kinds]),
    ):
        with open(out_dir / name, "w", encoding="utf-8") as f:
            for row in data:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    return {"train": len(rows), "eval": len(eval_rows), "kinds": counts}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "data"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(write(Path(args.out), args.seed)))
