"""Tiny model folders whose tokenizers GGUF can carry: byte-level BPE with merges, trained here on a fixed text.

uds-tiny's tokenizer has no merges (every byte is a token), which GGUF's byte-level BPE cannot express, so the GGUF
tests use these instead: a Llama shaped like SmolLM2 (GPT-2's split regex, ids 0-2 for <|endoftext|>,
<|im_start|>, <|im_end|>, a chat template with a default system prompt, tied head) and a Qwen2 shaped like
Qwen2.5 (Qwen2's split regex and NFC, biases on q/k/v, untied head, embedding rows no token uses).
"""

from __future__ import annotations

from pathlib import Path

from tests.utils.models import SHAPE

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Reverse: abcdef -> fedcba. Copy: hello world -> hello world.",
    "What is the capital of France? The capital of France is Paris.",
    "def add(a, b):\n    return a + b\n\n\nprint(add(17, 25))  # 42",
    "Numbers 0123456789 and 2024-12-06, 3.14159, 1,000,000.",
    "Unicode: café, naïve, Grüße, 日本語のテキスト, Привет мир, emoji 🙂🚀.",
    "Whitespace   runs\t\ttabs\n\n\nnew lines   and  spaces.",
    "I'm sure you're right, they've said we'll see; it's John's.",
] * 20


def build_bpe_tokenizer(style: str, vocab_size: int = 420):
    """A trained byte-level BPE as a PreTrainedTokenizerFast; style "smollm" (GPT-2 regex) or "qwen2"."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from uds.tiny import CHAT_TEMPLATE, QWEN2_SPLIT_REGEX

    backend = Tokenizer(models.BPE())
    if style == "qwen2":
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    if style == "qwen2":
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            chat_template=CHAT_TEMPLATE,
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
        chat_template=SMOLLM_TEMPLATE,
    )


def build_gguf_ready_model(path: Path, architecture: str, seed: int = 0) -> Path:
    """A transformers folder: "llama" (SmolLM2-like, tied) or "qwen2" (Qwen2.5-like: biases, untied, padded vocab)."""
    import torch
    import transformers

    llama = architecture == "llama"
    tokenizer = build_bpe_tokenizer("smollm" if llama else "qwen2")
    config_class = transformers.LlamaConfig if llama else transformers.Qwen2Config
    config = config_class(
        vocab_size=len(tokenizer) + (0 if llama else 5),
        tie_word_embeddings=llama,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        rope_theta=100000.0 if llama else 1000000.0,
        **SHAPE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (transformers.LlamaForCausalLM if llama else transformers.Qwen2ForCausalLM)(config)
        if not llama:  # transformers initialises biases to zero: make them matter, as trained ones do
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if name.endswith("bias"):
                        parameter.normal_(0, 0.2)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def add_random_adapter(base: Path, out: Path, seed: int = 0, scale: float = 0.05) -> Path:
    """A LoRA adapter whose B matrices are non-zero (N(0, scale)), so merging changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, scale)
    peft_model.save_pretrained(out)
    return out
