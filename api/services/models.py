"""The base models jobs may use, with their facts, and the submit-time checks of a job against its model.

Four sources, in this order: the built-in real model smollm2-135m-instruct (when its wheel is installed or it was
converted already: first, so it is what forms suggest), uds-tiny (always), the models an operator registered (`uds
models add`, read from the shared data folder on every call, so a registration made by the CLI shows without a
restart), and the hub ids of UDS_ALLOWED_MODELS (no facts until registered). Everything comes from config.json and
safetensors headers (uds/registry.py): the API never loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from api.errors import APIError
from api.settings import Settings
from uds.registry import ModelFacts, RegistryError, list_registered, read_facts  # torch-free
from uds.smollm2 import GGUF_FILE, QUANTIZATION, REAL_MODEL, not_installed_message, wheel_gguf
from uds.tiny import TINY_MODEL

BUILTINS = (REAL_MODEL, TINY_MODEL)


@dataclass
class BaseModel:
    name: str
    source: str  # "builtin", "hub", "folder", "gguf" or "allow-list"
    facts: ModelFacts = field(default_factory=ModelFacts)
    revision: str | None = None
    quantization: str | None = None  # a GGUF import's quantization type
    original_file: str | None = None  # and the file it came from
    folder: Path | None = None  # where its files are on this host; None for a hub id not registered yet


def _builtin(settings: Settings, name: str, **provenance) -> BaseModel:
    try:
        facts = read_facts(settings.models_dir / name)
    except (RegistryError, OSError):
        facts = ModelFacts()  # made on first use by a worker; its facts show from then on
    return BaseModel(name, "builtin", facts, folder=settings.models_dir / name, **provenance)


def _real_model_usable(settings: Settings) -> bool:
    return (settings.models_dir / REAL_MODEL / "config.json").is_file() or wheel_gguf() is not None


def base_models(settings: Settings) -> list[BaseModel]:
    models = []
    if _real_model_usable(settings):
        models.append(_builtin(settings, REAL_MODEL, quantization=QUANTIZATION, original_file=GGUF_FILE))
    models.append(_builtin(settings, TINY_MODEL))
    models += [
        BaseModel(r.name, r.source, r.facts, r.revision, r.quantization, r.original_file, r.folder(settings.models_dir))
        for r in list_registered(settings.models_dir)
        if r.name not in BUILTINS
    ]
    known = {m.name for m in models}
    models += [BaseModel(name, "allow-list") for name in settings.allowed_models if name not in known]
    return models


def find_base_model(settings: Settings, name: str) -> BaseModel | None:
    """The base model called `name`, or None."""
    return next((model for model in base_models(settings) if model.name == name), None)


def base_model(settings: Settings, name: str) -> BaseModel:
    """The model a job names, or 400 model_not_found listing what there is and how an operator adds more."""
    model = find_base_model(settings, name)
    if model is not None:
        return model
    if name == REAL_MODEL:
        raise APIError(400, f"{not_installed_message()}.", code="model_not_found", param="model")
    raise APIError(
        400,
        f"Model {name!r} is not available on this server; available: "
        f"{', '.join(m.name for m in base_models(settings))}. An operator adds models with "
        "`uds models add <hub-id, folder or .gguf file>` (or lists hub ids in UDS_ALLOWED_MODELS).",
        code="model_not_found",
        param="model",
    )


def check_job_fits_model(model: BaseModel, config, targets_given: bool) -> None:
    """400 now, naming the setting, for what would otherwise fail minutes later on a worker."""
    facts = model.facts
    if facts.context_length is not None and config.max_seq_len > facts.context_length:
        raise APIError(
            400,
            f"max_seq_len {config.max_seq_len} is above the context length of {model.name} "
            f"({facts.context_length} tokens); use at most {facts.context_length}.",
            code="invalid_value",
            param="max_seq_len",
        )
    if facts.linear_modules is None:
        return  # weights not in safetensors (or not registered yet): the worker checks when it loads them
    present = [t for t in config.lora_targets if t in facts.linear_modules]
    missing = [t for t in config.lora_targets if t not in facts.linear_modules]
    # Defaults are a Llama-family list: a model lacking some of them still trains on the rest, as in `uds train`.
    if (missing and targets_given) or not present:
        raise APIError(
            400,
            f"lora_targets: {model.name} has no module named {', '.join(missing)}; its linear "
            f"layers are {', '.join(facts.linear_modules)}.",
            code="invalid_value",
            param="lora_targets",
        )
