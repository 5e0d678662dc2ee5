"""The merged export: base model + a job's LoRA adapter folded into one plain `transformers` folder.

Merged in float32 whatever the serving dtype (adding a low-rank delta to bf16 weights rounds it away for small
updates), then stored in the base model's own dtype, as safetensors with the tokenizer, so
`AutoModelForCausalLM.from_pretrained(folder)` needs neither peft nor the base model.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from uds.models import load_model_and_tokenizer

STORED_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def load_with_adapter(base_path: str, adapter_dir: str, device="cpu", dtype=None):
    """(PeftModel, tokenizer): the base model with the adapter attached, unmerged, in eval mode."""
    from peft import PeftModel

    model, tokenizer = load_model_and_tokenizer(base_path, device=device, dtype=dtype)
    return PeftModel.from_pretrained(model, adapter_dir).eval(), tokenizer


def _stored_dtype(base_path: str) -> torch.dtype:
    config = json.loads((Path(base_path) / "config.json").read_text())
    return STORED_DTYPES.get(str(config.get("dtype") or config.get("torch_dtype")), torch.float32)


def merge_float32(base_path: str, adapter_dir: str):
    """(merged model in float32 on the CPU, tokenizer): the adapter folded into the base weights. Every export
    (merged folder, GGUF) starts here, so they hold the same numbers before their own rounding."""
    model, tokenizer = load_with_adapter(base_path, adapter_dir, device="cpu", dtype=torch.float32)
    return model.merge_and_unload(), tokenizer


def staging_path(out_dir: Path) -> Path:
    """A temporary sibling of `out_dir`: written there, then renamed, so `out_dir` only ever appears whole."""
    return out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}")


def export_merged(base_path: str, adapter_dir: str, out_dir: str | os.PathLike) -> Path:
    """Write the merged model to `out_dir` (which must not exist); it appears whole (written aside, renamed)."""
    out_dir = Path(out_dir)
    staging = staging_path(out_dir)
    try:
        merged, tokenizer = merge_float32(base_path, adapter_dir)
        merged.to(_stored_dtype(base_path))
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        card = Path(adapter_dir) / "README.md"
        if card.is_file():
            shutil.copyfile(card, staging / "README.md")
        os.rename(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
