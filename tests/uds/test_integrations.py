"""UDS inside transformers' Trainer and TRL's SFTTrainer (uds.integrations) on the real uds-tiny model.

Both trainers run on the same tokenized rows as our own loop; with the same seed, model and optimizer settings
they draw the same groups and pick the same examples step after step, every group trains exactly k examples, and a
run resumed from a Trainer checkpoint continues the selection exactly.
"""

from __future__ import annotations

import pytest
import torch

from tests.utils.datasets import write_dataset
from uds.config import DEFAULT_LORA_TARGETS, TrainConfig, selected_count
from uds.data import TokenizedExample, collate, tokenize_examples
from uds.formats import load_examples
from uds.integrations import STATE_FILE, UDSConfig, UDSTrainer
from uds.models import add_lora, load_model_and_tokenizer
from uds.order import epoch_groups
from uds.reporter import NullLogger
from uds.trainer import train

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
from transformers import TrainingArguments  # noqa: E402

from uds.integrations import UDSSFTTrainer  # noqa: E402

SEED, B, G, BUDGET, MAX_LEN, ROWS = 7, 4, 2, 0.5, 64, 24  # 6 groups an epoch, 3 steps an epoch, k = 2
STEPS = 5
K = selected_count(BUDGET, B)
OPTIMISATION = dict(learning_rate=3e-3, weight_decay=0.0, max_grad_norm=1.0)


class _Steps(NullLogger):
    def __init__(self):
        self.steps = []

    def log_step(self, metrics):
        self.steps.append(metrics)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> str:
    return str(write_dataset(tmp_path_factory.mktemp("data") / "train.jsonl", ROWS, fmt="chat", seed=3))


@pytest.fixture(scope="module")
def rows(data_path, tiny_model_dir) -> list[dict]:
    """The dataset as our loop tokenizes it, as rows {"input_ids", "labels"} a Trainer takes."""
    _, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    items = tokenize_examples(load_examples(data_path), tokenizer, MAX_LEN, "all")
    return [{"input_ids": item.input_ids, "labels": item.labels} for item in items]


def _lora_model(tiny_model_dir):
    # As uds.trainer sets up: seed, load, LoRA (gaussian A drawn from the seeded global RNG).
    torch.manual_seed(SEED)
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    return add_lora(model, r=4, alpha=8, targets=DEFAULT_LORA_TARGETS, init="gaussian"), tokenizer


def _pad_collator(pad_token_id: int):
    return lambda features: collate([TokenizedExample(0, f["input_ids"], f["labels"]) for f in features], pad_token_id)


def _arguments(cls, output_dir, max_steps: int, save_steps: int | None = None, **extra):
    return cls(
        output_dir=str(output_dir),
        per_device_train_batch_size=B,
        gradient_accumulation_steps=G,
        max_steps=max_steps,
        lr_scheduler_type="linear",
        warmup_steps=0,
        optim="adamw_torch",
        seed=SEED,
        report_to="none",
        logging_steps=1,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        use_cpu=True,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        **OPTIMISATION,
        **extra,
    )


def _uds(**overrides) -> UDSConfig:
    return UDSConfig(**{"budget": BUDGET, "max_seq_len": MAX_LEN, "record_selections": True, **overrides})


def _make_trainer(
    kind: str, tiny_model_dir, rows, output_dir, max_steps: int, save_steps: int | None = None, trainer_cls=None, **uds
):
    model, tokenizer = _lora_model(tiny_model_dir)
    if kind == "trainer":
        cls = trainer_cls or UDSTrainer
        return cls(
            model=model,
            args=_arguments(TrainingArguments, output_dir, max_steps, save_steps),
            train_dataset=rows,
            data_collator=_pad_collator(tokenizer.pad_token_id),
            uds=_uds(**uds),
        )
    cls = trainer_cls or UDSSFTTrainer
    # SFTConfig turns bf16 autocast on by default, on the CPU too; our loop is float32 there.
    arguments = _arguments(trl.SFTConfig, output_dir, max_steps, save_steps, max_length=MAX_LEN, bf16=False)
    return cls(
        model=model,
        args=arguments,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        uds=_uds(**uds),
    )


@pytest.fixture(scope="module")
def our_steps(tmp_path_factory, data_path, tiny_model_dir) -> list[dict]:
    """STEPS steps of uds.trainer.train on the rows, with the Trainers' settings (run once for both trainers)."""
    return _our_loop(tmp_path_factory.mktemp("ours"), data_path, tiny_model_dir, max_steps=STEPS)


def _our_loop(tmp_path, data_path, tiny_model_dir, max_steps: int, **overrides):
    logger = _Steps()
    config = TrainConfig(
        model=tiny_model_dir,
        dataset_path=data_path,
        output_dir=str(tmp_path / "ours"),
        budget=BUDGET,
        candidate_batch_size=B,
        groups_per_step=G,
        micro_batch_size=B,
        max_steps=max_steps,
        warmup_ratio=0.0,
        lr_schedule="linear",
        max_seq_len=MAX_LEN,
        seed=SEED,
        lora_r=4,
        lora_alpha=8,
        checkpoint_every=100,
        device="cpu",
        **OPTIMISATION,
        **overrides,
    )
    train(config, logger)
    return logger.steps


def _picked(step_metrics) -> list[int]:
    return [row["row"] for row in step_metrics["selections"] if row["selected"]]


def _flat(lists) -> list[int]:
    return [value for part in lists for value in part]


def test_the_group_sampler_draws_our_loops_groups(rows):
    from uds.integrations import GroupBatchSampler

    lengths = [len(row["input_ids"]) for row in rows]
    sampler = GroupBatchSampler(lengths, B, SEED, group_by_length=True)
    sampler.set_epoch(1)
    assert list(sampler) == epoch_groups(lengths, B, SEED, 1, True) and len(sampler) == ROWS // B


class _Counting:
    """Counts the examples that reach the loss, per optimizer step and per group (one micro-batch = one group)."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.reached = getattr(self, "reached", [])
        self.reached.append((self.state.global_step, int(inputs["input_ids"].shape[0])))
        return super().compute_loss(model, inputs, *args, **kwargs)


class _CountingTrainer(_Counting, UDSTrainer):
    pass


class _CountingSFTTrainer(_Counting, UDSSFTTrainer):
    pass


COUNTING = {"trainer": _CountingTrainer, "sft": _CountingSFTTrainer}


@pytest.fixture(scope="module", params=["trainer", "sft"])
def run(request, tmp_path_factory, tiny_model_dir, rows):
    """(kind, trainer, output folder): STEPS steps of one trainer, saved at step 4 (inside the second epoch)."""
    kind = request.param
    output_dir = tmp_path_factory.mktemp(kind)
    trainer = _make_trainer(
        kind, tiny_model_dir, rows, output_dir, max_steps=STEPS, save_steps=4, trainer_cls=COUNTING[kind]
    )
    trainer.train()
    return kind, trainer, output_dir


@pytest.mark.slow
def test_selections_equal_our_loops_on_the_same_data_seed_and_model(run, our_steps):
    # Five steps cross an epoch boundary (three an epoch); the selection depends on the weights each step trains.
    _, trainer, _ = run
    assert [_flat(s["groups"]) for s in trainer.selections] == [[r["row"] for r in m["selections"]] for m in our_steps]
    assert [_flat(s["picked"]) for s in trainer.selections] == [_picked(m) for m in our_steps]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses == pytest.approx([m["loss"] for m in our_steps], rel=1e-4)


@pytest.mark.slow
def test_k_of_every_group_reaches_the_loss_and_statistics_are_logged(run):
    _, trainer, _ = run
    assert trainer.reached == [(step, K) for step in range(STEPS) for _ in range(G)]
    assert all(len(group) == K for s in trainer.selections for group in s["picked"])
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == STEPS
    for entry in logs:
        assert entry["uds/candidates"] == G * B and entry["uds/selected"] == G * K
        assert entry["uds/utility_candidates_mean"] > 0 and entry["uds/alpha"] > 0
        assert entry["uds/score_selected_mean"] >= entry["uds/score_candidates_mean"]
    assert logs[-1]["uds/examples_trained"] == STEPS * G * K


@pytest.mark.slow
def test_resume_from_a_trainer_checkpoint_continues_the_selection_exactly(run, tiny_model_dir, rows):
    kind, whole, output_dir = run
    checkpoint = output_dir / "checkpoint-4"
    state = torch.load(checkpoint / STATE_FILE, weights_only=True)
    assert state["selector"]["name"] == "uds" and state["counters"]["examples_trained"] == 4 * G * K

    # A fresh process's view: a new model and trainer, resumed inside the second epoch (batches skipped).
    resumed = _make_trainer(kind, tiny_model_dir, rows, output_dir, max_steps=STEPS, save_steps=4)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert [s["step"] for s in resumed.selections] == [5]
    assert resumed.selections[0]["groups"] == whole.selections[4]["groups"]
    assert resumed.selections[0]["picked"] == whole.selections[4]["picked"]
    assert resumed.selections[0]["score"] == pytest.approx(whole.selections[4]["score"], rel=1e-5)


@pytest.mark.slow
def test_sft_trainer_on_chat_messages_with_a_peft_config(tmp_path, tiny_model_dir):
    # The way SFT users write it: raw chat rows, TRL tokenizes them and wraps the model in LoRA itself.
    from peft import LoraConfig

    from uds.toy_data import make_rows

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    arguments = _arguments(trl.SFTConfig, tmp_path, max_steps=2, max_length=MAX_LEN)
    trainer = _CountingSFTTrainer(
        model=model,
        args=arguments,
        train_dataset=datasets.Dataset.from_list(make_rows(16, seed=1)),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        uds=UDSConfig(budget=0.25, method="uds", alpha="auto"),
    )
    trainer.train()

    assert trainer.reached == [(step, 1) for step in range(2) for _ in range(G)]
    assert any("lora_" in name for name, p in trainer.model.named_parameters() if p.requires_grad)
