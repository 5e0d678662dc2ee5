"""Tiny GGUF files written here with the `gguf` package's writer: what a user would import, without a hub.

The source is a tiny Llama (tests/utils/models.py's sizes) with a small byte-level BPE tokenizer: the 256 byte
symbols, a few merges, and uds-tiny's special tokens and ChatML template. GGUF expresses that tokenizer exactly
(`tokenizer.ggml.model` "gpt2", tokens, merges, the Qwen2 split), so the imported tokenizer must encode like the
source one, and the imported model's logits must match the source's (bit for bit in F32; in Q8_0, those of the
source with each weight matrix put through the same quantizer).

Test-only and minimal: tensor names from the `gguf` package's own map, and the one layout change llama.cpp makes
for Llama (the q/k rows permuted for its rotary embedding).
"""

from __future__ import annotations

from pathlib import Path

# Merges of the tiny BPE, best first; each merged token joins the vocabulary after the 256 byte symbols.
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("Ġa", "n"), ("o", "n")]


def build_bpe_tokenizer():
    """A byte-level BPE `PreTrainedTokenizerFast` with MERGES, uds-tiny's special tokens and ChatML template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from uds.tiny import CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN, QWEN2_SPLIT_REGEX, SPECIAL_TOKENS, byte_alphabet

    vocab = {char: index for index, char in enumerate(byte_alphabet())}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(MERGES), unk_token=None, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, chat_template=CHAT_TEMPLATE
    )


def build_source_model(seed: int = 0):
    """(model, tokenizer): a tiny untied Llama over the BPE tokenizer, as a user's model before llama.cpp."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.utils.models import SHAPE

    tokenizer = build_bpe_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def _permute(weights, heads: int):
    # llama.cpp's Llama layout: each head's rows interleaved for its rotary embedding (convert_hf_to_gguf's permute).
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _encode(weights, qtype):
    """(data, raw_dtype) for the writer: floats as they are, quantized bytes for the rest. A type the `gguf`
    package cannot write is zero bytes of its size: importing must refuse it from the header alone."""
    import gguf
    import numpy as np

    if qtype == gguf.GGMLQuantizationType.F32:
        return weights.astype(np.float32), None
    try:
        return gguf.quants.quantize(weights, qtype), qtype
    except NotImplementedError:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        return np.zeros((*weights.shape[:-1], weights.shape[-1] // block * size), dtype=np.uint8), qtype


def llama_gguf_tensors(model, quant: str = "Q8_0") -> dict:
    """GGUF name -> (numpy array as stored, its raw type): norms in F32, weight matrices in `quant`."""
    import gguf

    config = model.config
    qtype = gguf.GGMLQuantizationType[quant]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tensors = {}
    for hf_name, tensor in model.state_dict().items():
        weights = tensor.detach().float().numpy()
        if hf_name.endswith("q_proj.weight"):
            weights = _permute(weights, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            weights = _permute(weights, config.num_key_value_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        tensors[name] = _encode(weights, qtype if weights.ndim == 2 else gguf.GGMLQuantizationType.F32)
    return tensors


def write_gguf(
    path: Path, model, tokenizer, quant: str = "Q8_0", architecture: str = "llama", tokenizer_model: str = "gpt2"
) -> Path:
    """Write `model` (a Llama) and `tokenizer` (build_bpe_tokenizer's) to the GGUF file `path`.

    `architecture` and `tokenizer_model` are what the header claims (for files transformers cannot load).
    """
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama-test")
    writer.add_file_type(getattr(gguf.LlamaFileType, "ALL_F32" if quant == "F32" else f"MOSTLY_{quant}", 0))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token, _ in vocab]
    )
    writer.add_token_merges([f"{left} {right}" for left, right in MERGES])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)

    for name, (data, raw_dtype) in llama_gguf_tensors(model, quant).items():
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def quantized_copy(model, quant: str = "Q8_0"):
    """`model` with each weight matrix put through `quant` and back: what an exact import of its GGUF must equal."""
    import copy

    import gguf
    import torch

    qtype = gguf.GGMLQuantizationType[quant]
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in twin.parameters():
            if parameter.ndim == 2:
                values = parameter.detach().float().numpy()
                restored = gguf.quants.dequantize(gguf.quants.quantize(values, qtype), qtype)
                parameter.copy_(torch.from_numpy(restored.reshape(values.shape)))
    return twin
