"""The training loop on the real uds-tiny model for real steps: learning, selection bookkeeping, exact resume."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.utils.datasets import write_dataset
from uds.config import TrainConfig, groups_per_step, steps_per_epoch, total_steps
from uds.engine import token_weights as _token_weights
from uds.order import epoch_groups
from uds.records import StepRecord
from uds.reporter import NullLogger
from uds.trainer import TrainingError, lr_multiplier, train


class RecordingLogger(NullLogger):
    def __init__(self, stop_before_step: int | None = None):
        self.steps: list[dict] = []
        self.events: list[tuple[str, str]] = []
        self.checkpoints: list[int] = []
        self.stop_before_step = stop_before_step

    def log_step(self, metrics):
        self.steps.append(metrics)

    def log_event(self, type, message, level="info", data=None):
        self.events.append((type, message))

    def log_checkpoint(self, step, path, metrics):
        self.checkpoints.append(step)

    def should_stop(self):
        return self.stop_before_step is not None and len(self.steps) + 1 >= self.stop_before_step


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_dataset(path, 96, fmt="chat", seed=0)
    return str(path)


def _config(tmp_path, dataset, tiny_model_dir, **overrides) -> TrainConfig:
    values = dict(
        model=tiny_model_dir,
        dataset_path=dataset,
        output_dir=str(tmp_path / "out"),
        method="uds",
        budget=0.25,
        candidate_batch_size=16,
        micro_batch_size=2,
        max_steps=6,
        learning_rate=3e-3,
        warmup_ratio=0.1,
        max_seq_len=64,
        checkpoint_every=3,
        seed=7,
        lora_r=4,
        lora_alpha=8,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("method", ["uds", "random", "max_loss", "max_grad", "full"])
def test_every_method_learns_and_reports_each_step(tmp_path, dataset, tiny_model_dir, method):
    logger = RecordingLogger()
    config = _config(tmp_path, dataset, tiny_model_dir, method=method, max_steps=12, checkpoint_every=100)
    result = train(config, logger)

    assert result.status == "succeeded"
    assert [m["step"] for m in logger.steps] == list(range(1, 13))
    # Every store derives from the declared record: a key renamed in the trainer alone must fail here.
    assert all(set(m) == set(StepRecord.__annotations__) for m in logger.steps)
    expected_k = 16 if method == "full" else 4
    for metrics in logger.steps:
        assert metrics["candidates"] == 16 and metrics["selected"] == expected_k
        assert sum(row["selected"] for row in metrics["selections"]) == expected_k
        assert len({row["row"] for row in metrics["selections"]}) == 16
        assert metrics["time_scoring"] >= 0 and metrics["time_training"] > 0
    first, last = logger.steps[0]["loss"], sum(m["loss"] for m in logger.steps[-3:]) / 3
    assert last < first * 0.9, f"{method}: loss did not fall ({first:.3f} -> {last:.3f})"
    assert os.path.isfile(os.path.join(result.adapter_dir, "adapter_model.safetensors"))
    if method == "uds":
        stats = logger.steps[-1]["stats"]
        assert stats["candidates"]["utility"]["mean"] > 0
        assert stats["selected"]["score"]["mean"] >= stats["candidates"]["score"]["mean"]
        assert logger.steps[-1]["alpha"] is not None


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, dataset, tiny_model_dir):
    # Groups of 4 (k 1), six groups a step, length-grouped, two epochs: the resume must land inside all of that.
    settings = dict(candidate_batch_size=4, micro_batch_size=3)
    whole = RecordingLogger()
    whole_result = train(_config(tmp_path / "whole", dataset, tiny_model_dir, **settings), whole)
    assert [m["groups"] for m in whole.steps] == [6] * 6 and [m["epoch"] for m in whole.steps] == [1] * 4 + [2] * 2

    first_half = RecordingLogger(stop_before_step=5)  # checkpoint at 3, stops before 5: step 4 is redone
    config = _config(tmp_path / "split", dataset, tiny_model_dir, **settings)
    assert train(config, first_half).status == "cancelled"
    second_half = RecordingLogger()
    resumed = train(config, second_half)

    assert resumed.status == "succeeded"
    assert ("resumed", "Resumed from the checkpoint at step 3 of 6.") in second_half.events
    assert [m["step"] for m in second_half.steps] == [4, 5, 6]
    combined = first_half.steps[:3] + second_half.steps
    assert [m["loss"] for m in combined] == [m["loss"] for m in whole.steps]
    assert [_picked(m) for m in combined] == [_picked(m) for m in whole.steps]
    assert resumed.summary["spearman_utility_length"] == whole_result.summary["spearman_utility_length"]
    expected = load_file(os.path.join(whole_result.adapter_dir, "adapter_model.safetensors"))
    actual = load_file(os.path.join(resumed.adapter_dir, "adapter_model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def _picked(metrics) -> list[int]:
    return [row["row"] for row in metrics["selections"] if row["selected"]]


def test_same_seed_same_run_and_other_seed_other_selection(tmp_path, dataset, tiny_model_dir):
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        logger = RecordingLogger()
        train(_config(tmp_path / name, dataset, tiny_model_dir, seed=seed, max_steps=3, checkpoint_every=100), logger)
        runs.append([_picked(m) for m in logger.steps])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_budget_edge_cases(tmp_path, dataset, tiny_model_dir):
    tiny_budget = RecordingLogger()
    train(_config(tmp_path / "tiny", dataset, tiny_model_dir, budget=0.001, max_steps=2), tiny_budget)
    assert all(m["selected"] == 1 for m in tiny_budget.steps), "k is never 0"

    full_budget = RecordingLogger()
    train(_config(tmp_path / "one", dataset, tiny_model_dir, method="random", budget=1.0, max_steps=2), full_budget)
    full = RecordingLogger()
    train(_config(tmp_path / "full", dataset, tiny_model_dir, method="full", max_steps=2), full)
    assert [m["loss"] for m in full_budget.steps] == [m["loss"] for m in full.steps]


def test_length_grouped_epochs_cover_every_row_once_in_groups_of_near_equal_length():
    lengths = [int(x) for x in torch.randint(5, 400, (1000,), generator=torch.Generator().manual_seed(0))]
    groups = epoch_groups(lengths, 8, seed=3, epoch=0, group_by_length=True)
    assert sorted(row for group in groups for row in group) == list(range(1000))
    assert sorted(len(group) for group in groups) == [8] * 125
    spread = sum(max(lengths[r] for r in g) - min(lengths[r] for r in g) for g in groups) / len(groups)
    unsorted = epoch_groups(lengths, 8, seed=3, epoch=0, group_by_length=False)
    random_spread = sum(max(lengths[r] for r in g) - min(lengths[r] for r in g) for g in unsorted) / len(unsorted)
    assert spread < random_spread / 20, (spread, random_spread)
    # Derived from (seed, epoch) only, so a resumed run finds the same groups; each epoch and seed differ.
    assert groups == epoch_groups(lengths, 8, seed=3, epoch=0, group_by_length=True)
    assert groups != epoch_groups(lengths, 8, seed=3, epoch=1, group_by_length=True)
    assert groups != epoch_groups(lengths, 8, seed=4, epoch=0, group_by_length=True)
    # Group order is shuffled: neighbouring groups are not neighbours in length.
    means = [sum(lengths[r] for r in g) / 8 for g in groups]
    assert sum(a < b for a, b in zip(means, means[1:], strict=False)) not in (0, len(means) - 1)


def test_partial_last_group_and_random_order():
    groups = epoch_groups([10] * 21, 4, seed=0, epoch=0, group_by_length=True)
    assert sorted(len(g) for g in groups) == [1, 4, 4, 4, 4, 4]
    plain = epoch_groups(list(range(21)), 4, seed=0, epoch=0, group_by_length=False)
    assert [len(g) for g in plain] == [4, 4, 4, 4, 4, 1]


def test_groups_per_step_aims_at_32_picks_and_keeps_small_data_to_several_steps():
    big = TrainConfig(dataset_path="x", budget=0.125, candidate_batch_size=8)  # k 1
    assert groups_per_step(big, 100_000) == 32 and steps_per_epoch(big, 100_000) == 391
    assert groups_per_step(TrainConfig(dataset_path="x", budget=0.25), 100_000) == 16  # k 2
    assert groups_per_step(TrainConfig(dataset_path="x", budget=0.5), 100_000) == 8  # k 4
    # 200 rows = 25 groups: 6 groups a step (5 steps), not one step of 25 groups.
    assert groups_per_step(big, 200) == 6 and steps_per_epoch(big, 200) == 5
    assert groups_per_step(big, 20) == 1 and steps_per_epoch(big, 20) == 3
    explicit = TrainConfig(dataset_path="x", groups_per_step=10, epochs=2)
    assert groups_per_step(explicit, 200) == 10 and total_steps(explicit, 200) == 6
    assert groups_per_step(explicit, 40) == 5  # never more than one epoch's groups


def test_paper_recipe_fills_every_setting_not_given():
    config = TrainConfig.from_dict({"recipe": "paper", "dataset_path": "x"})
    assert (config.candidate_batch_size, config.k, config.alpha, config.lora_init) == (4, 1, "paper", "gaussian")
    assert (config.lr_schedule, config.loss_weighting, config.learning_rate, config.max_seq_len) == (
        "linear",
        "example",
        1.5e-4,
        512,
    )
    assert groups_per_step(config, 100_000) == 32  # 128 candidates a step, as run_mmlu.sh
    # Given settings win, even one equal to the plain default (B 8, the paper's own statement).
    mine = TrainConfig.from_dict({"recipe": "paper", "dataset_path": "x", "candidate_batch_size": 8, "budget": 0.125})
    assert (mine.recipe, mine.candidate_batch_size, mine.k, mine.alpha) == ("paper", 8, 1, "paper")
    assert TrainConfig.from_dict(mine.to_dict()) == mine  # a stored config reloads as it was
    with pytest.raises(Exception, match="recipe"):
        TrainConfig.from_dict({"recipe": "mine", "dataset_path": "x"})


def test_example_weighting_averages_each_examples_token_mean():
    counts = [3, 1, 0, 4]  # the third has no loss token: it counts for nothing, not for a share of the mean
    example = _token_weights("example", counts, loss_tokens=8, examples_with_loss=3)
    per_token_loss = [torch.full((c,), float(i + 1)) for i, c in enumerate(counts)]
    objective = sum(float((loss * w).sum()) for loss, w in zip(per_token_loss, example.tolist(), strict=True))
    assert objective == pytest.approx((1 + 2 + 4) / 3)
    token = _token_weights("token", counts, loss_tokens=8, examples_with_loss=3)
    assert sum(
        float((loss * w).sum()) for loss, w in zip(per_token_loss, token.tolist(), strict=True)
    ) == pytest.approx((3 + 2 + 16) / 8)


@pytest.mark.parametrize("weighting", ["example", "token"])
def test_micro_batch_size_does_not_change_the_update(tmp_path, dataset, tiny_model_dir, weighting):
    runs = []
    for micro in (1, 4):
        logger = RecordingLogger()
        train(
            _config(
                tmp_path / f"{micro}",
                dataset,
                tiny_model_dir,
                candidate_batch_size=4,
                micro_batch_size=micro,
                loss_weighting=weighting,
                max_steps=2,
                checkpoint_every=100,
            ),
            logger,
        )
        runs.append([m["loss"] for m in logger.steps])
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)


def test_length_diagnostic_is_reported_per_step_and_per_job(tmp_path, dataset, tiny_model_dir):
    logger = RecordingLogger()
    result = train(_config(tmp_path, dataset, tiny_model_dir, candidate_batch_size=4, max_steps=2), logger)
    length = logger.steps[0]["stats"]["length"]
    assert set(length) >= {
        "spearman_utility_length",
        "spearman_score_length",
        "mean_length_candidates",
        "mean_length_selected",
    }
    assert length["mean_length_candidates"] > 0 and length["mean_length_selected"] > 0
    summary = result.summary
    assert summary["mean_length_candidates"] > 0 and summary["alpha_paper"] == pytest.approx(summary["alpha"])


def test_warmup_then_cosine_decay():
    config = TrainConfig(dataset_path="x", warmup_ratio=0.2, lr_schedule="cosine")
    multiplier = lr_multiplier(config, 10)
    values = [multiplier(i) for i in range(10)]
    assert values[0] < values[1] < values[2] == 1.0
    assert all(a >= b for a, b in zip(values[2:], values[3:], strict=False))
    assert values[-1] < 0.05


def test_invalid_dataset_is_a_training_error(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(TrainingError) as error:
        train(_config(tmp_path, str(bad), tiny_model_dir))
    assert error.value.code == "dataset_invalid"
    assert "line 2" in error.value.message


def test_eval_file_reports_loss_and_exact_match(tmp_path, dataset, tiny_model_dir):
    eval_path = tmp_path / "eval.jsonl"
    write_dataset(eval_path, 8, fmt="chat", seed=99)
    logger = RecordingLogger()
    train(
        _config(tmp_path, dataset, tiny_model_dir, eval_dataset_path=str(eval_path), eval_every=2, max_steps=4), logger
    )
    evaluated = [m["step"] for m in logger.steps if m["eval_loss"] is not None]
    assert evaluated == [2, 4]
    assert 0.0 <= logger.steps[-1]["eval_accuracy"] <= 1.0
    assert logger.steps[-1]["eval_loss"] > 0


def _cli_args(dataset, model, out) -> list[str]:
    return [
        "train",
        "--data",
        dataset,
        "--model",
        model,
        "--output-dir",
        str(out),
        "--budget",
        "0.25",
        "--candidate-batch-size",
        "8",
        "--max-seq-len",
        "64",
        "--quiet",
    ]


def test_cli_train_writes_adapter_metrics_and_summary(tmp_path, dataset, tiny_model_dir, capsys):
    from cli.main import main

    out = tmp_path / "cli"
    code = main([*_cli_args(dataset, tiny_model_dir, out), "--max-steps", "3"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert (out / "adapter" / "adapter_config.json").exists()
    assert "examples trained   18 (25.0% of scored)" in capsys.readouterr().err


def test_cli_rejects_bad_settings_with_the_setting_named(tmp_path, dataset, capsys):
    from cli.main import main

    assert main(["train", "--data", dataset, "--budget", "1.5"]) == 2
    assert "budget" in capsys.readouterr().err
    assert main(["train", "--data", dataset, "--candidate-batch-size", "many"]) == 2
    assert "candidate_batch_size: must be an integer" in capsys.readouterr().err


def test_cli_resumes_after_interruption_and_no_resume_starts_over(tmp_path, dataset, tiny_model_dir, capsys):
    from cli.main import main

    out = tmp_path / "cli"
    common = [*_cli_args(dataset, tiny_model_dir, out), "--checkpoint-every", "2"]
    assert main(common + ["--max-steps", "3"]) == 0
    # The same command with a longer run continues from the step-3 checkpoint; metrics hold each step once.
    assert main(common + ["--max-steps", "5"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert main(common + ["--max-steps", "2", "--no-resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


@pytest.mark.parametrize("method", ["random", "full"])
def test_selectors_that_do_not_look_skip_the_scoring_pass(tmp_path, dataset, tiny_model_dir, method, monkeypatch):
    import uds.engine as engine_module

    def no_scoring_pass(*args, **kwargs):
        raise AssertionError(f"{method} must not run the scoring forward pass")

    monkeypatch.setattr(engine_module, "body_hidden_states", no_scoring_pass)
    logger = RecordingLogger()
    assert train(_config(tmp_path, dataset, tiny_model_dir, method=method, max_steps=2), logger).status == "succeeded"
    assert all(m["time_scoring"] < m["time_training"] for m in logger.steps)


def test_score_on_answer_scores_only_the_answer_tokens(tmp_path, dataset, tiny_model_dir, monkeypatch):
    from uds.selectors import UDSSelector

    seen_masks = []
    real_measure = UDSSelector.measure

    def recording_measure(self, inputs):
        seen_masks.append((inputs.attention_mask.clone(), inputs.labels.clone()))
        return real_measure(self, inputs)

    monkeypatch.setattr(UDSSelector, "measure", recording_measure)
    answer = RecordingLogger()
    train(_config(tmp_path / "answer", dataset, tiny_model_dir, score_on="answer", max_steps=2), answer)
    mask, labels = seen_masks[0]
    # loss_on="all" labels every real token; the score mask is a strict, non-empty subset of them.
    assert 0 < int(mask.sum()) < int((labels != -100).sum())
    assert bool(((mask == 1) <= (labels != -100)).all())

    everything = RecordingLogger()
    train(_config(tmp_path / "all", dataset, tiny_model_dir, max_steps=2), everything)
    answer_u = answer.steps[0]["stats"]["candidates"]["utility"]["mean"]
    all_u = everything.steps[0]["stats"]["candidates"]["utility"]["mean"]
    assert 0 < answer_u < all_u  # fewer rows of the logits, smaller nuclear norm
    with pytest.raises(Exception, match="score_on"):
        TrainConfig(dataset_path="x", score_on="prompt")


def test_equal_rows_scores_every_candidate_of_a_group_on_the_groups_shortest_length(
    tmp_path, dataset, tiny_model_dir, monkeypatch
):
    from uds.selectors import UDSSelector

    scored_rows = []
    real_measure = UDSSelector.measure

    def recording_measure(self, inputs):
        scored_rows.extend(int(n) for n in inputs.attention_mask.sum(1))
        return real_measure(self, inputs)

    monkeypatch.setattr(UDSSelector, "measure", recording_measure)
    config = _config(tmp_path, dataset, tiny_model_dir, candidate_batch_size=4, max_steps=1, checkpoint_every=100)
    train(config, RecordingLogger())
    from uds.data import tokenize_examples
    from uds.formats import load_examples
    from uds.models import load_model_and_tokenizer

    _, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    lengths = [len(item.input_ids) for item in tokenize_examples(load_examples(dataset), tokenizer, 64, "all")]
    groups = epoch_groups(lengths, 4, seed=config.seed, epoch=0, group_by_length=True)[
        : groups_per_step(config, len(lengths))
    ]
    expected = [min(lengths[r] for r in group) for group in groups for _ in group]
    assert scored_rows == expected
    assert any(lengths[r] > min(lengths[x] for x in g) for g in groups for r in g), "some candidate lost trailing rows"
