"""What a GGUF export can carry, decided from a model folder's JSON files alone (the API asks before any work).

Torch-free and free of the `gguf` package at import time: the API calls `check_exportable` when a GGUF export is
requested, so an architecture or tokenizer that llama.cpp could not run is a 400 then, not a failure minutes later.

- Architectures: transformers `model_type` -> llama.cpp architecture name. Llama (SmolLM2, Llama 2/3) and Qwen2
  (Qwen2 / Qwen2.5: biases on q/k/v) are the ones written and tested here.
- Tokenizers: byte-level BPE (`tokenizer.ggml.model` "gpt2") whose pre-tokenizer is one llama.cpp knows by name
  (`tokenizer.ggml.pre`); llama.cpp splits text with its own copy of each named regex, so a pre-tokenizer we cannot
  name would tokenize differently there, and is refused rather than written wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from uds.tiny import QWEN2_SPLIT_REGEX

# transformers model_type -> llama.cpp architecture (gguf.MODEL_ARCH_NAMES value).
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2"}
QUANTIZATIONS = ("f16", "q8_0", "f32")
DEFAULT_QUANTIZATION = "f16"
ROPE_TYPES = ("default", "linear", "yarn", "llama3")

# The split regexes of transformers' tokenizers, as llama.cpp names them (its `tokenizer.ggml.pre` values).
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLIT_NAMES = {QWEN2_SPLIT_REGEX: "qwen2", LLAMA3_SPLIT: "llama-bpe"}


class GGUFUnsupported(ValueError):
    """The model cannot be written as a GGUF file that llama.cpp reads right; `param` names what to change."""

    def __init__(self, message: str, param: str = "kind"):
        super().__init__(message)
        self.param = param


def gguf_architecture(config: dict) -> str:
    """The llama.cpp architecture for a config.json, or GGUFUnsupported naming it and the supported ones."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise GGUFUnsupported(
            f"GGUF export does not support the architecture {model_type!r}; supported: "
            f'{", ".join(sorted(ARCHITECTURES))}. The merged export (kind "merged") works for any model.'
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ROPE_TYPES:
        raise GGUFUnsupported(
            f"GGUF export does not support RoPE scaling {rope_type!r}; supported: {', '.join(ROPE_TYPES)}."
        )
    return ARCHITECTURES[model_type]


def _byte_level(step: dict, use_regex: bool) -> bool:
    return step.get("type") == "ByteLevel" and bool(step.get("use_regex", True)) == use_regex


def tokenizer_pre(tokenizer_json: dict) -> str:
    """llama.cpp's name for how this byte-level BPE tokenizer splits text, or GGUFUnsupported saying why not."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise GGUFUnsupported(
            f"GGUF export supports byte-level BPE tokenizers (GPT-2, SmolLM, Llama 3, Qwen2 style); this model's "
            f"tokenizer is {model.get('type')!r}{' with byte fallback (SentencePiece)' if model.get('byte_fallback') else ''}."
        )
    if not model.get("merges"):
        raise GGUFUnsupported(
            "GGUF export needs a BPE tokenizer with merges: this tokenizer has none (every byte is a token, as in "
            "uds-tiny), and llama.cpp's byte-level BPE cannot be written without them."
        )
    normalizer = tokenizer_json.get("normalizer")
    if normalizer not in (None, {"type": "NFC"}):
        raise GGUFUnsupported(f"GGUF export cannot express the tokenizer's normalizer {normalizer.get('type')!r}.")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if len(steps) == 1 and _byte_level(steps[0], use_regex=True):
        return "gpt-2"
    if len(steps) == 2 and _byte_level(steps[1], use_regex=True) and steps[0].get("type") == "Digits":
        if steps[0].get("individual_digits"):
            return "starcoder"  # digits one by one, then GPT-2's regex (StarCoder, SmolLM)
    if len(steps) == 2 and _byte_level(steps[1], use_regex=False) and steps[0].get("type") == "Split":
        name = SPLIT_NAMES.get(str((steps[0].get("pattern") or {}).get("Regex")))
        if name is not None and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert"):
            return name
    raise GGUFUnsupported(
        "GGUF export cannot name this tokenizer's pre-tokenizer for llama.cpp (known: GPT-2's byte-level regex, "
        "digits then GPT-2's, Llama 3's and Qwen2's split regexes); llama.cpp would split text differently."
    )


def check_exportable(folder: str | Path) -> str:
    """The llama.cpp architecture of the model in `folder`, after checking its config and tokenizer can be written."""
    folder = Path(folder)
    architecture = gguf_architecture(json.loads((folder / "config.json").read_text()))
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise GGUFUnsupported(
            "GGUF export needs the model's fast tokenizer (tokenizer.json), which this model folder does not have."
        )
    tokenizer_pre(json.loads(tokenizer_file.read_text(encoding="utf-8")))
    return architecture
