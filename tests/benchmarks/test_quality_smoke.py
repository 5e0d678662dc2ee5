"""A smoke run of the quality benchmark (benchmarks/quality): every stage on tiny settings, in seconds.

Builds the dataset, pretrains a 1-layer base for a few steps, trains full / uds / random for 2 steps, times
the cost part on one shape, and writes report.md with its plots. Checks the wiring, not the numbers.
"""

from __future__ import annotations

import json

from benchmarks.quality import dataset, run


def test_dataset_has_the_promised_imperfections_and_a_clean_split(tmp_path):
    counts = dataset.write(tmp_path)
    assert counts["train"] > 0 and counts["eval"] > 0
    assert {"clean", "easy", "duplicate", "noisy"} <= set(counts["kinds"])
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "train_meta.jsonl").read_text().splitlines()]
    assert len(train) == len(kinds)
    eval_rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    # Clean split: every answer is the first or last parameter named in the prompt's signature, and no
    # held-out function appears in training.
    train_names = {row["messages"][0]["content"].split("(")[0] for row in train}
    for row in eval_rows:
        prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        assert prompt.split("(")[0] not in train_names
        assert answer in prompt.split("\n")[0]
    # The builder is deterministic.
    again = dataset.write(tmp_path / "again")
    assert again == counts
    assert (tmp_path / "again" / "train.jsonl").read_bytes() == (tmp_path / "train.jsonl").read_bytes()


def test_quick_run_writes_a_report(tmp_path):
    out = tmp_path / "out"
    assert run.main(["--quick", "--data-dir", str(tmp_path / "cache"), "--out", str(out), "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["label"] for r in results["runs"]} == {"full", "uds", "random"}
    for r in results["runs"]:
        assert r["eval_loss"] is not None and 0 <= r["eval_accuracy"] <= 1
        assert sum(r["selected_kinds"].values()) == r["examples_trained"]
    assert results["cost"] and 0 < results["cost"][0]["scoring_share"] < 1
    report = (out / "report.md").read_text()
    assert "| uds | 12.5% |" in report and "## Cost against full" in report and "Random-weight models" in report
    for png in ("loss_vs_budget.png", "loss_curves.png", "cost.png"):
        assert (out / png).stat().st_size > 1000
    # --report-only rewrites the report from results.json.
    (out / "report.md").unlink()
    assert run.main(["--report-only", "--out", str(out)]) == 0
    assert (out / "report.md").exists()
