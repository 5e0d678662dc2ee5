"""The GGUF export: base model + LoRA adapter, merged in float32, written as one llama.cpp / Ollama file.

Written with the `gguf` package's GGUFWriter and quantizers (no llama.cpp checkout, no compiler), the way llama.cpp's
own converter (convert_hf_to_gguf.py) writes a Llama or Qwen2 model:

- tensor names from gguf-py's TensorNameMap for the architecture; a tied head writes no `output.weight`
  (llama.cpp then reads the token embedding);
- Llama's q/k projection rows permuted per head (llama.cpp's rotary embedding pairs neighbouring dimensions,
  transformers' pairs the two halves of each head); Qwen2 uses the half-split ("NEOX") rotation, so not there;
- 1-D tensors (norms, biases) stay float32 in every quantization, as llama.cpp's converter keeps them; q8_0 falls
  back to f16 for a matrix whose rows are not a multiple of the 32-value block;
- the tokenizer as byte-level BPE (vocabulary, token types, merges, special ids, add-BOS flag) and the chat template.

Tensors are converted and written one at a time (the header first, from their shapes), so memory stays at one
model plus one tensor, and `should_stop` is asked between tensors. The folder with the file and its Modelfile
appears whole or not at all (written aside, renamed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from uds.export import merge_float32, staging_path
from uds.gguf_support import QUANTIZATIONS, GGUFUnsupported, check_exportable, gguf_architecture, tokenizer_pre
from uds.modelfile import modelfile


class ExportStopped(Exception):
    """`should_stop` said so between two tensors; the partial file has been removed."""


def _gguf():
    import gguf

    return gguf


def file_type(quantization: str):
    gguf = _gguf()
    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[quantization]


def tensor_type(shape: tuple[int, ...], quantization: str):
    """The GGML type one tensor is stored in: 1-D stays float32; q8_0 needs rows in whole 32-value blocks."""
    types = _gguf().GGMLQuantizationType
    if quantization == "f32" or len(shape) < 2:
        return types.F32
    if quantization == "q8_0" and shape[-1] % 32 == 0:
        return types.Q8_0
    return types.F16


def permute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's `permute` of a Llama q/k projection: within each head, rows (2i, 2i+1) become (i, i + d/2)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def llama3_rope_factors(rope: dict, theta: float, head_dim: int) -> torch.Tensor:
    """The per-frequency divisors of Llama 3's RoPE scaling, stored by llama.cpp as the `rope_freqs` tensor."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < context / high:
            factors.append(1.0)
        elif wavelength > context / low:
            factors.append(factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def _rope(config) -> tuple[dict, float]:
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    return rope, float(theta)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


# ---- metadata --------------------------------------------------------------------------------------------------


def add_model_metadata(writer, config, architecture: str, quantization: str, name: str, vocab_size: int) -> None:
    gguf = _gguf()
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(file_type(quantization))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope, theta = _rope(config)
    writer.add_rope_freq_base(theta)
    head_dim = _head_dim(config)
    if architecture == "llama":
        writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        if rope.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])


def _merges(model: dict) -> list[str]:
    # tokenizers writes merges as "a b" strings (older) or [a, b] pairs (newer); GGUF stores "a b".
    return [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def _template_ends(post_processor: dict | None) -> tuple[int | None, int | None]:
    """(id the tokenizer puts before a text, id it puts after it), from its TemplateProcessing, else None."""
    if not post_processor:
        return None, None
    if post_processor.get("type") == "Sequence":
        for step in post_processor.get("processors", []):
            found = _template_ends(step)
            if found != (None, None):
                return found
        return None, None
    if post_processor.get("type") != "TemplateProcessing" or not post_processor.get("single"):
        return None, None
    single, specials = post_processor["single"], post_processor.get("special_tokens", {})

    def special_id(piece: dict) -> int | None:
        token = piece.get("SpecialToken")
        return specials[token["id"]]["ids"][0] if token and token["id"] in specials else None

    return special_id(single[0]), special_id(single[-1])


def vocabulary(backend: dict, size: int) -> tuple[list[str], list[int]]:
    """(tokens, token types) for ids 0..size-1, as llama.cpp's converter lists them: added special tokens are
    CONTROL, other added tokens USER_DEFINED, rows of the embedding no token uses `[PAD<id>]`."""
    types = _gguf().TokenType
    by_id = {index: token for token, index in backend["model"]["vocab"].items()}
    added = {t["id"]: t for t in backend.get("added_tokens", [])}
    tokens, kinds = [], []
    for index in range(size):
        if index in added:
            tokens.append(added[index]["content"])
            kinds.append(types.CONTROL if added[index].get("special") else types.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            kinds.append(types.NORMAL)
        else:
            tokens.append(f"[PAD{index}]")
            kinds.append(types.USER_DEFINED)
    return tokens, kinds


def add_tokenizer(writer, tokenizer, size: int) -> None:
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tokenizer_pre(backend))
    tokens, kinds = vocabulary(backend, size)
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    writer.add_token_merges(_merges(backend["model"]))
    first, last = _template_ends(backend.get("post_processor"))
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else first
    for token_id, add in (
        (bos, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(first is not None)
    writer.add_add_eos_token(last is not None and last != first)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


# ---- tensors ---------------------------------------------------------------------------------------------------


def gguf_tensors(model, architecture: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, float32 tensor in llama.cpp's layout) for every weight the file holds, in state-dict order."""
    gguf = _gguf()
    config = model.config
    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == architecture)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue  # llama.cpp reads the token embedding when output.weight is absent
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFUnsupported(f"GGUF export has no {architecture} tensor name for the weight {key!r}.")
        tensor = tensor.detach().to(torch.float32)
        if architecture == "llama" and name.endswith(("attn_q.weight", "attn_q.bias")):
            tensor = permute_rotary(tensor, heads)
        elif architecture == "llama" and name.endswith(("attn_k.weight", "attn_k.bias")):
            tensor = permute_rotary(tensor, kv_heads)
        yield name, tensor
    rope, theta = _rope(config)
    if (rope.get("rope_type") or rope.get("type")) == "llama3":
        yield (
            gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
            llama3_rope_factors(rope, theta, _head_dim(config)),
        )


def _encode(tensor: torch.Tensor, kind) -> np.ndarray:
    gguf = _gguf()
    data = tensor.contiguous().numpy()
    if kind == gguf.GGMLQuantizationType.F32:
        return data
    if kind == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, kind)


def write_gguf(
    model,
    tokenizer,
    path: str | os.PathLike,
    quantization: str = "f16",
    name: str = "model",
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Write `model` (float32, merged) and `tokenizer` to the GGUF file `path` in `quantization`."""
    gguf = _gguf()
    if quantization not in QUANTIZATIONS:
        raise GGUFUnsupported(f"quantization must be one of {', '.join(QUANTIZATIONS)}", "quantization")
    config = model.config
    architecture = gguf_architecture(config.to_dict())
    size = model.get_input_embeddings().weight.shape[0]
    writer = gguf.GGUFWriter(str(path), architecture)
    try:
        add_model_metadata(writer, config, architecture, quantization, name, size)
        add_tokenizer(writer, tokenizer, size)
        plan = [
            (n, tuple(t.shape), tensor_type(tuple(t.shape), quantization)) for n, t in gguf_tensors(model, architecture)
        ]
        for tensor_name, shape, kind in plan:
            byte_shape = (
                gguf.quant_shape_to_byte_shape(shape, kind) if kind == gguf.GGMLQuantizationType.Q8_0 else shape
            )
            dtype = {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(
                kind, np.uint8
            )
            nbytes = int(np.prod(byte_shape)) * np.dtype(dtype).itemsize
            writer.add_tensor_info(tensor_name, byte_shape, np.dtype(dtype), nbytes, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for (tensor_name, _, kind), (_, tensor) in zip(plan, gguf_tensors(model, architecture), strict=True):
            if should_stop is not None and should_stop():
                raise ExportStopped(f"stopped before writing {tensor_name}")
            writer.write_tensor_data(_encode(tensor, kind))
    finally:
        writer.close()


def export_gguf(
    base_path: str,
    adapter_dir: str,
    out_dir: str | os.PathLike,
    quantization: str = "f16",
    name: str = "model",
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Write `out_dir` (which must not exist) holding `<name>-<quantization>.gguf` and its Ollama `Modelfile`."""
    out_dir = Path(out_dir)
    if Path(base_path).is_dir():
        check_exportable(base_path)  # before the minutes of loading and merging
    staging = staging_path(out_dir)
    try:
        merged, tokenizer = merge_float32(base_path, adapter_dir)
        staging.mkdir(parents=True)
        gguf_name = f"{name}-{quantization}.gguf"
        write_gguf(merged, tokenizer, staging / gguf_name, quantization, name, should_stop)
        (staging / "Modelfile").write_text(modelfile(gguf_name, tokenizer), encoding="utf-8")
        os.rename(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
