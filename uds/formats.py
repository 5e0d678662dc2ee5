"""Training-data formats: validation with line-numbered problems, and loading as normalised chat examples.

Torch-free on purpose (stdlib only): the API validates uploads with it before anything is stored.

A dataset is a JSONL file, one example per line, all lines in one of four formats:

- ``chat`` (OpenAI fine-tuning format): ``{"messages": [{"role": "system"|"user"|"assistant", "content": str,
  "weight": 0|1}, ...]}``. ``weight`` is allowed on assistant messages only (default 1); weight 0 keeps the turn
  as context but never trains on it. ``developer`` is accepted as another name for ``system``. At least one
  assistant message with weight 1 is required.
- ``alpaca``: ``{"instruction": str, "input": str (optional), "output": str}``; becomes user = instruction
  (+ "\\n\\n" + input when input is non-empty), assistant = output.
- ``completion``: ``{"prompt": str, "completion": str}``; becomes user = prompt, assistant = completion.
- ``sharegpt`` (ShareGPT, as LLaMA-Factory reads it): ``{"conversations": [{"from": "human"|"gpt"|"system",
  "value": str}, ...], "system": str (optional)}``; ``user``/``assistant`` are accepted as roles and
  ``role``/``content`` as keys (LLaMA-Factory's variants). Becomes chat: human = user, gpt = assistant (every
  answer trained on), the optional ``system`` first.

Other keys are ignored. Blank lines are skipped (they still count for line numbers). The file's format is that of
its first line with a recognisable format; a line in another format is a problem on that line. A file that is
not JSON Lines at all (CSV, TSV, a JSON array on one line or pretty-printed) gets one line-0 problem saying so,
first, before its line problems.

Validation reads the whole input and reports every problem, each with its 1-based line number (0 for problems
with the whole file), up to ``max_problems``; a last line-0 problem says how many more were left out.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

FORMATS = ("chat", "alpaca", "completion", "sharegpt")
FORMAT_NAMES = {
    "chat": "chat (messages)",
    "alpaca": "Alpaca (instruction/output)",
    "completion": "prompt/completion",
    "sharegpt": "ShareGPT (conversations)",
}
ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}
# ShareGPT's speaker names; LLaMA-Factory also reads role names and "role"/"content" keys in the same shape.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
UNRECOGNISED = (
    "expected 'messages' (chat), 'conversations' (ShareGPT), 'instruction' and 'output' (Alpaca), "
    "or 'prompt' and 'completion'"
)
MAX_KEYS_NAMED = 8

MAX_REASON_CHARS = 300

# A well-formed JSONL file never contains NUL; checking the first bytes catches common wrong uploads early.
BINARY_SIGNATURES = {
    b"\x1f\x8b": "the file is gzip-compressed; upload the uncompressed JSONL file",
    b"PK\x03\x04": "the file is a zip archive; upload the JSONL file itself",
    b"PAR1": "the file is Parquet; convert it to JSONL (one JSON object per line)",
}


@dataclass
class Problem:
    line: int  # 1-based; 0 for problems with the whole file
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else f"file: {self.reason}"


@dataclass
class Example:
    row: int  # 0-based index among the valid examples of the file
    line: int  # 1-based line number in the file
    messages: list[dict]  # {"role": "system"|"user"|"assistant", "content": str, "weight": 0|1}


@dataclass
class ValidationReport:
    format: str | None
    n_examples: int  # valid examples
    problems: list[Problem] = field(default_factory=list)
    omitted: int = 0  # problems found beyond max_problems (also said by the last problem in `problems`)

    @property
    def ok(self) -> bool:
        return not self.problems


class DatasetError(ValueError):
    """A dataset failed validation. `problems` holds every reported problem; str() gives one per line. `total`
    counts every problem found, also those beyond the validator's max_problems."""

    def __init__(self, problems: list[Problem], total: int | None = None):
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))

    def __reduce__(self):
        # Rebuild from the problems, not the message, when pickled (e.g. across a process pool or task queue).
        return (type(self), (self.problems, self.total))

    def summary(self, limit: int = 20) -> list[str]:
        """The first `limit` problems, one per line, then how many more there are: what a terminal can show."""
        shown = [p for p in self.problems if not _is_omission_note(p)][:limit]
        lines = [str(problem) for problem in shown]
        if self.total > len(shown):
            lines.append(f"... and {self.total - len(shown)} more problems ({self.total} in all)")
        return lines


def _is_omission_note(problem: Problem) -> bool:
    return problem.line == 0 and problem.reason.endswith("more problems not shown")


# ---------------------------------------------------------------------------------------------------------------
# Per-record checks: each returns (messages or None, list of reasons).


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_lone_surrogate(text: str) -> bool:
    # JSON allows "\ud800" escapes that are not valid Unicode; tokenizers fail on them much later.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(value: Any, what: str, allow_empty: bool = False) -> str | None:
    """The reason `value` is not acceptable text, or None."""
    if not isinstance(value, str):
        return f"{what} must be a string, got {_json_type(value)}"
    if not allow_empty and not value.strip():
        return f"{what} is empty"
    if _has_lone_surrogate(value):
        return f"{what} contains an invalid \\u escape (a lone surrogate)"
    return None


def detect_format(record: Any) -> str | None:
    """The format a parsed line is written in ("chat", "alpaca", "completion"), or None if unrecognisable."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "chat"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "prompt" in record or "completion" in record:
        return "completion"
    return None


def _check_message(index: int, message: Any) -> tuple[dict | None, list[str]]:
    label = f"message {index + 1}"
    if not isinstance(message, dict):
        return None, [f"{label} must be an object, got {_json_type(message)}"]
    reasons = []
    role = message.get("role")
    if "role" not in message:
        reasons.append(f"{label}: missing key 'role'")
    elif not isinstance(role, str):
        reasons.append(f"{label}: 'role' must be a string, got {_json_type(role)}")
    else:
        role = ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            reasons.append(f"{label}: unknown role {message['role']!r} (use system, user or assistant)")
        label = f"{label} ({role})"
    content = message.get("content")
    if "content" not in message:
        reasons.append(f"{label}: missing key 'content'")
    else:
        reason = _check_text(content, "'content'")
        if reason:
            reasons.append(f"{label}: {reason}")
    weight = message.get("weight", 1)
    if "weight" in message:
        if role != "assistant" and role in ROLES:
            reasons.append(f"{label}: 'weight' is only allowed on assistant messages")
        elif isinstance(weight, bool) or weight not in (0, 1):
            reasons.append(f"{label}: 'weight' must be 0 or 1, got {json.dumps(weight)}")
    if reasons:
        return None, reasons
    return {"role": role, "content": content, "weight": int(weight)}, []


def _check_items(record: dict, key: str, noun: str, check) -> tuple[list[dict], list[str]]:
    """record[key] as a non-empty array, each element through check(index, item): (checked items, reasons)."""
    items = record[key]
    if not isinstance(items, list):
        return [], [f"{key!r} must be an array of {noun}, got {_json_type(items)}"]
    if not items:
        return [], [f"{key!r} is empty"]
    checked, reasons = [], []
    for index, item in enumerate(items):
        one, item_reasons = check(index, item)
        reasons.extend(item_reasons)
        if one is not None:
            checked.append(one)
    return checked, reasons


def _check_chat(record: dict) -> tuple[list[dict] | None, list[str]]:
    normalised, reasons = _check_items(record, "messages", "message objects", _check_message)
    if reasons:
        return None, reasons
    assistant_weights = [m["weight"] for m in normalised if m["role"] == "assistant"]
    if not assistant_weights:
        return None, ["no assistant message: every example needs at least one to train on"]
    if not any(assistant_weights):
        return None, ["every assistant message has weight 0: nothing to train on"]
    return normalised, []


def _check_fields(record: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[str]:
    reasons = []
    for key in required:
        if key not in record:
            reasons.append(f"missing key {key!r}")
        else:
            reason = _check_text(record[key], repr(key))
            if reason:
                reasons.append(reason)
    for key in optional:
        if record.get(key) is not None:
            reason = _check_text(record[key], repr(key), allow_empty=True)
            if reason:
                reasons.append(reason)
    return reasons


def _check_alpaca(record: dict) -> tuple[list[dict] | None, list[str]]:
    reasons = _check_fields(record, ("instruction", "output"), optional=("input",))
    if reasons:
        return None, reasons
    prompt = record["instruction"]
    if (record.get("input") or "").strip():
        prompt = f"{prompt}\n\n{record['input']}"
    return [_user(prompt), _assistant(record["output"])], []


def _check_completion(record: dict) -> tuple[list[dict] | None, list[str]]:
    reasons = _check_fields(record, ("prompt", "completion"))
    if reasons:
        return None, reasons
    return [_user(record["prompt"]), _assistant(record["completion"])], []


def _check_turn(index: int, turn: Any) -> tuple[dict | None, list[str]]:
    """One ShareGPT turn as a chat message: speaker in "from" (or "role"), text in "value" (or "content")."""
    label = f"turn {index + 1}"
    if not isinstance(turn, dict):
        return None, [f"{label} must be an object, got {_json_type(turn)}"]
    role_key = "from" if "from" in turn else "role"
    text_key = "value" if "value" in turn or "content" not in turn else "content"
    speaker = turn.get(role_key)
    reasons = []
    if role_key not in turn:
        reasons.append(f"{label}: missing key 'from'")
    elif not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:
        shown = json.dumps(speaker) if not isinstance(speaker, str) else repr(speaker)
        reasons.append(f"{label}: unknown '{role_key}' {shown} (use human, gpt or system)")
    if text_key not in turn:
        reasons.append(f"{label}: missing key 'value'")
    else:
        reason = _check_text(turn[text_key], repr(text_key))
        if reason:
            reasons.append(f"{label}: {reason}")
    if reasons:
        return None, reasons
    return {"role": SHAREGPT_ROLES[str(speaker)], "content": turn[text_key], "weight": 1}, []


def _check_sharegpt(record: dict) -> tuple[list[dict] | None, list[str]]:
    turns, reasons = _check_items(record, "conversations", "turns", _check_turn)
    system = record.get("system")  # LLaMA-Factory's separate system column
    if system is not None:
        reason = _check_text(system, "'system'", allow_empty=True)
        if reason:
            reasons.append(reason)
    if reasons:
        return None, reasons
    messages = ([{"role": "system", "content": system, "weight": 1}] if system and system.strip() else []) + turns
    if not any(m["role"] == "assistant" for m in messages):
        return None, ["no gpt turn: every example needs at least one answer to train on"]
    return messages, []


def _user(content: str) -> dict:
    return {"role": "user", "content": content, "weight": 1}


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content, "weight": 1}


CHECKERS = {"chat": _check_chat, "alpaca": _check_alpaca, "completion": _check_completion, "sharegpt": _check_sharegpt}


def normalise_record(record: dict, fmt: str) -> list[dict]:
    """The chat messages of one parsed record in format `fmt`; raises ValueError with the reasons if invalid."""
    messages, reasons = CHECKERS[fmt](record)
    if reasons or messages is None:
        raise ValueError("; ".join(reasons) or "no messages")
    return messages


# ---------------------------------------------------------------------------------------------------------------
# The streaming validator: feed it bytes as they arrive, then call finish().


class StreamValidator:
    """Validates a JSONL upload chunk by chunk, so an upload can be checked while it is written to disk.

    `collect=True` also keeps the parsed examples (`examples`), which `load_examples` uses; the API leaves it off
    so that validating a large file needs memory for one line at a time.
    """

    def __init__(self, min_examples: int = 1, max_problems: int = 100, collect: bool = False):
        self.min_examples = min_examples
        self.max_problems = max_problems
        self.collect = collect
        self.examples: list[Example] = []
        self.format: str | None = None
        self.format_line = 0
        self.n_examples = 0
        self.n_candidate_lines = 0  # non-blank lines
        self.problems: list[Problem] = []
        self.n_problems = 0
        self._line = 0
        self._pending = b""
        self._started = False
        self._binary_reason: str | None = None
        self.shape: str | None = None  # file_shape() of the first non-blank line

    def feed(self, chunk: bytes) -> None:
        if self._binary_reason or not chunk:
            return
        data = self._pending + chunk
        if not self._started:
            if len(data) < 4 and b"\n" not in data:  # wait for enough bytes to check signatures and the BOM
                self._pending = data
                return
            self._started = True
            data = self._check_start(data)
            if self._binary_reason:
                return
        if b"\x00" in chunk:
            self._binary_reason = "the file is binary (it contains NUL bytes); expected a UTF-8 JSONL text file"
            return
        *lines, self._pending = data.split(b"\n")
        for raw in lines:
            self._check_line(raw)

    def finish(self) -> ValidationReport:
        if not self._started and self._pending:
            self._started = True
            self._pending = self._check_start(self._pending)
        if self._binary_reason:
            return ValidationReport(format=None, n_examples=0, problems=[Problem(0, self._binary_reason)])
        if self._pending:
            self._check_line(self._pending)
            self._pending = b""
        if self.n_candidate_lines == 0:
            self._add(0, "the file is empty: it has no examples")
        elif self.n_candidate_lines < self.min_examples:
            self._add(0, f"the file has {self.n_candidate_lines} examples; at least {self.min_examples} are needed")
        problems = list(self.problems)
        omitted = self.n_problems - len(problems)
        if omitted:
            problems.append(Problem(0, f"{omitted} more problems not shown"))
        if self.shape and problems:  # the one sentence that explains the line problems comes first
            problems.insert(0, Problem(0, self.shape))
        return ValidationReport(format=self.format, n_examples=self.n_examples, problems=problems, omitted=omitted)

    def _check_start(self, data: bytes) -> bytes:
        for signature, reason in BINARY_SIGNATURES.items():
            if data.startswith(signature):
                self._binary_reason = reason
                return b""
        if b"\x00" in data:
            self._binary_reason = "the file is binary (it contains NUL bytes); expected a UTF-8 JSONL text file"
            return b""
        # Editors on Windows often write a UTF-8 byte-order mark; json.loads would reject it.
        return data[3:] if data.startswith(b"\xef\xbb\xbf") else data

    def _add(self, line: int, reason: str) -> None:
        self.n_problems += 1
        if len(self.problems) < self.max_problems:
            if len(reason) > MAX_REASON_CHARS:  # reasons quote the input; a 40 KB value is not echoed back whole
                reason = reason[: MAX_REASON_CHARS - 25] + f"... ({len(reason)} characters)"
            self.problems.append(Problem(line, reason))

    def _check_line(self, raw: bytes) -> None:
        self._line += 1
        line = self._line
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            self.n_candidate_lines += 1
            self._add(line, f"invalid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})")
            return
        if not text.strip():
            return
        self.n_candidate_lines += 1
        if self.n_candidate_lines == 1:
            self.shape = file_shape(text)
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            self._add(line, f"bad JSON ({error.msg} at column {error.colno})")
            return
        except RecursionError:  # [[[[...]]]] thousands deep: the parser's stack, not a dataset
            self._add(line, "bad JSON (nested too deeply)")
            return
        except ValueError:  # the one other ValueError of json.loads: Python's int-conversion limit (CVE-2020-10735)
            self._add(line, f"bad JSON (an integer of more than {sys.get_int_max_str_digits()} digits)")
            return
        if not isinstance(record, dict):
            hint = " (the file must be JSON Lines: one JSON object per line)" if isinstance(record, list) else ""
            self._add(line, f"expected a JSON object, got {_json_type(record)}{hint}")
            return
        fmt = detect_format(record)
        if fmt is None:
            self._add(line, f"unrecognised example {_keys_of(record)}: {UNRECOGNISED}")
            return
        if self.format is None:
            self.format, self.format_line = fmt, line
        elif fmt != self.format:
            self._add(
                line,
                f"this line is in {FORMAT_NAMES[fmt]} format but the file is in {FORMAT_NAMES[self.format]} "
                f"format (from line {self.format_line}); use one format per file",
            )
            return
        messages, reasons = CHECKERS[fmt](record)
        for reason in reasons:
            self._add(line, reason)
        if messages is not None:
            if self.collect:
                self.examples.append(Example(row=self.n_examples, line=line, messages=messages))
            self.n_examples += 1


def _keys_of(record: dict) -> str:
    """Which keys a row has, so a user sees at once that it is e.g. question/answer rather than a typo."""
    if not record:
        return "(an empty object)"
    names = [repr(key[:40]) for key in list(record)[:MAX_KEYS_NAMED]]
    more = f" and {len(record) - MAX_KEYS_NAMED} more" if len(record) > MAX_KEYS_NAMED else ""
    return f"with keys {', '.join(names)}{more}"


def file_shape(first_line: str) -> str | None:
    """One sentence when the file's first non-blank line shows it is not JSON Lines at all, else None.

    Said once, before the line problems, because a CSV or a JSON array otherwise reads as hundreds of
    unrelated "bad JSON" lines."""
    text = first_line.strip()
    if text.startswith("["):
        return (
            "the file is a JSON array, not JSON Lines: write one example object per line, without the "
            "enclosing [ ] (e.g. jq -c '.[]' data.json > data.jsonl)"
        )
    if not text or text.startswith("{") or _is_json(text):
        return None  # JSON Lines, perhaps with bad lines: those are reported one by one
    for name, separator in (("TSV (tab-separated)", "\t"), ("CSV (comma-separated)", ",")):
        if separator in text:
            columns = ", ".join(c.strip().strip('"')[:40] for c in text.split(separator)[:MAX_KEYS_NAMED])
            return (
                f"the file looks like {name} with columns {columns}: convert it to JSON Lines, one JSON "
                f'object per line (e.g. {{"instruction": ..., "output": ...}})'
            )
    return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Entry points.

READ_CHUNK = 1 << 20


def validate_chunks(chunks: Iterable[bytes], min_examples: int = 1, max_problems: int = 100) -> ValidationReport:
    validator = StreamValidator(min_examples=min_examples, max_problems=max_problems)
    for chunk in chunks:
        validator.feed(chunk)
    return validator.finish()


def validate_bytes(data: bytes, min_examples: int = 1, max_problems: int = 100) -> ValidationReport:
    return validate_chunks([data], min_examples=min_examples, max_problems=max_problems)


def _read_chunks(path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk


def validate_file(path, min_examples: int = 1, max_problems: int = 100) -> ValidationReport:
    """Validate the whole file at `path` (read in chunks; memory for one line at a time)."""
    return validate_chunks(_read_chunks(path), min_examples=min_examples, max_problems=max_problems)


def load_examples(path, min_examples: int = 1) -> list[Example]:
    """Every example of the file, normalised to chat messages; raises DatasetError if the file has any problem."""
    if not Path(path).is_file():
        raise DatasetError([Problem(0, f"no such file: {path}")])
    validator = StreamValidator(min_examples=min_examples, collect=True)
    for chunk in _read_chunks(path):
        validator.feed(chunk)
    report = validator.finish()
    if not report.ok:
        raise DatasetError(report.problems, total=validator.n_problems + (1 if validator.shape else 0))
    return validator.examples


def example_preview(example: Example, max_chars: int = 200) -> str:
    """One line of text for dashboards: "user: ... | assistant: ..." of the last user turn and its answer, whitespace
    collapsed, at most max_chars.

    A system prompt is left out: many datasets repeat one on every row, so it fills every preview with the same
    words and tells the rows apart by nothing. When cut, the answer keeps at least a third of the room.
    """
    messages = [m for m in example.messages if m["role"] != "system"] or example.messages
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=0)
    parts = [f"{m['role']}: {' '.join(m['content'].split())}" for m in messages[last_user : last_user + 2]]
    text = " | ".join(parts)
    if len(text) <= max_chars or len(parts) < 2:
        return _cut(text, max_chars)
    answer = _cut(parts[1], max(max_chars // 3, max_chars - len(parts[0]) - 3))
    return f"{_cut(parts[0], max_chars - 3 - len(answer))} | {answer}"


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)].rstrip() + "…"
