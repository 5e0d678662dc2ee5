"""`uds-tiny`: a small Qwen2-style causal LM with a byte-level tokenizer, built deterministically on this machine.

Tests and the demo need a real `transformers` model without a model hub. This one goes through every code path a
hub model does (`save_pretrained` / `AutoModelForCausalLM` / `AutoTokenizer`, a Jinja chat template, LoRA targets
q/k/v/o/gate/up/down) while being small enough to train for a few dozen steps on a laptop CPU.

The tokenizer maps token id i < 256 to byte i (GPT-2 byte-to-unicode alphabet, no merges), followed by four special
tokens. Its pipeline (NFC normaliser, Qwen2 split regex, ByteLevel) mirrors what `Qwen2Tokenizer` rebuilds when
`AutoTokenizer` loads a `qwen2` folder, so the tokenizer that is loaded encodes exactly like the one that was built.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

TINY_MODEL = "uds-tiny"

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, IM_START, IM_END)

# ChatML, as Qwen2 models use it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Same as transformers' Qwen2Tokenizer (see module docstring for why it must match).
QWEN2_SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# ~2.1M parameters: big enough for LoRA to learn a copy/reverse task, small enough for CPU tests.
MODEL_SHAPE = dict(
    hidden_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=1024,
    max_position_embeddings=1024,
)


def byte_alphabet() -> list[str]:
    """The GPT-2 byte-to-unicode map as a list: entry b is the printable character that stands for byte b."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    alphabet = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            alphabet[byte] = chr(byte)
        else:
            # Bytes without a printable glyph are moved above 255 so that every byte has a visible character.
            alphabet[byte] = chr(256 + shifted)
            shifted += 1
    return [alphabet[byte] for byte in range(256)]


def build_tokenizer():
    """The byte-level tokenizer as a `PreTrainedTokenizerFast` with pad/eos and the ChatML template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in enumerate(byte_alphabet())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
        padding_side="right",
    )


def build_model(tokenizer, seed: int, shape: dict | None = None):
    """A Qwen2-style model for `tokenizer`, initialised from `seed`; `shape` overrides the uds-tiny sizes."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(shape or MODEL_SHAPE),
    )
    # fork_rng: building a model must not move the caller's global RNG (it would change their data order).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_model(path, seed: int = 0) -> str:
    """Build uds-tiny into the folder `path` (which must not exist yet) and return it as a string.

    The same seed gives byte-identical files. The folder appears atomically (written under a temporary name in the
    same parent, then renamed), so a concurrent reader never sees half a model; if another process finishes the
    same folder first, its copy is kept and ours is discarded.
    """
    target = Path(path).expanduser().resolve()
    if target.exists():
        raise FileExistsError(f"{target} already exists; build_tiny_model writes a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.building-{uuid.uuid4().hex}"
    try:
        tokenizer = build_tokenizer()
        model = build_model(tokenizer, seed)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
            # Lost the race to a concurrent builder; the folder it renamed into place is complete.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
