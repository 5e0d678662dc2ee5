"""A job over several processes selects exactly what one process selects (uds.distributed, uds.trainer).

The parity tests run `uds train` for real: once in one process, once as two gloo processes on the CPU under
torchrun (`--devices 2`), over two epochs with length grouping and the UDS memory filling up, and compare every
step's picks, the memory buffer of the last checkpoint and the adapter. Both runs use one thread per process, so
the only difference left is the order of the gradient sum over ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.utils.datasets import write_dataset
from uds.distributed import World, gather_measures, share, share_bounds, sum_gradients
from uds.selectors import Measures

REPO = Path(__file__).resolve().parents[2]

# 2 epochs of 6 steps: 2 groups of 8 candidates a step, 2 picks per group, the memory updated after every group.
SETTINGS = [
    "--model", "uds-tiny",
    "--budget", "0.25",
    "--candidate-batch-size", "8",
    "--groups-per-step", "2",
    "--epochs", "2",
    "--max-seq-len", "64",
    "--micro-batch-size", "2",
    "--lora-r", "4",
    "--lora-alpha", "8",
    "--lora-dropout", "0",
    "--learning-rate", "2e-3",
    "--warmup-ratio", "0",
    "--buffer-size", "16",
    "--checkpoint-every", "3",
    "--keep-checkpoints", "8",
    "--device", "cpu",
    "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_dataset(path, 96, fmt="chat", seed=7)
    return path


def uds_train(tiny_model_dir, dataset: Path, output: Path, *extra: str) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    models_dir = str(Path(tiny_model_dir).parent)
    command = [sys.executable, "-m", "cli.main", "train", "--data", str(dataset), "--models-dir", models_dir]
    command += [*SETTINGS, "--output-dir", str(output), *extra]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-4000:]


def picks_by_step(output: Path) -> dict[int, list[int]]:
    by_step: dict[int, list[int]] = {}
    for line in (output / "selections.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["selected"]:
            by_step.setdefault(row["step"], []).append(row["row"])
    return by_step


def selector_state(output: Path, step: int) -> dict:
    return torch.load(output / "checkpoints" / f"step-{step:08d}" / "state.pt", weights_only=False)["selector"]


def adapter(output: Path) -> dict:
    return load_file(str(output / "adapter" / "adapter_model.safetensors"))


def assert_same_state(expected, actual, where: str = "selector") -> None:
    """Equal nested state: tensors within float tolerance (the buffer holds projections of measured candidates)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and expected.keys() == actual.keys(), where
        for key in expected:
            assert_same_state(expected[key], actual[key], f"{where}.{key}")
    elif torch.is_tensor(expected):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6, msg=where)
    else:
        assert actual == expected, where


def assert_close(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys() and expected
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, dataset, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("one")
    uds_train(tiny_model_dir, dataset, output)
    return output


@pytest.mark.slow
def test_two_gloo_ranks_pick_and_remember_what_one_process_does(tiny_model_dir, dataset, one_process, tmp_path):
    uds_train(tiny_model_dir, dataset, tmp_path, "--devices", "2")
    expected = picks_by_step(one_process)
    assert sorted(expected) == list(range(1, 13))  # 2 epochs of 6 steps
    assert picks_by_step(tmp_path) == expected
    reference, state = selector_state(one_process, 12), selector_state(tmp_path, 12)
    assert_same_state(reference, state)
    assert reference["buffer"]  # the memory really holds projections to compare
    assert_close(adapter(one_process), adapter(tmp_path))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 13))  # one writer: every step once
    assert all(m["stats"]["devices"] == 2 for m in metrics)
    # Adam and clipping would hide a gradient off by a constant factor in the adapter: the step losses and gradient
    # norms must agree too.
    reference = [json.loads(line) for line in (one_process / "metrics.jsonl").read_text().splitlines()]
    for mine, theirs in zip(metrics, reference, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
        assert mine["tokens_trained"] == theirs["tokens_trained"] and mine["selected"] == theirs["selected"]


@pytest.mark.slow
def test_a_run_resumed_on_another_number_of_devices_picks_the_same(tiny_model_dir, dataset, one_process, tmp_path):
    """Trained to the end on two processes, cut back to its step-6 checkpoint, finished again on one."""
    uds_train(tiny_model_dir, dataset, tmp_path, "--devices", "2")
    for checkpoint in (tmp_path / "checkpoints").iterdir():
        if int(checkpoint.name.split("-")[1]) > 6:
            shutil.rmtree(checkpoint)
    uds_train(tiny_model_dir, dataset, tmp_path, "--devices", "1")
    assert picks_by_step(tmp_path) == picks_by_step(one_process)
    assert_close(adapter(one_process), adapter(tmp_path))


@pytest.mark.slow
def test_random_selection_takes_the_same_path(tiny_model_dir, dataset, tmp_path):
    uds_train(tiny_model_dir, dataset, tmp_path / "one", "--method", "random")
    uds_train(tiny_model_dir, dataset, tmp_path / "two", "--method", "random", "--devices", "2")
    assert picks_by_step(tmp_path / "two") == picks_by_step(tmp_path / "one")
    assert_close(adapter(tmp_path / "one"), adapter(tmp_path / "two"))


# ---- the pieces, against a naive reference ------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 5, 8, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shares_cover_every_item_once_in_order(count, size):
    items = list(range(count))
    shares = [share(items, World(rank, size)) for rank in range(size)]
    assert [item for part in shares for item in part] == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [share_bounds(count, World(rank, size)) for rank in range(size)] == [
        (sum(map(len, shares[:rank])), sum(map(len, shares[: rank + 1]))) for rank in range(size)
    ]


def _collectives(rank: int, size: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        world = World(rank, size)
        # Rank r measured r + 1 candidates (rank 2 none): utility r*10 + i, a 2-wide projection, no statistic.
        count = 0 if rank == 2 else rank + 1
        local = Measures(
            count,
            torch.arange(count, dtype=torch.float32) + 10 * rank,
            torch.full((count, 2), float(rank)),
        )
        gathered = gather_measures(local, world)
        # A gradient on rank 0 and 1, none on rank 2 (it trained nothing): the sum, and the numbers beside it.
        parameter = torch.nn.Parameter(torch.zeros(3))
        if rank < 2:
            parameter.grad = torch.full((3,), float(rank + 1))
        extra = sum_gradients([parameter], [float(rank), 1.0], world)
        results[rank] = (
            gathered.count,
            gathered.utility.tolist(),
            gathered.projection.tolist(),
            parameter.grad.tolist(),
            extra,
        )
    finally:
        dist.destroy_process_group()


def test_measures_are_gathered_in_rank_order_and_gradients_summed():
    from benchmarks.stack import free_port

    size = 3
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_collectives, args=(size, free_port(), results), nprocs=size, join=True)
        results = dict(results)
    expected_utility = [0.0, 10.0, 11.0]
    for rank in range(size):
        count, utility, projection, grad, extra = results[rank]
        assert count == 3 and utility == expected_utility
        assert projection == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert grad == [3.0, 3.0, 3.0]  # 1 + 2 + nothing
        assert extra == [3.0, 3.0]
