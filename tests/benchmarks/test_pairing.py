"""The paired-seed design of benchmarks.quality.compare rests on uds.trainer: for one seed, every method must start
from the same LoRA weights and see the candidates in the same order (only which of them are trained on differs)."""

from __future__ import annotations

import torch

from uds import trainer
from uds.config import TrainConfig
from uds.tiny import build_tiny_model
from uds.toy_data import make_rows, to_jsonl

METHODS = [("full", 1.0), ("uds", 0.125), ("random", 0.25), ("max_loss", 0.125), ("max_grad", 0.25)]


def _seen(model: str, data: str, out, method: str, budget: float, seed: int):
    config = TrainConfig(
        model=model,
        dataset_path=data,
        output_dir=str(out / f"{method}-{budget}-{seed}"),
        method=method,
        budget=budget,
        seed=seed,
        device="cpu",
        epochs=2,
        max_seq_len=64,
    )
    run = trainer._setup(config, None)
    lora = {name: p.detach().clone() for name, p in run.model.named_parameters() if "lora_" in name}
    # The candidates of every step, in order, as the loop draws them (step_groups is what _step uses).
    order = [
        row for step in range(1, run.total_steps + 1) for group in trainer.step_groups(run, step)[1] for row in group
    ]
    return lora, order


def test_a_seed_fixes_lora_init_and_candidate_order_for_every_method(tmp_path):
    model = build_tiny_model(tmp_path / "tiny")
    data = tmp_path / "train.jsonl"
    data.write_bytes(to_jsonl(make_rows(80, seed=1)))
    seen = {(m, b): _seen(model, str(data), tmp_path, m, b, seed=3) for m, b in METHODS}
    reference_lora, reference_order = seen[("full", 1.0)]
    assert sorted(reference_order) == sorted(list(range(80)) * 2)  # two epochs, every row once per epoch
    for key, (lora, order) in seen.items():
        assert order == reference_order, key
        assert lora.keys() == reference_lora.keys()
        assert all(torch.equal(lora[name], reference_lora[name]) for name in lora), key
    # ... and another seed changes both, so seeds are independent replicates.
    other_lora, other_order = _seen(model, str(data), tmp_path, "uds", 0.125, seed=4)
    assert other_order != reference_order
    assert any(not torch.equal(other_lora[name], reference_lora[name]) for name in other_lora if "lora_A" in name)
