"""`UDSTrainer` under torchrun / accelerate launch (2 CPU processes, gloo) selects exactly what one process selects.

Two processes with `gradient_accumulation_steps = G` against one process with `G * 2`, on uds-tiny over 2 epochs
with length grouping and the memory buffer: the same groups and picks at every step on both ranks, the same memory
buffer, the same counters and logged statistics, and the same adapter up to float rounding. 34 rows make 9 groups
of 4 (the last one of 2) an epoch, 3 steps of 4, 4 and 1 groups: the epoch's last step has fewer groups than the
processes' slots, so one rank holds only a filler there. A checkpoint resumes on the other number of processes.
TRL's `UDSSFTTrainer` (the same mixin) is checked the same way under torchrun.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.utils.datasets import write_dataset
from uds.config import group_count
from uds.distributed import World
from uds.integrations.sharding import Filler, StepShareSampler
from uds.launch import torchrun_command
from uds.order import GroupBatchSampler

ROWS, GROUPS_PER_PROCESS, PROCESSES = 34, 2, 2
ONE_PROCESS_GROUPS = GROUPS_PER_PROCESS * PROCESSES
STEPS = 6  # 3 an epoch, 2 epochs
ATOL = 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = "tests.utils.trainer_ranks"


def _environment() -> dict[str, str]:
    # One thread a process on both sides: float results comparable, and the shared cores not oversubscribed.
    return {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _script_arguments(model: str, data: str, folder, accumulation: int, resume=None, kind="trainer") -> list[str]:
    arguments = ["--model", model, "--data", data, "--output-dir", str(folder / "run"), "--out", str(folder)]
    arguments += ["--accumulation", str(accumulation), "--save-steps", "4", "--trainer", kind]
    return arguments + (["--resume", str(resume)] if resume else [])


def _launch(command: list[str]) -> None:
    done = subprocess.run(command, cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def _one_process(model, data, folder, resume=None, kind="trainer") -> list[dict]:
    arguments = _script_arguments(model, data, folder, ONE_PROCESS_GROUPS, resume, kind)
    _launch([sys.executable, "-m", MODULE, *arguments])
    return _dumps(folder, 1)


def _torchrun(model, data, folder, resume=None, kind="trainer") -> list[dict]:
    arguments = _script_arguments(model, data, folder, GROUPS_PER_PROCESS, resume, kind)
    _launch(torchrun_command(PROCESSES, MODULE, arguments, max_restarts=0))
    return _dumps(folder, PROCESSES)


def _dumps(folder, processes: int) -> list[dict]:
    dumps = [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(processes)]
    assert [dump["world_size"] for dump in dumps] == [processes] * processes
    return dumps


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> str:
    return str(write_dataset(tmp_path_factory.mktemp("data") / "train.jsonl", ROWS, fmt="chat", seed=3))


@pytest.fixture(scope="module")
def one_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("one")


@pytest.fixture(scope="module")
def one(one_folder, tiny_model_dir, data_path) -> dict:
    (dump,) = _one_process(tiny_model_dir, data_path, one_folder)
    return dump


@pytest.fixture(scope="module")
def two_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("two")


@pytest.fixture(scope="module")
def two(two_folder, tiny_model_dir, data_path) -> list[dict]:
    return _torchrun(tiny_model_dir, data_path, two_folder)


def _picks(dump) -> list[tuple[int, list, list]]:
    return [(s["step"], s["groups"], s["picked"]) for s in dump["selections"]]


def _assert_same_run(dump: dict, reference: dict) -> None:
    assert _picks(dump) == _picks(reference)
    for mine, theirs in zip(dump["selections"], reference["selections"], strict=True):
        assert mine["score"] == pytest.approx(theirs["score"], rel=1e-4)
    _assert_same_selector(dump["selector"], reference["selector"])
    assert dump["counters"] == reference["counters"]
    _assert_same_adapter(dump["adapter"], reference["adapter"])


def _assert_same_selector(state: dict, reference: dict) -> None:
    assert state["name"] == reference["name"] == "uds"
    buffer, expected = state["buffer"], reference["buffer"]
    assert (buffer["ptr"], buffer["count"]) == (expected["ptr"], expected["count"]) and buffer["count"] > 0
    torch.testing.assert_close(buffer["storage"], expected["storage"], atol=ATOL, rtol=0)


def _assert_same_adapter(adapter: dict, reference: dict) -> None:
    assert adapter.keys() == reference.keys() and any("lora_B" in name for name in adapter)
    for name, values in adapter.items():
        torch.testing.assert_close(values, reference[name], atol=ATOL, rtol=0, msg=name)
    # Trained: lora_B starts at zero.
    assert any(values.abs().sum() > 0 for name, values in adapter.items() if "lora_B" in name)


def test_each_rank_loads_a_contiguous_share_of_each_steps_groups():
    lengths = [10 + (row * 7) % 23 for row in range(ROWS)]
    whole = list(GroupBatchSampler(lengths, 4, 7, True))
    shares = [StepShareSampler(lengths, 4, 7, True, ONE_PROCESS_GROUPS, World(rank, PROCESSES)) for rank in (0, 1)]
    loaded = [list(sampler) for sampler in shares]
    assert len(whole) == group_count(ROWS, 4) == 9
    # Steps of 4, 4 and 1 groups: 2 slots a rank in each of the first two, 1 in the last (rank 1's a filler).
    assert [len(sampler) for sampler in shares] == [len(batches) for batches in loaded] == [5, 5]
    steps = [(0, 2), (2, 4), (4, 5)]
    joined = [group for start, stop in steps for rank in (0, 1) for group in loaded[rank][start:stop]]
    assert [group for group in joined if not isinstance(group[0], Filler)] == whole
    assert isinstance(loaded[1][4][0], Filler) and not isinstance(loaded[0][4][0], Filler)
    # One process: the group order itself.
    assert list(StepShareSampler(lengths, 4, 7, True, ONE_PROCESS_GROUPS, World())) == whole


@pytest.mark.slow
def test_two_processes_under_torchrun_select_and_train_as_one_process(one, two):
    assert len(one["selections"]) == STEPS
    assert [len(s["groups"]) for s in one["selections"]] == [4, 4, 1] * 2
    for dump in two:  # every rank holds the whole step's selection
        _assert_same_run(dump, one)
    logs, reference = two[0]["logs"], one["logs"]
    assert [entry["loss"] for entry in logs] == pytest.approx([entry["loss"] for entry in reference], rel=1e-5)
    # The norm before clipping: the ranks' gradients add up to one process's (Adam and clipping would hide a scale).
    assert [entry["grad_norm"] for entry in logs] == pytest.approx([e["grad_norm"] for e in reference], rel=1e-4)
    for entry, expected in zip(logs, reference, strict=True):
        assert entry["uds/candidates"] == expected["uds/candidates"]
        assert entry["uds/selected"] == expected["uds/selected"]
        assert entry["uds/examples_trained"] == expected["uds/examples_trained"]
        assert entry["uds/score_selected_mean"] == pytest.approx(expected["uds/score_selected_mean"], rel=1e-4)


@pytest.mark.slow
def test_accelerate_launch_selects_as_one_process(tmp_path, one, tiny_model_dir, data_path):
    # No `accelerate config` file: the launch settings on the command line (its multi-GPU launcher runs on the
    # CPU here, the Trainer's use_cpu=True puts the processes on gloo).
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", MODULE]
    _launch(launcher + _script_arguments(tiny_model_dir, data_path, tmp_path, GROUPS_PER_PROCESS))
    for dump in _dumps(tmp_path, PROCESSES):
        _assert_same_run(dump, one)


@pytest.mark.slow
def test_sft_trainer_under_torchrun_selects_as_one_process(tmp_path, tiny_model_dir, data_path):
    pytest.importorskip("trl")
    (one_sft,) = _one_process(tiny_model_dir, data_path, tmp_path / "one", kind="sft")
    for dump in _torchrun(tiny_model_dir, data_path, tmp_path / "two", kind="sft"):
        _assert_same_run(dump, one_sft)


@pytest.mark.slow
def test_a_checkpoint_resumes_on_another_number_of_processes(
    tmp_path, one, one_folder, two, two_folder, tiny_model_dir, data_path
):
    # Step 4 is inside the second epoch: the resumed runs skip their loaders' batches of step 4 and select 5 and 6.
    resumed_in_one = _one_process(tiny_model_dir, data_path, tmp_path / "in-one", two_folder / "run" / "checkpoint-4")
    resumed_in_two = _torchrun(tiny_model_dir, data_path, tmp_path / "in-two", one_folder / "run" / "checkpoint-4")
    for dump in [*resumed_in_one, *resumed_in_two]:
        assert [s["step"] for s in dump["selections"]] == [5, 6]
        assert _picks(dump) == _picks(one)[4:]
        _assert_same_selector(dump["selector"], one["selector"])
        assert dump["counters"] == one["counters"]
        _assert_same_adapter(dump["adapter"], one["adapter"])


@pytest.mark.slow
def test_resume_refuses_another_number_of_groups_per_step(two, two_folder, tiny_model_dir, data_path, tmp_path):
    from tests.utils.trainer_ranks import build_trainer

    # One process with the per-process accumulation of the two-process run draws steps of 2 groups, not 4.
    trainer = build_trainer(tiny_model_dir, data_path, str(tmp_path), accumulation=GROUPS_PER_PROCESS)
    with pytest.raises(ValueError, match="4 groups per optimizer step, this run has 2"):
        trainer.train(resume_from_checkpoint=str(two_folder / "run" / "checkpoint-4"))
