"""A tiny version of the whole new quality pipeline, offline, in well under a minute: BPE tokenizer + pretraining
(twice: the build is bit-for-bit deterministic), the man-page task, a user's --train/--eval files through the
comparison runner with paired seeds, and the report's statistics."""

from __future__ import annotations

import json

import pytest

from benchmarks.quality import base, compare, manpages, run

TINY = [
    "--vocab",
    "400",
    "--hidden",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--kv-heads",
    "1",
    "--ffn",
    "64",
    "--steps",
    "4",
    "--batch",
    "2",
    "--seq-len",
    "32",
    "--corpus-scale",
    "0.005",
]


def _spec() -> base.BaseSpec:
    return base.BaseSpec(
        vocab=400, hidden=32, layers=1, heads=2, kv_heads=1, ffn=64, steps=4, batch=2, seq_len=32, corpus_scale=0.005
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return [base.build(_spec(), root / name, log=lambda _: None, progress=False) for name in ("a", "b")]


def test_base_model_rebuilds_bit_for_bit(built):
    first, second = built
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    info = json.loads((first / "pretrain.json").read_text())
    assert info["vocab_size"] == 400
    assert info["val_loss"] == json.loads((second / "pretrain.json").read_text())["val_loss"]
    assert info["unigram_loss"] > 0 and info["heldout_tokens_scored"] > 0


def test_unigram_baseline_is_add_one_smoothed_frequency():
    import math

    # counts: a=3, b=1, c=0 in a vocabulary of 3 -> p(a) = 4/7, p(c) = 1/7
    assert base.unigram_loss([0, 0, 0, 1], [0, 2], 3) == pytest.approx(-(math.log(4 / 7) + math.log(1 / 7)) / 2)


def test_manpage_task_has_the_measured_mix_and_a_clean_heldout_split(tmp_path):
    counts = manpages.write(tmp_path, n_train=40, n_eval=6)
    assert counts["kinds"] == manpages.kind_counts(40) and sum(counts["kinds"].values()) == 40
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "train_meta.jsonl").read_text().splitlines()]
    assert len(kinds) == 40 and set(kinds) == set(manpages.KIND_SHARES)
    assert counts["eval"] == 6
    assert manpages.write(tmp_path / "again", n_train=40, n_eval=6) == counts
    assert (tmp_path / "again" / "train.jsonl").read_bytes() == (tmp_path / "train.jsonl").read_bytes()


def test_user_data_through_the_comparison_with_paired_statistics(built, tmp_path):
    data = tmp_path / "data"
    manpages.write(data, n_train=24, n_eval=3)
    out = tmp_path / "out"
    cache = built[0].parent
    argv = [
        "--train",
        str(data / "train.jsonl"),
        "--eval",
        str(data / "eval.jsonl"),
        "--kinds",
        str(data / "train_meta.jsonl"),
        "--seeds",
        "2",
        "--methods",
        "uds",
        "random",
        "--budgets",
        "0.25",
        "--cost-vocab",
        "1024",
        "--cost-rows",
        "16",
        "--data-dir",
        str(cache),
        "--out",
        str(out),
        "--no-progress",
        *TINY,
    ]
    assert run.main(argv) == 0  # `python -m benchmarks.quality.run --train ... --eval ...` hands over to compare.py
    results = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in results["runs"]) == sorted(
        (m, s) for m in ("full", "uds", "random") for s in (0, 1)
    )
    assert results["cost"][0]["vocab"] == 1024 and "uds@0.25" in results["cost"][0]["timings"]
    report = (out / "report.md").read_text()
    assert "| uds | 25.0% | random | held-out answer loss |" in report
    assert "2 paired seeds" in report and "## What each method trained on" in report and "At vocabulary 1024" in report
    (out / "report.md").unlink()
    assert compare.main(["--report-only", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == report


def _as_format(row: dict, fmt: str, kind: str) -> dict:
    """A chat row of the man-page task in another format the service accepts, its kind carried on the row."""
    question, answer = (m["content"] for m in row["messages"])
    if fmt == "alpaca":
        return {"instruction": question, "input": "", "output": answer, "kind": kind}
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], "kind": kind}


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt"])
def test_alpaca_and_sharegpt_files_with_labels_on_the_rows(built, tmp_path, fmt):
    data = tmp_path / "data"
    manpages.write(data, n_train=16, n_eval=3)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    kinds = [json.loads(line)["kind"] for line in (data / "train_meta.jsonl").read_text().splitlines()]
    train = tmp_path / f"train-{fmt}.jsonl"
    train.write_text("".join(json.dumps(_as_format(r, fmt, k)) + "\n" for r, k in zip(rows, kinds, strict=True)))
    held_out = tmp_path / f"eval-{fmt}.jsonl"
    held_out.write_text(
        "".join(
            json.dumps(_as_format(json.loads(line), fmt, "clean")) + "\n"
            for line in (data / "eval.jsonl").read_text().splitlines()
        )
    )
    out = tmp_path / "out"
    argv = ["--train", str(train), "--eval", str(held_out), "--label-field", "kind", "--seeds", "2"]
    argv += ["--methods", "uds", "--budgets", "0.25", "--cost-vocab", "--data-dir", str(built[0].parent)]
    assert compare.main([*argv, "--out", str(out), "--no-progress", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["train_kinds"] == {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    assert all(sum(r["selected_kinds"].values()) > 0 for r in results["runs"] if r["method"] == "uds")
    report = (out / "report.md").read_text()
    assert "## What each method trained on" in report and "| uds | 25.0% | full | held-out answer loss |" in report
    for plot in ("loss_vs_budget.png", "differences.png", "time_split.png"):
        assert (out / plot).stat().st_size > 0 and f"]({plot})" in report


def test_label_field_must_exist_on_some_row(tmp_path):
    data = tmp_path / "data"
    manpages.write(data, n_train=8, n_eval=2)
    argv = ["--train", str(data / "train.jsonl"), "--eval", str(data / "eval.jsonl"), "--label-field", "topic"]
    with pytest.raises(SystemExit, match="no row of .* has a string 'topic'"):
        compare.main([*argv, "--out", str(tmp_path / "o")])


def test_invalid_user_data_is_refused_with_line_numbers(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(SystemExit, match="line"):
        compare.main(["--train", str(bad), "--eval", str(bad), "--out", str(tmp_path / "o")])


def test_set_gives_every_run_a_training_setting():
    assert compare.overrides(["score_on=answer", "alpha=2.5", 'lora_targets=["q_proj"]']) == {
        "score_on": "answer",
        "alpha": 2.5,
        "lora_targets": ["q_proj"],
    }
    with pytest.raises(SystemExit, match="a training setting"):
        compare.overrides(["no_such_setting=1"])
