import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.datasets import make_rows, write_dataset
from uds.formats import (
    DatasetError,
    Example,
    Problem,
    StreamValidator,
    detect_format,
    example_preview,
    load_examples,
    validate_bytes,
    validate_chunks,
    validate_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

CHAT_OK = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def chat(*messages):
    return {"messages": list(messages)}


def user(content="hi", **extra):
    return {"role": "user", "content": content, **extra}


def assistant(content="hello", **extra):
    return {"role": "assistant", "content": content, **extra}


def jsonl(*rows) -> bytes:
    return b"".join((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows)


def reasons_on(report, line):
    return [p.reason for p in report.problems if p.line == line]


# ---------------------------------------------------------------------------------------------------------------
# The three formats parse and normalise to chat messages.


@pytest.mark.parametrize("fmt", ["chat", "alpaca", "completion", "sharegpt"])
def test_each_format_parses(tmp_path, fmt):
    path = write_dataset(tmp_path / "d.jsonl", 5, fmt=fmt, seed=3)
    report = validate_file(path)
    assert report.ok, report.problems
    assert report.format == fmt and report.n_examples == 5
    examples = load_examples(path)
    assert [e.row for e in examples] == list(range(5))
    assert [e.line for e in examples] == list(range(1, 6))
    for example in examples:
        assert [m["role"] for m in example.messages] == ["user", "assistant"]
        assert all(m["weight"] == 1 for m in example.messages)


def test_alpaca_input_is_appended_to_the_instruction(make_jsonl, tmp_path):
    path = make_jsonl(
        tmp_path,
        [
            {"instruction": "Reverse", "input": "abc", "output": "cba"},
            {"instruction": "Say hi", "output": "hi"},
            {"instruction": "Say hi", "input": "", "output": "hi"},
            {"instruction": "Say hi", "input": None, "output": "hi"},
        ],
    )
    examples = load_examples(path)
    assert examples[0].messages == [
        {"role": "user", "content": "Reverse\n\nabc", "weight": 1},
        {"role": "assistant", "content": "cba", "weight": 1},
    ]
    assert [e.messages[0]["content"] for e in examples[1:]] == ["Say hi"] * 3


def test_completion_becomes_user_and_assistant(make_jsonl, tmp_path):
    path = make_jsonl(tmp_path, [{"prompt": "2+2=", "completion": "4"}])
    assert load_examples(path)[0].messages == [
        {"role": "user", "content": "2+2=", "weight": 1},
        {"role": "assistant", "content": "4", "weight": 1},
    ]


def test_chat_keeps_weights_system_and_maps_developer(make_jsonl, tmp_path):
    row = chat(
        {"role": "developer", "content": "be brief"},
        user("a"),
        assistant("b", weight=0),
        user("c"),
        assistant("d", weight=1),
    )
    messages = load_examples(make_jsonl(tmp_path, [row]))[0].messages
    assert [(m["role"], m["weight"]) for m in messages] == [
        ("system", 1),
        ("user", 1),
        ("assistant", 0),
        ("user", 1),
        ("assistant", 1),
    ]


def test_detect_format():
    assert detect_format(CHAT_OK) == "chat"
    assert detect_format({"instruction": "x", "output": "y"}) == "alpaca"
    assert detect_format({"prompt": "x", "completion": "y"}) == "completion"
    assert detect_format({"text": "x"}) is None
    assert detect_format([1]) is None


def test_blank_lines_are_skipped_but_counted_crlf_and_bom_accepted():
    data = b"\xef\xbb\xbf" + json.dumps(CHAT_OK).encode() + b"\r\n\r\n   \n" + json.dumps(CHAT_OK).encode()
    report = validate_bytes(data)
    assert report.ok, report.problems
    assert report.n_examples == 2
    data_with_error = data + b"\n\n{oops\n"
    assert [p.line for p in validate_bytes(data_with_error).problems] == [6]


# ---------------------------------------------------------------------------------------------------------------
# Every kind of bad line is reported on its own line number with a readable reason.

BAD_LINES = [
    pytest.param(b"\xff\xfe not utf8", "invalid UTF-8 (byte 0xff at column 1)", id="invalid-utf8"),
    pytest.param(b'{"messages": [', "bad JSON", id="bad-json"),
    pytest.param(b"[1, 2]", "expected a JSON object, got array (the file must be JSON Lines", id="array"),
    pytest.param(b"42", "expected a JSON object, got number", id="number"),
    pytest.param({"text": "hi"}, "unrecognised example", id="unknown-format"),
    pytest.param(chat(), "'messages' is empty", id="empty-messages"),
    pytest.param({"messages": "hi"}, "'messages' must be an array", id="messages-not-list"),
    pytest.param(chat("hi", assistant()), "message 1 must be an object, got string", id="message-not-object"),
    pytest.param(chat({"content": "hi"}, assistant()), "message 1: missing key 'role'", id="missing-role"),
    pytest.param(chat({"role": "user"}, assistant()), "message 1 (user): missing key 'content'", id="missing-content"),
    pytest.param(chat({"role": 1, "content": "x"}, assistant()), "'role' must be a string, got number", id="role-type"),
    pytest.param(
        chat(user(5), assistant()), "message 1 (user): 'content' must be a string, got number", id="content-type"
    ),
    pytest.param(
        chat(user(), {"role": "tool", "content": "x"}, assistant()), "message 2: unknown role 'tool'", id="role"
    ),
    pytest.param(chat(user("   "), assistant()), "message 1 (user): 'content' is empty", id="empty-content"),
    pytest.param(chat(user(), assistant("")), "message 2 (assistant): 'content' is empty", id="empty-answer"),
    pytest.param(chat(user()), "no assistant message", id="no-assistant"),
    pytest.param(chat(user(), assistant(weight=2)), "'weight' must be 0 or 1, got 2", id="weight-2"),
    pytest.param(chat(user(), assistant(weight="1")), "'weight' must be 0 or 1, got \"1\"", id="weight-str"),
    pytest.param(chat(user(), assistant(weight=True)), "'weight' must be 0 or 1, got true", id="weight-bool"),
    pytest.param(chat(user(weight=0), assistant()), "'weight' is only allowed on assistant messages", id="user-weight"),
    pytest.param(chat(user(), assistant(weight=0)), "every assistant message has weight 0", id="all-weight-0"),
    pytest.param(chat(user("\ud800"), assistant()), "lone surrogate", id="lone-surrogate"),
    pytest.param({"instruction": "x"}, "missing key 'output'", id="alpaca-missing-output"),
    pytest.param({"output": "x"}, "missing key 'instruction'", id="alpaca-missing-instruction"),
    pytest.param({"instruction": ["x"], "output": "y"}, "'instruction' must be a string, got array", id="alpaca-type"),
    pytest.param({"instruction": "x", "input": 3, "output": "y"}, "'input' must be a string", id="alpaca-input-type"),
    pytest.param({"instruction": "x", "output": " "}, "'output' is empty", id="alpaca-empty"),
    pytest.param({"prompt": "x"}, "missing key 'completion'", id="completion-missing"),
    pytest.param({"prompt": "x", "completion": None}, "'completion' must be a string, got null", id="completion-null"),
]


@pytest.mark.parametrize("bad_line, expected", BAD_LINES)
def test_bad_line_is_reported_with_its_line_number(bad_line, expected):
    # A valid chat line first, so the format is fixed; except when the bad line is a valid-format line of its own.
    first = CHAT_OK if (isinstance(bad_line, bytes) or "messages" in bad_line or "text" in bad_line) else None
    rows = [first] if first else []
    rows += [bad_line, bad_line]
    report = validate_bytes(jsonl(*rows))
    assert not report.ok
    bad_lines = [2, 3] if first else [1, 2]
    for line in bad_lines:
        assert any(expected in reason for reason in reasons_on(report, line)), (expected, report.problems)
    assert not reasons_on(report, 0)
    if first:
        assert reasons_on(report, 1) == []


def test_every_problem_of_a_line_is_reported():
    report = validate_bytes(jsonl(chat(user(""), {"role": "bot", "content": 1}, assistant(weight=5))))
    assert [p.line for p in report.problems] == [1, 1, 1, 1]
    assert len(report.problems) == 4


def test_a_line_in_another_format_is_a_problem_on_that_line():
    rows = make_rows(2, fmt="chat") + make_rows(1, fmt="alpaca") + make_rows(1, fmt="completion")
    report = validate_bytes(jsonl(*rows))
    assert report.format == "chat" and report.n_examples == 2
    assert [p.line for p in report.problems] == [3, 4]
    assert "Alpaca (instruction/output) format but the file is in chat (messages) format (from line 1)" in (
        report.problems[0].reason
    )


def test_the_first_recognisable_line_sets_the_format():
    report = validate_bytes(jsonl({"prompt": "x"}, *make_rows(1, fmt="completion"), *make_rows(1, fmt="chat")))
    assert report.format == "completion"
    assert [p.line for p in report.problems] == [1, 3]


# ---------------------------------------------------------------------------------------------------------------
# Whole-file problems.


def test_empty_file_is_one_problem():
    for data in (b"", b"\n\n  \n"):
        report = validate_bytes(data)
        assert [(p.line, p.reason) for p in report.problems] == [(0, "the file is empty: it has no examples")]
        assert report.format is None and report.n_examples == 0


def test_min_examples():
    data = jsonl(*make_rows(3))
    assert validate_bytes(data, min_examples=3).ok
    report = validate_bytes(data, min_examples=10)
    assert [str(p) for p in report.problems] == ["file: the file has 3 examples; at least 10 are needed"]
    assert report.n_examples == 3


@pytest.mark.parametrize(
    "data, expected",
    [
        (b'{"messages": []}\n\x00\x01\x02binary', "binary (it contains NUL bytes)"),
        (b"\x1f\x8b\x08\x00rest", "gzip-compressed"),
        (b"PK\x03\x04rest", "zip archive"),
    ],
)
def test_binary_file_is_rejected_with_one_clear_problem(data, expected):
    report = validate_bytes(data * 50)
    assert len(report.problems) == 1
    assert report.problems[0].line == 0 and expected in report.problems[0].reason


def test_nul_bytes_late_in_a_stream_still_give_one_problem():
    chunks = [jsonl(*make_rows(3)), b"{bad json\n", b"\x00\x00\x00"]
    report = validate_chunks(chunks)
    assert len(report.problems) == 1 and "NUL" in report.problems[0].reason


def test_problem_count_is_capped_and_the_rest_counted():
    report = validate_bytes(b"{bad\n" * 250, max_problems=100)
    assert len(report.problems) == 101
    assert [p.line for p in report.problems[:100]] == list(range(1, 101))
    assert report.problems[-1] == Problem(0, "150 more problems not shown")
    assert report.omitted == 150


def test_streaming_in_any_chunks_gives_the_same_report():
    data = jsonl(*make_rows(3), chat(user("héllo 你好"), assistant("")), b"\xff", b"{x", *make_rows(2, fmt="alpaca"))
    whole = validate_bytes(data)
    for size in (1, 2, 3, 7, 64):
        chunked = validate_chunks(data[i : i + size] for i in range(0, len(data), size))
        assert chunked == whole
    assert len(whole.problems) == 5 and whole.n_examples == 3


def test_stream_validator_collects_examples_only_when_asked():
    validator = StreamValidator()
    validator.feed(jsonl(*make_rows(2)))
    assert validator.finish().ok and validator.examples == []


# ---------------------------------------------------------------------------------------------------------------
# load_examples and previews.


def test_load_examples_raises_dataset_error_with_line_numbered_message(make_jsonl, tmp_path):
    path = make_jsonl(tmp_path, [CHAT_OK, b"{oops", chat(user())])
    with pytest.raises(DatasetError) as caught:
        load_examples(path)
    assert [p.line for p in caught.value.problems] == [2, 3]
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("line 2: bad JSON (")
    assert lines[1].startswith("line 3: no assistant message")
    assert isinstance(caught.value, ValueError)


def test_dataset_error_survives_pickling():
    import pickle

    error = DatasetError([Problem(2, "bad JSON (x)"), Problem(0, "the file is empty")])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems and str(copy) == "line 2: bad JSON (x)\nfile: the file is empty"


def test_load_examples_of_a_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl")


def test_example_rows_skip_invalid_lines_in_validation_count():
    report = validate_bytes(jsonl(CHAT_OK, b"{bad", CHAT_OK))
    assert report.n_examples == 2 and not report.ok


def test_example_preview():
    example = Example(0, 1, [user("Reverse:\n  abc"), assistant("cba")])
    assert example_preview(example) == "user: Reverse: abc | assistant: cba"
    short = example_preview(Example(0, 1, [user("x" * 500), assistant("y")]), max_chars=40)
    assert len(short) == 40 and "…" in short and short.endswith("assistant: y") and "\n" not in short


def test_example_preview_shows_the_user_turn_and_answer_not_a_repeated_system_prompt():
    system = {"role": "system", "content": "You are a helpful assistant. " * 10, "weight": 0}
    example = Example(0, 1, [system, user("first"), assistant("one"), user("Reverse: abc"), assistant("cba")])
    assert example_preview(example) == "user: Reverse: abc | assistant: cba"
    long = example_preview(Example(0, 1, [user("q" * 300), assistant("a" * 300)]), max_chars=60)
    assert len(long) <= 60 and "assistant: aaa" in long


# ---------------------------------------------------------------------------------------------------------------
# ShareGPT is accepted; the common wrong shapes are named once, first; unknown rows name their keys.


def sharegpt(*turns, **extra):
    return {"conversations": [{"from": speaker, "value": text} for speaker, text in turns], **extra}


def test_sharegpt_becomes_chat_with_its_system_and_every_answer_trained(tmp_path):
    rows = [
        sharegpt(("human", "hi"), ("gpt", "hello"), ("human", "again"), ("gpt", "yes"), system="Be brief."),
        {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        sharegpt(("system", "S"), ("user", "q"), ("assistant", "a"), system=""),
    ]
    path = tmp_path / "s.jsonl"
    path.write_bytes(jsonl(*rows))
    assert validate_file(path).format == "sharegpt"
    first, second, third = (e.messages for e in load_examples(path))
    assert [(m["role"], m["content"]) for m in first] == [
        ("system", "Be brief."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "again"),
        ("assistant", "yes"),
    ]
    assert all(m["weight"] == 1 for m in first)
    assert [(m["role"], m["content"]) for m in second] == [("user", "q"), ("assistant", "a")]
    assert [m["role"] for m in third] == ["system", "user", "assistant"]
    assert detect_format(rows[0]) == "sharegpt"


@pytest.mark.parametrize(
    "row, expected",
    [
        (sharegpt(("human", "hi")), "no gpt turn"),
        (sharegpt(("human", "hi"), ("observation", "x"), ("gpt", "y")), "turn 2: unknown 'from' 'observation'"),
        ({"conversations": "hi"}, "'conversations' must be an array of turns, got string"),
        ({"conversations": []}, "'conversations' is empty"),
        ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "y"}]}, "turn 1: missing key 'value'"),
        ({"conversations": [{"value": "x"}, {"from": "gpt", "value": "y"}]}, "turn 1: missing key 'from'"),
        (sharegpt(("human", "hi"), ("gpt", ""), system="s"), "turn 2: 'value' is empty"),
        (sharegpt(("human", "hi"), ("gpt", "y"), system=3), "'system' must be a string, got number"),
    ],
)
def test_a_bad_sharegpt_row_names_the_turn(row, expected):
    report = validate_bytes(jsonl(sharegpt(("human", "a"), ("gpt", "b")), row))
    assert any(expected in reason for reason in reasons_on(report, 2)), report.problems


def test_a_preview_of_a_sharegpt_row_shows_the_user_turn_and_answer():
    messages = load_examples_from(jsonl(sharegpt(("human", "question"), ("gpt", "answer"), system="sys")))[0]
    assert example_preview(messages) == "user: question | assistant: answer"


def load_examples_from(data: bytes) -> list[Example]:
    validator = StreamValidator(collect=True)
    validator.feed(data)
    assert validator.finish().ok
    return validator.examples


@pytest.mark.parametrize(
    "data, sentence",
    [
        (
            b"instruction,input,output\nSay hi,,hi\n",
            "looks like CSV (comma-separated) with columns instruction, input, output",
        ),
        (b'"prompt","completion"\n"a","b"\n', "looks like CSV (comma-separated) with columns prompt, completion"),
        (b"prompt\tcompletion\na\tb\n", "looks like TSV (tab-separated) with columns prompt, completion"),
        (
            b'[{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]\n',
            "is a JSON array, not JSON Lines",
        ),
        (b'[\n  {\n    "prompt": "a",\n    "completion": "b"\n  }\n]\n', "is a JSON array, not JSON Lines"),
    ],
)
def test_a_wrong_shape_is_said_in_one_sentence_before_the_line_problems(data, sentence):
    report = validate_bytes(data)
    assert report.problems[0].line == 0 and sentence in report.problems[0].reason, report.problems
    assert len([p for p in report.problems if p.line == 0 and "JSON Lines" in p.reason]) == 1
    assert any(p.line >= 1 for p in report.problems)  # the line problems still follow


def test_jsonl_with_bad_lines_gets_no_shape_sentence():
    report = validate_bytes(jsonl(CHAT_OK, b'{"messages": [1,, 2]}', b"not json, with a comma"))
    assert [p.line for p in report.problems] == [2, 3]


def test_an_unrecognised_row_names_its_keys():
    report = validate_bytes(jsonl({"question": "a", "answer": "b"}, {}, {f"k{i}": i for i in range(12)}))
    assert (
        "unrecognised example with keys 'question', 'answer': expected 'messages' (chat), 'conversations' "
        "(ShareGPT)" in reasons_on(report, 1)[0]
    )
    assert "(an empty object)" in reasons_on(report, 2)[0]
    assert "'k7' and 4 more" in reasons_on(report, 3)[0]


def test_dataset_error_summary_caps_at_20_and_counts_the_rest(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"oops\n" * 150)
    with pytest.raises(DatasetError) as caught:
        load_examples(path)
    lines = caught.value.summary(20)
    assert len(lines) == 21 and lines[0] == "line 1: bad JSON (Expecting value at column 1)"
    assert lines[-1] == "... and 130 more problems (150 in all)"


def test_formats_module_does_not_import_torch():
    code = "import sys, uds.formats; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
