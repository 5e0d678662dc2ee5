"""The premise test's statistics against naive references, its exact restore between probes, and a smoke run on
uds-tiny; the arithmetic task's determinism and mix; the teacher-forced exact match against greedy decoding."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from benchmarks.quality import arithmetic, correlation, premise
from benchmarks.quality.training import answer_measures
from uds.config import TrainConfig
from uds.data import tokenize_examples
from uds.formats import load_examples
from uds.models import add_lora, load_model_and_tokenizer, resolve_model


def _naive_pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def _naive_ranks(x):
    # rank = 1 + number of smaller values + (number of equal others) / 2
    return [1 + sum(v < a for v in x) + (sum(v == a for v in x) - 1) / 2 for a in x]


def _naive_residuals(y, z):
    n = len(y)
    mz, my = sum(z) / n, sum(y) / n
    slope = sum((c - mz) * (b - my) for b, c in zip(y, z, strict=True)) / sum((c - mz) ** 2 for c in z)
    return [b - (my + slope * (c - mz)) for b, c in zip(y, z, strict=True)]


def _data(seed=0, n=40):
    rng = random.Random(seed)
    z = [rng.randint(10, 60) for _ in range(n)]  # lengths, with ties
    x = [0.1 * c + rng.gauss(0, 1) for c in z]
    y = [0.05 * c + 0.5 * a + rng.gauss(0, 1) for a, c in zip(x, z, strict=True)]
    return x, y, z


def test_ranks_average_ties():
    assert correlation.ranks([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    x, _, z = _data()
    assert correlation.ranks(z).tolist() == _naive_ranks(z)


def test_pearson_spearman_and_partial_match_naive_references():
    x, y, z = _data()
    assert correlation.pearson(x, y) == pytest.approx(_naive_pearson(x, y), abs=1e-12)
    assert correlation.spearman(x, y) == pytest.approx(_naive_pearson(_naive_ranks(x), _naive_ranks(y)), abs=1e-12)
    expected = _naive_pearson(_naive_residuals(x, z), _naive_residuals(y, z))
    assert correlation.partial_pearson(x, y, z) == pytest.approx(expected, abs=1e-12)
    # The textbook formula for one control variable.
    rxy, rxz, ryz = _naive_pearson(x, y), _naive_pearson(x, z), _naive_pearson(y, z)
    assert expected == pytest.approx((rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2)), abs=1e-12)
    rx, ry, rz = _naive_ranks(x), _naive_ranks(y), _naive_ranks(z)
    assert correlation.partial_spearman(x, y, z) == pytest.approx(
        _naive_pearson(_naive_residuals(rx, rz), _naive_residuals(ry, rz)), abs=1e-12
    )
    assert math.isnan(correlation.pearson([1, 1, 1], [1, 2, 3]))


def test_within_group_correlation_removes_group_means():
    x, y, _ = _data(1)
    groups = [i % 5 for i in range(len(x))]
    centred = {}
    for name, values in (("x", x), ("y", y)):
        means = {
            g: sum(v for v, h in zip(values, groups, strict=True) if h == g) / groups.count(g) for g in set(groups)
        }
        centred[name] = [v - means[g] for v, g in zip(values, groups, strict=True)]
    assert correlation.within_group_pearson(x, y, groups) == pytest.approx(
        _naive_pearson(centred["x"], centred["y"]), abs=1e-12
    )
    # A variable that only differs between groups correlates with nothing inside them.
    shifted = [10.0 * g for g in groups]
    assert math.isnan(correlation.within_group_pearson(shifted, y, groups))


def test_bootstrap_interval_brackets_the_statistic_and_is_seeded():
    x, y, _ = _data(2, n=60)
    low, high = correlation.bootstrap_interval(correlation.pearson, (x, y), resamples=300, seed=3)
    assert low < correlation.pearson(x, y) < high
    assert (low, high) == correlation.bootstrap_interval(correlation.pearson, (x, y), resamples=300, seed=3)
    # Naive reference: the same draws, by hand.
    rng = np.random.default_rng(3)
    values = []
    for _ in range(300):
        index = rng.integers(0, 60, 60)
        values.append(_naive_pearson([x[i] for i in index], [y[i] for i in index]))
    values.sort()
    assert low == pytest.approx(float(np.quantile(values, 0.025)), abs=1e-12)


def test_arithmetic_task_is_deterministic_with_the_promised_mix(tmp_path):
    counts = arithmetic.write(tmp_path / "a", n_train=40, n_eval=8, seed=0, noisy=True)
    assert counts["train"] == 40 and counts["eval"] == 8
    assert set(counts["kinds"]) == {"clean", "duplicate", "truncated", "off_topic", "wrong"}
    again = arithmetic.write(tmp_path / "b", n_train=40, n_eval=8, seed=0, noisy=True)
    assert (
        again == counts
        and (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    )
    rows = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "a" / "train_meta.jsonl").read_text().splitlines()]
    held_out = {
        json.loads(line)["messages"][0]["content"] for line in (tmp_path / "a" / "eval.jsonl").read_text().splitlines()
    }
    for row, kind in zip(rows, kinds, strict=True):
        question, reply = (m["content"] for m in row["messages"])
        if kind == "clean":
            a, op, b = question.removeprefix("What is ").removesuffix("?").split()
            assert reply == str(arithmetic.answer(int(a), op, int(b)))
            assert question not in held_out
        if kind in ("wrong", "truncated"):
            a, op, b = question.removeprefix("What is ").removesuffix("?").split()
            assert reply != str(arithmetic.answer(int(a), op, int(b)))


def test_teacher_forced_exact_match_counts_rows_whose_whole_answer_is_the_argmax():
    labels = torch.tensor([[-100, -100, 3, 4], [-100, -100, 3, 4], [-100, -100, -100, -100]])
    logits = torch.full((3, 4, 6), -5.0)
    # Row 0 predicts 3 then 4 (both right); row 1 gets the second token wrong; row 2 has no answer.
    for row, (first, second) in enumerate([(3, 4), (3, 5), (3, 4)]):
        logits[row, 1, first] = 5.0
        logits[row, 2, second] = 5.0
    loss, right, tokens, exact = answer_measures(logits, labels)
    assert (right, tokens, exact) == (3, 4, [True, False, False])
    assert loss > 0


def test_probe_restores_adapter_and_optimizer_exactly(tmp_path):
    arithmetic.write(tmp_path, n_train=12, n_eval=4, seed=0, noisy=True)
    config = TrainConfig(model="uds-tiny", dataset_path=str(tmp_path / "train.jsonl"), learning_rate=1e-2)
    model, tokenizer = load_model_and_tokenizer(resolve_model("uds-tiny", models_dir=tmp_path / "models"))
    torch.manual_seed(0)
    model = add_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    probe = premise.Probe(model, tokenizer, optimizer, config)
    items = tokenize_examples(load_examples(str(tmp_path / "train.jsonl")), tokenizer, 64, "all")
    held_out = tokenize_examples(load_examples(str(tmp_path / "eval.jsonl")), tokenizer, 64, "answer")
    premise.train_run(probe, items, steps=2, batch=4, seed=0)  # Adam moments that a restore must bring back
    weights, state = probe.snapshot()
    first = premise.probe_all(probe, items[:3], held_out)
    after_weights, after_state = probe.snapshot()
    assert all(torch.equal(a, b) for a, b in zip(weights, after_weights, strict=True))
    assert after_state["state"].keys() == state["state"].keys()
    for key, values in state["state"].items():
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after_state["state"][key][name])), (key, name)
    # The held-out loss from the answer positions' logits alone is the model's own loss on the answers.
    batch = probe.batch(held_out)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    assert probe.held_out_loss(held_out) == pytest.approx(float(full), rel=1e-5)
    # The same probes again give the same numbers, bit for bit, and a step really moved the held-out loss.
    assert premise.probe_all(probe, items[:3], held_out) == first
    assert any(d != 0 for d in first["held_out_decrease"])


def test_premise_smoke_run_on_uds_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("UDS_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    argv = ["--model", "uds-tiny", "--probes", "10", "--memory", "4", "--held-out", "3", "--train-rows", "16"]
    assert premise.main([*argv, "--resamples", "20", "--max-seq-len", "64", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["states"]) == {"start", "halfway"}
    for state in results["states"].values():
        assert len(state["held_out_decrease"]) == 10 and len(state["scores"]["utility"]) == 10
        assert {r["score"] for r in state["correlations"]} == set(premise.SCORES)
    report = (out / "report.md").read_text()
    assert "## From the starting adapter" in report and "## From halfway through a full-data run" in report
    for state in ("start", "halfway"):
        assert (out / f"premise_{state}.png").stat().st_size > 1000 and f"](premise_{state}.png)" in report
    (out / "report.md").unlink()
    assert premise.main(["--report-only", "--out", str(out)]) == 0
    assert (out / "report.md").read_text() == report
