"""`uds models add FILE.gguf` and `uds models add HUB_ID --gguf-file NAME`: a GGUF file written here from a tiny Llama
is converted once into a transformers folder, registered with its provenance, and loads to the source's logits;
files transformers cannot load are refused from the header in one line, and nothing half-made stays behind."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch

from api.settings import Settings
from cli.models import models_add, models_list, models_remove
from tests.utils.gguf_files import build_source_model, quantized_copy, write_gguf
from tests.utils.hold import flock_waiters
from uds import gguf_import
from uds.models import load_model_and_tokenizer, resolve_model
from uds.registry import get_registered

TEXT = "the cat sat on the mat, and another one ran in"


@pytest.fixture(scope="module")
def source():
    return build_source_model(seed=0)


@pytest.fixture(scope="module")
def files(source, tmp_path_factory):
    """One GGUF file per quantization, written once for the module (each is a few hundred kB)."""
    model, tokenizer = source
    root = tmp_path_factory.mktemp("gguf")
    return {quant: write_gguf(root / f"tiny-llama.{quant}.gguf", model, tokenizer, quant) for quant in ("F32", "Q8_0")}


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")


def leftovers(settings) -> list[str]:
    """Everything under the models folder but the (empty) registry folder and the lock files (kept on purpose:
    removing one would race with a process about to take it)."""
    root = settings.models_dir
    found = root.rglob("*") if root.exists() else []
    return sorted(str(p.relative_to(root)) for p in found if p.name != "registry" and not p.name.endswith(".lock"))


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("quant", ["F32", "Q8_0"])
def test_an_imported_file_loads_to_the_source_logits_with_its_tokenizer(quant, source, files, settings, capsys):
    model, tokenizer = source
    assert models_add(str(files[quant]), name="tiny-llama", settings=settings) == 0
    out = capsys.readouterr().out
    assert "registered tiny-llama: LlamaForCausalLM" in out and f"(from GGUF tiny-llama.{quant}.gguf, {quant})" in out

    registration = get_registered(settings.models_dir, "tiny-llama")
    assert registration.source == "gguf" and registration.quantization == quant
    assert registration.original_file == f"tiny-llama.{quant}.gguf"
    assert registration.facts.vocab_size == len(tokenizer) and registration.facts.tied_embeddings is False
    folder = Path(resolve_model("tiny-llama", models_dir=settings.models_dir))
    assert folder == settings.models_dir / "tiny-llama"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in folder.iterdir()
    }

    imported, imported_tokenizer = load_model_and_tokenizer(str(folder))
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert imported_tokenizer(TEXT).input_ids == ids[0].tolist()  # merges and split as in the source
    assert imported_tokenizer.chat_template == tokenizer.chat_template
    assert imported_tokenizer.eos_token == tokenizer.eos_token
    # F32 is the source itself; Q8_0 is the source with each matrix through the same quantizer, exactly.
    expected = model if quant == "F32" else quantized_copy(model, quant)
    torch.testing.assert_close(logits(imported, ids), logits(expected, ids), rtol=0, atol=1e-5)
    if quant != "F32":
        assert (logits(imported, ids) - logits(model, ids)).abs().max() > 0  # it really was quantized


def test_list_shows_provenance_and_remove_deletes_the_conversion(files, settings, capsys):
    assert models_add(str(files["Q8_0"]), settings=settings) == 0  # default name: the file's stem
    capsys.readouterr()
    assert models_list(settings=settings) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == (
        "smollm2-135m-instruct\tbuiltin\tSmolLM2-135M-Instruct from GGUF SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1), "
        "converted on first use"
    )
    line = next(row for row in rows if row.startswith("tiny-llama.Q8_0\t"))
    assert (
        line.startswith("tiny-llama.Q8_0\tgguf\tLlamaForCausalLM") and "(from GGUF tiny-llama.Q8_0.gguf, Q8_0)" in line
    )
    assert models_remove("tiny-llama.Q8_0", settings=settings) == 0
    assert leftovers(settings) == []


def test_adding_the_same_file_again_reuses_the_conversion(files, settings, monkeypatch):
    assert models_add(str(files["Q8_0"]), name="again", settings=settings) == 0
    monkeypatch.setattr(gguf_import, "_convert_into", refuse_to_convert)
    assert models_add(str(files["Q8_0"]), name="again", settings=settings) == 0
    # Another file under the same name is refused, not written over the first.
    assert models_add(str(files["F32"]), name="again", settings=settings) == 1
    assert get_registered(settings.models_dir, "again").quantization == "Q8_0"


def refuse_to_convert(gguf_path, folder):
    raise AssertionError("converted again")


@pytest.fixture(scope="module")
def bad_files(source, files, tmp_path_factory):
    model, tokenizer = source
    root = tmp_path_factory.mktemp("bad-gguf")
    good = files["Q8_0"].read_bytes()
    (root / "truncated.gguf").write_bytes(good[: len(good) // 2])
    (root / "notes.gguf").write_text("these are my notes, not a model\n")
    return {
        "quant": write_gguf(root / "odd-quant.gguf", model, tokenizer, "Q8_1"),
        "architecture": write_gguf(root / "acme.gguf", model, tokenizer, "F32", architecture="acme"),
        "tokenizer": write_gguf(root / "bert-vocab.gguf", model, tokenizer, "F32", tokenizer_model="wordpiece"),
        "truncated": root / "truncated.gguf",
        "not gguf": root / "notes.gguf",
    }


@pytest.mark.parametrize(
    "case, says",
    [
        ("quant", ["odd-quant.gguf: tensor type Q8_1 (16 tensors) cannot be dequantized for llama", "Q4_1", "Q8_0"]),
        ("architecture", ["acme.gguf: architecture 'acme' is not supported", "supported:", "llama", "qwen2"]),
        ("tokenizer", ["bert-vocab.gguf: tokenizer 'wordpiece' is not supported", "gpt2", "llama"]),
        ("truncated", ["truncated.gguf is not a readable GGUF file (truncated or corrupt"]),
        ("not gguf", ["notes.gguf is not a GGUF file"]),
    ],
)
def test_a_file_that_cannot_be_imported_is_one_line_and_leaves_nothing(case, says, bad_files, settings, capsys):
    assert models_add(str(bad_files[case]), name="bad", settings=settings) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("uds models add: "), err
    for text in says:
        assert text in err, err
    assert leftovers(settings) == [] and get_registered(settings.models_dir, "bad") is None


def test_a_failed_conversion_leaves_nothing(files, settings, monkeypatch, capsys):
    def fail_halfway(gguf_path, folder):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
        raise gguf_import.GGUFError("tiny-llama.Q8_0.gguf could not be loaded: disk on fire")

    monkeypatch.setattr(gguf_import, "_convert_into", fail_halfway)
    assert models_add(str(files["Q8_0"]), name="half", settings=settings) == 1
    assert "disk on fire" in capsys.readouterr().err
    assert leftovers(settings) == []


def test_a_hub_gguf_fetches_only_the_named_file(files, settings, capsys):
    asked = []

    def fake_hf_hub_download(repo_id, filename, revision, local_dir, token):
        asked.append((repo_id, filename, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files["Q8_0"], target)
        return str(target)

    assert (
        models_add(
            "acme/tiny-llama-GGUF",
            gguf_file="tiny-llama.Q8_0.gguf",
            revision="v1",
            settings=settings,
            hf_hub_download=fake_hf_hub_download,
        )
        == 0
    )
    assert asked == [("acme/tiny-llama-GGUF", "tiny-llama.Q8_0.gguf", "v1")]
    registration = get_registered(settings.models_dir, "tiny-llama.Q8_0")
    assert registration.source == "gguf" and registration.revision == "v1"
    assert registration.original_file == "acme/tiny-llama-GGUF/tiny-llama.Q8_0.gguf"
    assert not (settings.models_dir / gguf_import.DOWNLOADS_FOLDER).exists() or not any(
        (settings.models_dir / gguf_import.DOWNLOADS_FOLDER).iterdir()
    )  # the download is gone once converted

    capsys.readouterr()
    assert models_add("acme/tiny-llama-GGUF", gguf_file="README.md", settings=settings, hf_hub_download=None) == 1
    assert "--gguf-file must name a .gguf file" in capsys.readouterr().err
    assert models_add("./not-a-hub-id", gguf_file="x.gguf", settings=settings) == 2
    assert len(asked) == 1


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks to see a lock waiter")
def test_a_converter_waiting_for_the_lock_finds_the_folder_and_converts_nothing(files, tmp_path, monkeypatch):
    """Held in the state under test: this test holds the lock and a second converter is blocked on it (the kernel
    lists it as a waiter); the folder then appears as another process would make it. The waiter converts nothing."""
    from tests.utils.service import wait_for

    target = tmp_path / "models" / "tiny"
    target.parent.mkdir(parents=True)
    monkeypatch.setattr(gguf_import, "_convert_into", refuse_to_convert)
    results: list = []
    with gguf_import.conversion_lock(target):
        waiting = threading.Thread(target=lambda: results.append(gguf_import.convert_gguf(files["F32"], target)))
        waiting.start()
        wait_for(lambda: flock_waiters(target.parent / ".tiny.lock") == 1, 30, "the second converter to wait")
        staging = tmp_path / "made-elsewhere"
        staging.mkdir()
        (staging / "config.json").write_text("{}")
        staging.rename(target)
    waiting.join(30)
    assert results == [target]


def test_the_support_lists_come_from_transformers():
    support = gguf_import.transformers_support()
    assert {"llama", "qwen2", "gemma2", "lfm2"} <= support.architectures
    assert {"F32", "F16", "Q4_1", "Q8_0", "Q4_K"} <= support.types_for("llama")
    assert "Q8_1" not in support.types_for("llama") and "gpt2" in support.tokenizers
    assert support.types_for("qwen2moe") == support.types_for("qwen2_moe") != frozenset()
