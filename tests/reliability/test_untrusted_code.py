"""Nothing a user or a model folder supplies is ever executed: remote code stays off (a model folder that ships
its own modeling code is loaded without running it, or refused), and checkpoints are read with weights_only
(a state file carrying a pickled payload is refused and the payload never runs). A source scan backs both up."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def test_model_code_shipped_in_a_folder_never_runs(tiny_model_dir, tmp_path):
    from uds.models import ModelLoadError, load_model_and_tokenizer

    folder = tmp_path / "model-with-code"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "remote-code-ran"
    code = f"open({str(marker)!r}, 'w').write('pwned')\n"
    (folder / "modeling_evil.py").write_text(code + "from transformers import PreTrainedModel as EvilModel\n")
    (folder / "tokenization_evil.py").write_text(code + "from transformers import PreTrainedTokenizerFast as EvilTok\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.exists():
        tc = json.loads(tokenizer_config.read_text())
        tc["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTok", None]}
        tokenizer_config.write_text(json.dumps(tc))
    try:
        load_model_and_tokenizer(str(folder), device="cpu")
    except ModelLoadError:
        pass  # refusing is as good as ignoring the code
    assert not marker.exists()


def test_from_pretrained_is_always_called_without_remote_code(tiny_model_dir, monkeypatch):
    import transformers

    from uds.models import load_model_and_tokenizer

    seen = []
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_model_and_tokenizer(tiny_model_dir, device="cpu")
    assert seen and all(flag is False for flag in seen), seen


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_a_pickled_payload_is_refused(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from uds.checkpoint import STATE_FILE, latest_checkpoint, load_checkpoint, save_checkpoint

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])
    )
    root = tmp_path / "checkpoints"
    save_checkpoint(str(root), 1, model, {"step": 1, "rng": torch.get_rng_state()}, keep=2)
    checkpoint = latest_checkpoint(str(root))
    assert load_checkpoint(checkpoint.path, model)["step"] == 1  # the honest file loads

    marker = tmp_path / "payload-ran"
    torch.save({"step": 1, "evil": _Payload(str(marker))}, os.path.join(checkpoint.path, STATE_FILE))
    with pytest.raises(Exception) as error:  # torch's UnpicklingError under weights_only
        load_checkpoint(checkpoint.path, model)
    assert "weights_only" in str(error.value) or "Unsupported" in str(error.value)
    assert not marker.exists()


def test_sources_never_unpickle_or_trust_remote_code():
    offenders = []
    for package in ("uds", "api", "worker"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            for number, line in enumerate(text.splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(
                    r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load\(|\bnp\.load\(.*allow_pickle\s*=\s*True", code
                ):
                    offenders.append(f"{path}:{number}: {line.strip()}")
                if re.search(r"trust_remote_code\s*=\s*True", code):
                    offenders.append(f"{path}:{number}: {line.strip()}")
                if "torch.load(" in code and "weights_only=True" not in code:
                    offenders.append(f"{path}:{number}: {line.strip()}")
    assert not offenders, offenders
