"""The base models jobs may use, with their facts, and the submit-time checks of a job against its model.

Three sources, in this order: uds-tiny (always), the models an operator registered (`uds models add`, read from the
shared data folder on every call, so a registration made by the CLI shows without a restart), and the hub ids of
UDS_ALLOWED_MODELS (no facts until registered). Everything comes from config.json and safetensors headers
(uds/registry.py): the API never loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api.errors import APIError
from api.settings import Settings
from uds.registry import ModelFacts, RegistryError, list_registered, read_facts  # torch-free
from uds.tiny import TINY_MODEL


@dataclass
class BaseModel:
    name: str
    source: str  # "builtin", "hub", "folder" or "allow-list"
    facts: ModelFacts = field(default_factory=ModelFacts)
    revision: str | None = None


def _tiny(settings: Settings) -> BaseModel:
    folder = settings.models_dir / TINY_MODEL
    try:
        facts = read_facts(folder)
    except (RegistryError, OSError):
        facts = ModelFacts()  # built on first use by a worker; its facts show from then on
    return BaseModel(TINY_MODEL, "builtin", facts)


def base_models(settings: Settings) -> list[BaseModel]:
    models = [_tiny(settings)]
    models += [
        BaseModel(r.name, r.source, r.facts, r.revision)
        for r in list_registered(settings.models_dir)
        if r.name != TINY_MODEL
    ]
    known = {m.name for m in models}
    models += [BaseModel(name, "allow-list") for name in settings.allowed_models if name not in known]
    return models


def base_model(settings: Settings, name: str) -> BaseModel:
    """The model a job names, or 400 model_not_found listing what there is and how an operator adds more."""
    models = base_models(settings)
    for model in models:
        if model.name == name:
            return model
    raise APIError(
        400,
        f"Model {name!r} is not available on this server; available: "
        f"{', '.join(m.name for m in models)}. An operator adds models with "
        "`uds models add <hub-id-or-folder>` (or lists hub ids in UDS_ALLOWED_MODELS).",
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
