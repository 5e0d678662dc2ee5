"""Small model folders of several architectures, built here (no hub): what a user would register.

All share uds-tiny's byte-level tokenizer (ChatML template), so any dataset of the tests tokenises the same way.
Sizes are tiny on purpose: registration, training, try-it and export must each take seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=512,
)

# architecture -> (config class, model class); gemma2 soft-caps its logits, so its head needs the explicit route.
ARCHITECTURES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
}

# gemma2's default head_dim (256) would make the tiny model four times bigger than the others.
EXTRA = {"gemma2": dict(head_dim=16, final_logit_softcapping=30.0)}


def build_model_folder(
    path: Path, architecture: str = "llama", tied: bool = False, seed: int = 0, **config_overrides
) -> Path:
    """Write a transformers folder (config, safetensors, tokenizer) of `architecture` to `path` and return it."""
    import torch
    import transformers

    from uds.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config_name, model_name = ARCHITECTURES[architecture]
    overrides = {**SHAPE, **EXTRA.get(architecture, {}), **config_overrides}
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_name)(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
