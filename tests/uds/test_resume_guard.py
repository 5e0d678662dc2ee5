"""A checkpoint resumes only the run it belongs to: the trainer and `uds train` on uds-tiny."""

from __future__ import annotations

import shutil

import pytest

from tests.utils.datasets import write_dataset
from uds.config import TrainConfig
from uds.trainer import TrainingError, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("data")
    return (
        str(write_dataset(folder / "a.jsonl", 48, fmt="chat", seed=0)),
        str(write_dataset(folder / "b.jsonl", 16, fmt="chat", seed=1)),
    )


def _config(out, data, model, **overrides) -> TrainConfig:
    values = dict(
        model=model,
        dataset_path=data,
        output_dir=str(out),
        budget=0.25,
        candidate_batch_size=8,
        micro_batch_size=4,
        max_steps=2,
        max_seq_len=48,
        checkpoint_every=1,
        lora_r=2,
        lora_alpha=4,
    )
    return TrainConfig(**{**values, **overrides})


def test_another_budget_or_data_is_refused_naming_what_differs(tmp_path, datasets, tiny_model_dir):
    first, other = datasets
    assert train(_config(tmp_path, first, tiny_model_dir)).status == "succeeded"
    with pytest.raises(TrainingError) as caught:
        train(_config(tmp_path, first, tiny_model_dir, budget=0.5))
    assert caught.value.code == "checkpoint_mismatch" and "budget 0.25 -> 0.5" in caught.value.message
    with pytest.raises(TrainingError) as caught:
        train(_config(tmp_path, other, tiny_model_dir))
    assert "the training data" in caught.value.message
    # A copy of the same data elsewhere, and other bookkeeping, is the same run: it resumes.
    copy = tmp_path / "copy.jsonl"
    shutil.copy(first, copy)
    again = train(_config(tmp_path, str(copy), tiny_model_dir, micro_batch_size=2, checkpoint_every=5, max_steps=3))
    assert again.status == "succeeded" and again.steps_done == 3


def test_a_checkpoint_past_the_end_is_refused_not_reported_as_step_6_of_2(tmp_path, datasets, tiny_model_dir):
    first, _ = datasets
    train(_config(tmp_path, first, tiny_model_dir, max_steps=3))
    with pytest.raises(TrainingError, match="past this run's 2 steps"):
        train(_config(tmp_path, first, tiny_model_dir, max_steps=2))


def test_a_damaged_checkpoint_is_a_training_error_not_a_crash(tmp_path, datasets, tiny_model_dir):
    first, _ = datasets
    train(_config(tmp_path, first, tiny_model_dir, max_steps=1))
    (tmp_path / "checkpoints" / "step-00000001" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError) as caught:
        train(_config(tmp_path, first, tiny_model_dir, max_steps=2))
    assert caught.value.code == "checkpoint_incompatible" and "--no-resume" in caught.value.message


def test_cli_prints_one_line_and_exits_non_zero_on_another_method(tmp_path, datasets, tiny_model_dir, capsys):
    from cli.main import main

    first, _ = datasets
    common = [
        "train",
        "--data",
        first,
        "--model",
        tiny_model_dir,
        "--output-dir",
        str(tmp_path),
        "--budget",
        "0.25",
        "--max-steps",
        "2",
        "--max-seq-len",
        "48",
        "--checkpoint-every",
        "1",
        "--quiet",
    ]
    assert main(common) == 0
    capsys.readouterr()
    assert main(common + ["--method", "max_loss"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "method uds -> max_loss" in err and "--no-resume" in err and "--output-dir" in err
    # The way out it names works.
    assert main(common + ["--method", "max_loss", "--no-resume"]) == 0


def test_cli_summary_wall_time_is_the_whole_run(tmp_path, datasets, tiny_model_dir, capsys, monkeypatch):
    import time

    import uds.trainer as trainer
    from cli.main import main

    first, _ = datasets
    real_setup = trainer._setup

    def slow_setup(*args, **kwargs):  # loading that takes a while, as a real model does
        time.sleep(1.5)
        return real_setup(*args, **kwargs)

    monkeypatch.setattr(trainer, "_setup", slow_setup)
    assert (
        main(
            [
                "train",
                "--data",
                first,
                "--model",
                tiny_model_dir,
                "--output-dir",
                str(tmp_path),
                "--max-steps",
                "1",
                "--max-seq-len",
                "48",
                "--quiet",
            ]
        )
        == 0
    )
    line = next(text for text in capsys.readouterr().err.splitlines() if text.startswith("wall time"))
    assert float(line.split()[2]) >= 1.5
