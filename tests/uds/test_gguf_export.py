"""The GGUF export, proved by reading it back with transformers' GGUF loader (`gguf_file=`).

Tiny Llama (SmolLM2-shaped: tied head, default system prompt) and Qwen2 (Qwen2.5-shaped: q/k/v biases, untied head,
padded vocabulary) models with trained byte-level BPE tokenizers, each with a non-zero LoRA adapter. The logits of
the file read back are compared with the merged float32 model (max |difference|): f32 to 1e-5 (measured: 0, the
same float32 numbers), f16 to 2e-3 and q8_0 to 3e-2 (measured: 5.8e-4 and 8.8e-3 on the Llama, 2.0e-4 and 6.0e-3 on
the Qwen2, whose logits reach about 1.0 and 0.7 in absolute value). Tokenization of the file's tokenizer equals the
source tokenizer's on text with the chat template's special tokens, unicode and whitespace runs. The real model's
check is the one slow test at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.utils.gguf_models import add_random_adapter, build_gguf_ready_model
from tests.utils.models import build_model_folder
from uds.export import merge_float32
from uds.gguf_export import ExportStopped, export_gguf, llama3_rope_factors
from uds.gguf_support import GGUFUnsupported

TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "q8_0": 3e-2}
PROMPTS = ["Reverse: abcdef -> fedcba", "What is the capital of France? The capital", "def add(a, b):\n    return"]
STRINGS = [
    "Hello world",
    "héllo  wörld\t\tcafé naïve Grüße",
    "日本語のテキスト, Привет мир, emoji 🙂🚀",
    "   leading, trailing and   inner   runs   ",
    "\n\n\nnew lines\r\n and\ttabs\n",
    "Numbers 0123456789 and 2024-12-06, 3.14159",
    "I'm sure you're right, they've said we'll see; it's John's.",
    "<|im_start|>user\nliteral special tokens<|im_end|>\n<|endoftext|>",
]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_and_adapter(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    base = build_gguf_ready_model(root / "base", request.param)
    return request.param, base, add_random_adapter(base, root / "adapter")


@pytest.fixture(scope="module")
def merged(model_and_adapter):
    _, base, adapter = model_and_adapter
    model, tokenizer = merge_float32(str(base), str(adapter))
    return model.eval(), tokenizer


def read_back(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = next(folder.glob("*.gguf")).name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)


def max_logit_difference(a, b, tokenizer) -> float:
    with torch.no_grad():
        return max(
            (a(**tokenizer(p, return_tensors="pt")).logits - b(**tokenizer(p, return_tensors="pt")).logits)
            .abs()
            .max()
            .item()
            for p in PROMPTS
        )


@pytest.mark.parametrize("quantization", ["f32", "f16", "q8_0"])
def test_the_file_read_back_has_the_merged_models_logits(model_and_adapter, merged, quantization, tmp_path):
    architecture, base, adapter = model_and_adapter
    model, tokenizer = merged
    out = export_gguf(str(base), str(adapter), tmp_path / "gguf", quantization, name="tiny")
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", f"tiny-{quantization}.gguf"]
    back, _ = read_back(out)
    difference = max_logit_difference(model, back, tokenizer)
    assert difference <= TOLERANCE[quantization], f"{architecture} {quantization}: max |logit diff| {difference}"
    if quantization != "f32":  # rounding happened, so the comparison above compares something
        assert difference > 0


def test_the_file_tokenizes_like_the_source(model_and_adapter, merged, tmp_path):
    _, base, adapter = model_and_adapter
    _, tokenizer = merged
    _, back = read_back(export_gguf(str(base), str(adapter), tmp_path / "gguf", "f16"))
    chat = [{"role": "user", "content": "Hi there 🙂"}, {"role": "assistant", "content": "Hello!  How   can I help?"}]
    texts = [*STRINGS, tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)]
    for text in texts:
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"], text
        assert back.decode(tokenizer(text)["input_ids"]) == tokenizer.decode(tokenizer(text)["input_ids"]), text
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):  # special tokens stay whole
        assert len(back(token, add_special_tokens=False)["input_ids"]) == 1
    assert (back.bos_token, back.eos_token, back.pad_token) == (
        tokenizer.bos_token,
        tokenizer.eos_token,
        tokenizer.pad_token,
    )
    assert back.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(chat, tokenize=False)


def test_the_metadata_is_what_llama_cpp_reads(model_and_adapter, merged, tmp_path):
    from gguf import GGUFReader

    architecture, base, adapter = model_and_adapter
    model, tokenizer = merged
    out = export_gguf(str(base), str(adapter), tmp_path / "gguf", "q8_0")
    reader = GGUFReader(next(out.glob("*.gguf")))

    def field(key):
        return reader.fields[key].contents()

    config = model.config
    assert field("general.architecture") == architecture
    for key, value in {
        "context_length": config.max_position_embeddings,
        "embedding_length": config.hidden_size,
        "block_count": config.num_hidden_layers,
        "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.num_attention_heads,
        "attention.head_count_kv": config.num_key_value_heads,
        "vocab_size": config.vocab_size,
    }.items():
        assert field(f"{architecture}.{key}") == value, key
    assert field(f"{architecture}.rope.freq_base") == pytest.approx(config.rope_parameters["rope_theta"])
    assert field(f"{architecture}.attention.layer_norm_rms_epsilon") == pytest.approx(config.rms_norm_eps)
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == {"llama": "gpt-2", "qwen2": "qwen2"}[architecture]
    assert len(field("tokenizer.ggml.tokens")) == config.vocab_size  # padded rows included, as [PAD<id>]
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert field("tokenizer.ggml.add_bos_token") is False
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    names = {t.name: t.tensor_type.name for t in reader.tensors}
    assert ("output.weight" in names) == (architecture == "qwen2")  # a tied head writes none
    assert ("blk.0.attn_q.bias" in names) == (architecture == "qwen2")
    assert names["blk.0.attn_q.weight"] == "Q8_0" and names["blk.0.attn_norm.weight"] == "F32"


def test_the_modelfile_runs_the_chat_template_in_ollama(model_and_adapter, tmp_path):
    architecture, base, adapter = model_and_adapter
    out = export_gguf(str(base), str(adapter), tmp_path / "gguf", "q8_0", name="mine")
    text = (out / "Modelfile").read_text()
    assert text.startswith("FROM ./mine-q8_0.gguf\n")
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    # SmolLM2's template inserts a default system prompt; Ollama gets it as SYSTEM.
    assert ('SYSTEM """You are a tiny test model."""' in text) == (architecture == "llama")


def test_an_unsupported_architecture_is_refused_before_any_work(tmp_path):
    folder = build_model_folder(tmp_path / "gemma", "gemma2")
    with pytest.raises(GGUFUnsupported, match=r"architecture 'gemma2'; supported: llama, qwen2"):
        export_gguf(str(folder), str(tmp_path / "no-adapter-needed"), tmp_path / "out", "f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma"]


def test_uds_tinys_merge_less_tokenizer_is_refused_with_the_reason(tiny_model_dir, tmp_path):
    with pytest.raises(GGUFUnsupported, match="has none"):
        export_gguf(tiny_model_dir, str(tmp_path / "adapter"), tmp_path / "out", "f16")
    assert not (tmp_path / "out").exists()


def test_a_stop_between_tensors_leaves_nothing(model_and_adapter, tmp_path):
    _, base, adapter = model_and_adapter
    asked = []

    def stop_at_the_third_tensor():
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(ExportStopped):
        export_gguf(str(base), str(adapter), tmp_path / "out", "f16", should_stop=stop_at_the_third_tensor)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_mid_write_leaves_nothing_and_says_so(model_and_adapter, tmp_path, monkeypatch):
    import gguf

    _, base, adapter = model_and_adapter
    real = gguf.GGUFWriter.write_tensor_data
    written = []

    def full_after_two(self, tensor, *args, **kwargs):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(1)
        return real(self, tensor, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full_after_two)
    with pytest.raises(OSError, match="No space left"):
        export_gguf(str(base), str(adapter), tmp_path / "out", "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_llama3_rope_factors_give_transformers_frequencies():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = LlamaConfig(hidden_size=2048, num_attention_heads=32, max_position_embeddings=131072, rope_parameters=rope)
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 1.0 / (500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    # llama.cpp divides each frequency by its factor
    torch.testing.assert_close(plain / llama3_rope_factors(rope, 500000.0, 64), expected.float())


# ---- the real model ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_model_round_trips_as_f16(real_model_dir, tmp_path):
    """SmolLM2-135M-Instruct + a LoRA adapter as f16: same greedy answer for 30 tokens, same tokenization."""
    # The scale of benchmarks/gguf_export.py, whose f16 file it checks the same way.
    adapter = add_random_adapter(Path(real_model_dir), tmp_path / "adapter", scale=0.01)
    model, tokenizer = merge_float32(real_model_dir, str(adapter))
    back, back_tokenizer = read_back(export_gguf(real_model_dir, str(adapter), tmp_path / "gguf", "f16"))
    for text in STRINGS:
        assert back_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        expected = model.generate(**ids, max_new_tokens=30, min_new_tokens=30, do_sample=False)
        actual = back.generate(**ids, max_new_tokens=30, min_new_tokens=30, do_sample=False)
    assert actual.tolist() == expected.tolist()
    assert json.loads((Path(real_model_dir) / "config.json").read_text())["model_type"] == "llama"
