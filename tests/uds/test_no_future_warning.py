"""Every run used to print transformers' FutureWarning about `is_gradient_checkpointing` (PEFT probes the deprecated
property): a new user reads it as their problem."""

from __future__ import annotations

import warnings

import pytest


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_adding_lora_warns_nothing(tiny_model_dir, gradient_checkpointing):
    from uds.models import add_lora, load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(tiny_model_dir, device="cpu")
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        add_lora(model, r=2, alpha=4, dropout=0.0, targets=["q_proj", "v_proj"])
