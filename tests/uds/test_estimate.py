"""uds/estimate.py against naive references: the counts against a step-by-step walk over the groups the trainer
draws, the token counts against the real tokenizer, the model sizes against the loaded model with its LoRA."""

from __future__ import annotations

import itertools
import random

import pytest

from uds.config import TrainConfig, selected_count
from uds.estimate import (
    ModelShape,
    TokenCounter,
    estimate_time,
    job_counts,
    lora_parameters,
    memory_breakdown,
    row_lengths,
    tiny_counter,
    tiny_shape,
)
from uds.order import epoch_groups


def walked_counts(config: TrainConfig, lengths: list[int]) -> tuple[int, int, int, int]:
    """(steps, candidates, trained, tokens if every candidate is trained) by walking the trainer's steps."""
    from uds.config import groups_per_step, steps_per_epoch, total_steps

    n = len(lengths)
    steps, per_step, per_epoch = total_steps(config, n), groups_per_step(config, n), steps_per_epoch(config, n)
    candidates = trained = tokens = 0
    for step in range(1, steps + 1):
        epoch, index = divmod(step - 1, per_epoch)
        groups = epoch_groups(lengths, config.candidate_batch_size, config.seed, epoch, config.group_by_length)
        for group in groups[index * per_step : (index + 1) * per_step]:
            candidates += len(group)
            trained += selected_count(config.budget, len(group))
            tokens += sum(lengths[row] for row in group)
    return steps, candidates, trained, tokens


CASES = list(
    itertools.product(
        (5, 26, 64, 203),  # rows
        (1, 4, 8),  # B
        (0.125, 0.5, 1.0),  # budget
        ((1, None), (3, None), (1, 7), (1, 50)),  # (epochs, max_steps)
    )
)


@pytest.mark.parametrize("n, batch, budget, length", CASES)
def test_counts_equal_a_walk_over_the_trainers_steps(n, batch, budget, length):
    epochs, max_steps = length
    lengths = [random.Random(n).randint(3, 60) for _ in range(n)]
    config = TrainConfig(
        candidate_batch_size=batch, budget=budget, epochs=epochs, max_steps=max_steps, group_by_length=False
    )
    counts = job_counts(config, lengths)
    steps, candidates, trained, tokens = walked_counts(config, lengths)
    assert (counts.steps, counts.candidates_scored, counts.examples_trained) == (steps, candidates, trained)
    if counts.tokens_exact:
        assert counts.tokens_trained == tokens and trained == candidates
    # Length grouping shuffles the groups: whole epochs, or no partial group, keep the counts exact.
    grouped = TrainConfig(**{**config.to_dict(), "group_by_length": True})
    if max_steps is None or n % batch == 0:
        walked = walked_counts(grouped, lengths)
        got = job_counts(grouped, lengths)
        assert (got.steps, got.candidates_scored, got.examples_trained) == walked[:3]


def test_time_is_the_median_rates_over_the_candidates_and_tokens():
    assert estimate_time(100, 1000, []).seconds is None
    timed = estimate_time(100, 1000, [(10.0, 100.0), (50.0, 500.0), (20.0, 200.0)])
    assert (timed.seconds, timed.based_on, timed.reason) == (10.0, 3, None)  # 100/20 + 1000/200


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from uds.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    return tiny_model_dir, model, tokenizer


def test_token_counts_of_a_byte_level_tokenizer_are_exact(tiny, tmp_path, make_jsonl):
    from tests.utils.factories import chat_rows
    from uds.data import tokenize_examples
    from uds.formats import load_examples

    folder, _, tokenizer = tiny
    rows = chat_rows(20) + [
        {"messages": [{"role": "user", "content": "naïve café 日本 e\u0301"}, {"role": "assistant", "content": "ok"}]}
    ]
    examples = load_examples(make_jsonl(tmp_path, rows))
    counter = TokenCounter.from_folder(folder)
    assert counter.exact
    for max_seq_len in (16, 512):
        real = [len(item.input_ids) for item in tokenize_examples(examples, tokenizer, max_seq_len)]
        assert row_lengths(counter, examples, max_seq_len) == real


def test_model_and_lora_sizes_equal_the_loaded_model(tiny):
    from uds.models import add_lora

    folder, model, _ = tiny
    shape = ModelShape.from_folder(folder)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    config = TrainConfig(lora_r=4, lora_targets=["q_proj", "v_proj", "down_proj"])
    adapted = add_lora(model, r=4, alpha=8, dropout=0.0, targets=config.lora_targets, init="gaussian")
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert lora_parameters(shape, config) == trainable


def test_uds_tiny_before_it_is_built_is_what_its_folder_then_says(tiny):
    folder = tiny[0]
    assert tiny_counter() == TokenCounter.from_folder(folder)
    assert tiny_shape() == ModelShape.from_folder(folder)


@pytest.mark.parametrize("micro, seq", [(4, 512), (2, 128), (8, 256)])
def test_training_activations_are_within_2x_of_what_autograd_keeps(tiny_model_dir, micro, seq):
    """The estimate against the tensors a real forward of uds-tiny with LoRA saves for its backward (CPU)."""
    import torch

    from uds.models import add_lora, load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    config = TrainConfig(micro_batch_size=micro, max_seq_len=seq)
    model = add_lora(model, r=8, alpha=16, dropout=0.0, targets=config.lora_targets, init="gaussian")
    ids = torch.randint(0, 256, (micro, seq), generator=torch.Generator().manual_seed(0))
    saved: dict[tuple, int] = {}

    def keep(tensor):
        saved[(tensor.data_ptr(), tensor.numel(), tensor.dtype)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
    estimated = memory_breakdown(ModelShape.from_folder(tiny_model_dir), config, 64, "cpu")["training_activations"]
    assert 0.5 < estimated / sum(saved.values()) < 2


def test_a_kind_names_its_device_count():
    from uds.estimate import kind_devices, kind_on_devices

    for kind in ("cpu", "cuda NVIDIA H100 80GB HBM3"):
        assert kind_on_devices(kind, 1) == kind and kind_devices(kind) == 1
        assert kind_devices(kind_on_devices(kind, 8)) == 8
    assert kind_devices(None) == 1 and kind_devices("cuda Some x GPU") == 1
