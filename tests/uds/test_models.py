import os
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from uds.config import DEFAULT_LORA_TARGETS
from uds.models import (
    TINY_MODEL,
    ModelLoadError,
    ModelNotAllowed,
    add_lora,
    body_hidden_states,
    load_model_and_tokenizer,
    output_head,
    resolve_model,
)
from uds.tiny import build_tiny_model, build_tokenizer

TRICKY_TEXT = "héllo <|im_start|>wörld 你好\r\n  tabs\tand Ａ\u0301 e\u0301 <|endoftext|>"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model_and_tokenizer(tiny_model_dir, device="cpu")


@pytest.fixture
def batch(tiny):
    _, tokenizer = tiny
    encoded = tokenizer(["Reverse: abc -> cba", "hi"], padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def folder_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}


# ---------------------------------------------------------------------------------------------------------------
# build_tiny_model


def test_build_is_deterministic_and_seed_dependent(tmp_path):
    first = build_tiny_model(tmp_path / "a", seed=0)
    second = build_tiny_model(tmp_path / "b", seed=0)
    other = build_tiny_model(tmp_path / "c", seed=1)
    assert folder_bytes(first) == folder_bytes(second)
    assert folder_bytes(first)["model.safetensors"] != folder_bytes(other)["model.safetensors"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(first))
    # Atomic: nothing left behind under a temporary name.
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]


def test_build_does_not_move_the_callers_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_build_refuses_an_existing_folder(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "m")


def test_tiny_model_shape(tiny):
    model, tokenizer = tiny
    config = model.config
    assert config.model_type == "qwen2" and not config.tie_word_embeddings
    assert config.vocab_size == len(tokenizer) == 260
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 10_000_000
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|endoftext|>"
    assert config.pad_token_id == tokenizer.pad_token_id and config.eos_token_id == tokenizer.eos_token_id


def test_loaded_tokenizer_encodes_like_the_built_one(tiny):
    _, loaded = tiny
    built = build_tokenizer()
    assert (
        loaded(TRICKY_TEXT, add_special_tokens=False)["input_ids"]
        == built(TRICKY_TEXT, add_special_tokens=False)["input_ids"]
    )
    # Byte-level: token id i < 256 is byte i, so any text round-trips.
    assert loaded("abc", add_special_tokens=False)["input_ids"] == [97, 98, 99]
    assert loaded.decode(loaded("héllo 你好", add_special_tokens=False)["input_ids"]) == "héllo 你好"


def test_tiny_chat_template_is_chatml(tiny):
    _, tokenizer = tiny
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


# ---------------------------------------------------------------------------------------------------------------
# resolve_model


def test_tiny_is_built_on_first_use_and_reused(tmp_path):
    path = resolve_model(TINY_MODEL, models_dir=tmp_path)
    assert path == str(tmp_path / TINY_MODEL) and (Path(path) / "config.json").exists()
    mtime = (Path(path) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(TINY_MODEL, allowed=["some/other"], models_dir=tmp_path) == path
    assert (Path(path) / "model.safetensors").stat().st_mtime_ns == mtime


def test_tiny_default_models_dir_follows_uds_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UDS_DATA_DIR", str(tmp_path))
    assert resolve_model(TINY_MODEL) == str(tmp_path / "models" / TINY_MODEL)


def test_concurrent_first_use_builds_one_complete_model(tmp_path):
    results, errors = [], []

    def resolve():
        try:
            results.append(resolve_model(TINY_MODEL, models_dir=tmp_path))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=resolve) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(results)) == 1
    assert os.listdir(tmp_path) == [TINY_MODEL]


def test_a_builder_that_loses_the_race_keeps_the_winners_folder(tmp_path, monkeypatch):
    import uds.tiny

    real_rename = os.rename
    target = tmp_path / TINY_MODEL

    def rename_after_a_rival_finished(source, destination):
        monkeypatch.setattr(uds.tiny.os, "rename", real_rename)
        build_tiny_model(target)  # the rival renames its complete folder into place first
        real_rename(source, destination)

    monkeypatch.setattr(uds.tiny.os, "rename", rename_after_a_rival_finished)
    assert build_tiny_model(target) == str(target)
    assert os.listdir(tmp_path) == [TINY_MODEL] and (target / "model.safetensors").exists()


def test_tiny_folder_that_is_not_a_model_is_not_overwritten(tmp_path):
    (tmp_path / TINY_MODEL).mkdir()
    (tmp_path / TINY_MODEL / "notes.txt").write_text("mine")
    with pytest.raises(ModelLoadError, match="not a complete uds-tiny model"):
        resolve_model(TINY_MODEL, models_dir=tmp_path)
    assert os.listdir(tmp_path / TINY_MODEL) == ["notes.txt"]


def test_local_folders_need_the_allow_list_when_there_is_one(tiny_model_dir, tmp_path):
    assert resolve_model(tiny_model_dir) == os.path.realpath(tiny_model_dir)
    assert resolve_model(tiny_model_dir, allowed=[tiny_model_dir + "/"]) == os.path.realpath(tiny_model_dir)
    with pytest.raises(ModelNotAllowed, match="not in the allow-list"):
        resolve_model(tiny_model_dir, allowed=["Qwen/Qwen2.5-0.5B"])
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="no model folder"):
        resolve_model(str(tmp_path / "missing"))


def test_hub_ids_only_when_listed():
    with pytest.raises(ModelNotAllowed, match="uds models add Qwen/Qwen2.5-0.5B"):
        resolve_model("Qwen/Qwen2.5-0.5B")
    with pytest.raises(ModelNotAllowed) as caught:
        resolve_model("Qwen/Qwen2.5-0.5B", allowed=["meta-llama/Llama-3.2-1B"])
    assert caught.value.name == "Qwen/Qwen2.5-0.5B"
    assert "uds-tiny, smollm2-135m-instruct, meta-llama/Llama-3.2-1B" in str(caught.value)
    import pickle

    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)
    assert resolve_model("Qwen/Qwen2.5-0.5B", allowed=["Qwen/Qwen2.5-0.5B"]) == "Qwen/Qwen2.5-0.5B"
    with pytest.raises(ModelNotAllowed, match="empty"):
        resolve_model(" ")


# ---------------------------------------------------------------------------------------------------------------
# load_model_and_tokenizer


def test_load_gives_float32_sdpa_eval_model_with_right_padding(tiny):
    model, tokenizer = tiny
    assert model.dtype == torch.float32 and not model.training
    assert model.config._attn_implementation == "sdpa"
    assert tokenizer.padding_side == "right" and tokenizer.pad_token_id is not None


def test_load_sets_a_missing_pad_token_to_eos(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "nopad"
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    tokenizer.pad_token = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model, tokenizer = load_model_and_tokenizer(str(folder), dtype="float32")
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == tokenizer.eos_token_id


def test_load_errors_are_readable(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="could not load"):
        load_model_and_tokenizer(str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# add_lora


def test_lora_on_present_targets_only_base_frozen(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    peft_model = add_lora(model, r=4, alpha=8, dropout=0.0, targets=[*DEFAULT_LORA_TARGETS, "c_attn"])
    config = peft_model.peft_config["default"]
    assert set(config.target_modules) == set(DEFAULT_LORA_TARGETS)
    assert config.r == 4 and config.lora_alpha == 8 and config.task_type == "CAUSAL_LM"
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # 2 layers x 7 projections x (A and B).
    assert len(trainable) == 2 * 7 * 2
    assert all(not p.requires_grad for name, p in peft_model.named_parameters() if "lora_" not in name)


def test_lora_with_no_present_target_is_an_error(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    with pytest.raises(ValueError, match="none of the LoRA targets .* its linear layers are: .*q_proj"):
        add_lora(model, r=4, alpha=8, dropout=0.0, targets=["c_attn", "query_key_value"])


# ---------------------------------------------------------------------------------------------------------------
# output_head and body_hidden_states: logits == body_hidden_states @ W.T


def test_output_head_of_tiny_is_linear(tiny):
    model, _ = tiny
    head = output_head(model)
    assert head.is_linear and head.bias is None and head.softcap is None and head.scale == 1.0
    assert head.weight.shape == (260, 256) and not head.weight.requires_grad
    assert head.weight.data_ptr() == model.lm_head.weight.data_ptr()


def test_body_hidden_states_times_head_is_the_logits(tiny, batch):
    model, _ = tiny
    input_ids, attention_mask = batch
    with torch.no_grad():
        hidden = body_hidden_states(model, input_ids, attention_mask)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    head = output_head(model)
    assert hidden.shape == (*input_ids.shape, 256)
    torch.testing.assert_close(hidden @ head.weight.T, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.logits(hidden), logits, rtol=1e-5, atol=1e-5)


def test_body_hidden_states_with_lora_is_the_logits(tiny_model_dir, batch):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    with torch.no_grad():
        base_logits = model(input_ids=batch[0], attention_mask=batch[1]).logits
    torch.manual_seed(0)
    peft_model = add_lora(model, r=4, alpha=8, dropout=0.0, targets=[*DEFAULT_LORA_TARGETS, "lm_head"])
    with torch.no_grad():
        # LoRA B starts at zero (a no-op); make the adapters matter so the test can tell.
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)
        hidden = body_hidden_states(peft_model, *batch)
        logits = peft_model(input_ids=batch[0], attention_mask=batch[1]).logits
    assert not torch.allclose(logits, base_logits, atol=1e-3)
    head = output_head(peft_model)
    torch.testing.assert_close(hidden @ head.weight.T, logits, rtol=1e-4, atol=1e-4)


def test_body_hidden_states_carries_gradients_to_lora(tiny_model_dir, batch):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    peft_model = add_lora(model, r=4, alpha=8, dropout=0.0, targets=["q_proj"])
    body_hidden_states(peft_model, *batch).sum().backward()
    grads = [p.grad for name, p in peft_model.named_parameters() if "lora_B" in name]
    assert grads and all(g is not None for g in grads)


def test_output_head_is_not_linear_with_bias_or_softcapping(tiny_model_dir, batch):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    d, vocab = model.config.hidden_size, model.config.vocab_size
    with torch.no_grad():
        biased = nn.Linear(d, vocab, bias=True)
        biased.weight.copy_(model.lm_head.weight)
        biased.bias.normal_()
    model.lm_head = biased
    head = output_head(model)
    assert not head.is_linear and head.bias is not None
    with torch.no_grad():
        hidden = body_hidden_states(model, *batch)
        logits = model(input_ids=batch[0], attention_mask=batch[1]).logits
    torch.testing.assert_close(head.logits(hidden), logits, rtol=1e-5, atol=1e-5)

    model.config.final_logit_softcapping = 30.0
    capped = output_head(model)
    assert not capped.is_linear and capped.softcap == 30.0
    model.config.final_logit_softcapping = None
    model.config.logit_scale = 0.5
    assert not output_head(model).is_linear and output_head(model).scale == 0.5
