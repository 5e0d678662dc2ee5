"""Registered models (uds/registry.py) on locally built folders of three architectures, tied and untied: the facts
read without torch agree with the loaded model, registrations resolve by name, and a hub id is downloaded only by
`download_hub_model` (here with a stand-in for huggingface_hub: nothing reaches the network in tests)."""

from __future__ import annotations

import json

import pytest

from tests.utils.models import build_model_folder
from uds.models import ModelNotAllowed, load_model_and_tokenizer, output_head, resolve_model
from uds.registry import (
    HUB_FILES,
    RegistryError,
    download_hub_model,
    get_registered,
    list_registered,
    read_facts,
    remove_registration,
    save_registration,
)

VARIANTS = [("qwen2", False), ("qwen2", True), ("llama", False), ("llama", True), ("gemma2", True)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        (arch, tied): build_model_folder(root / f"{arch}-{'tied' if tied else 'untied'}", arch, tied)
        for arch, tied in VARIANTS
    }


@pytest.mark.parametrize("variant", VARIANTS, ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in VARIANTS])
def test_facts_without_torch_match_the_loaded_model(folders, variant):
    facts = read_facts(folders[variant])
    model, _ = load_model_and_tokenizer(str(folders[variant]), device="cpu")
    head = output_head(model)
    assert facts.parameters == sum(p.numel() for p in model.parameters())
    assert facts.vocab_size == model.config.vocab_size == head.weight.shape[0]
    assert facts.context_length == model.config.max_position_embeddings
    assert facts.tied_embeddings is variant[1]
    # The scoring route the trainer takes is the one the API shows.
    assert facts.linear_head is head.is_linear is (variant[0] != "gemma2")
    if variant[0] == "gemma2":
        assert "soft-capping" in facts.head_note
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(facts.linear_modules)
    assert ("lm_head" in facts.linear_modules) is (not variant[1])


def test_a_folder_without_config_or_weights_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="no config.json"):
        save_registration(tmp_path / "models", "empty", tmp_path, "folder")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(RegistryError, match="no weights"):
        save_registration(tmp_path / "models", "empty", tmp_path, "folder")


def test_registered_models_resolve_by_name_and_survive_a_new_reader(folders, tmp_path):
    models_dir = tmp_path / "data" / "models"
    save_registration(models_dir, "my-llama", folders[("llama", True)], "folder")
    # Inside the data folder, a registration stores a relative path (the volume may be mounted elsewhere).
    inside = build_model_folder(models_dir / "acme--tiny", "qwen2", False)
    save_registration(models_dir, "acme/tiny", inside, "hub", revision="abc123")
    assert [r.name for r in list_registered(models_dir)] == ["acme/tiny", "my-llama"]
    stored = json.loads((models_dir / "registry" / "acme--tiny.json").read_text())
    assert stored["path"] == "models/acme--tiny" and stored["revision"] == "abc123"

    # Any allow-list (the service's) or none (uds train): registering is the operator's decision.
    assert resolve_model("my-llama", allowed=["uds-tiny"], models_dir=models_dir) == str(folders[("llama", True)])
    assert resolve_model("acme/tiny", allowed=None, models_dir=models_dir) == str(inside)

    removed = remove_registration(models_dir, "acme/tiny")
    assert removed.source == "hub" and not inside.exists()  # the download goes with it
    remove_registration(models_dir, "my-llama")
    assert folders[("llama", True)].is_dir()  # a user's own folder is never deleted
    assert get_registered(models_dir, "my-llama") is None
    with pytest.raises(RegistryError, match="uds models list"):
        remove_registration(models_dir, "my-llama")


def test_an_unregistered_hub_id_says_how_to_register_it(tmp_path):
    with pytest.raises(ModelNotAllowed, match="uds models add Qwen/Qwen2.5-0.5B-Instruct"):
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct", allowed=None, models_dir=tmp_path)


def test_hub_download_pins_the_revision_and_passes_the_token(folders, tmp_path, monkeypatch):
    calls = []

    def fake_snapshot_download(**kwargs):  # what huggingface_hub.snapshot_download would leave in local_dir
        calls.append(kwargs)
        build_model_folder(kwargs["local_dir"], "llama", False)
        return kwargs["local_dir"]

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    folder = download_hub_model(tmp_path / "models", "acme/llama", "v1.0", snapshot_download=fake_snapshot_download)
    assert calls == [
        {
            "repo_id": "acme/llama",
            "revision": "v1.0",
            "local_dir": str(tmp_path / "models" / "acme--llama"),
            "allow_patterns": HUB_FILES,
            "token": "hf_test_token",
        }
    ]
    assert read_facts(folder).architecture == "LlamaForCausalLM"
