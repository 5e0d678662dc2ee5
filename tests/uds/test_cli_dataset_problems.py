"""`uds train` on a bad dataset prints the first 20 problems and a count, not a hundred lines.
The dataset is read before any model is loaded, so these runs stop at once."""

from __future__ import annotations

from cli.main import main


def test_the_cli_prints_the_first_20_problems_and_a_count(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n' * 150)
    assert main(["train", "--data", str(data), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "uds train: failed (dataset_invalid): the dataset has 150 problems:"
    assert len(lines) == 1 + 20 + 1 and "Traceback" not in "".join(lines)
    assert lines[1].startswith("  line 1: unrecognised example with keys 'question', 'answer'")
    assert lines[-1] == "  ... and 130 more problems (150 in all)"


def test_a_csv_file_is_named_as_csv_first(tmp_path, capsys):
    data = tmp_path / "data.csv"
    data.write_text("instruction,output\n" + "say hi,hi\n" * 30)
    assert main(["train", "--data", str(data), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert "looks like CSV (comma-separated) with columns instruction, output" in lines[1]
    assert lines[-1] == "  ... and 12 more problems (32 in all)"  # the sentence and 31 lines
