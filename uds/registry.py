"""Registered models: the base models an operator has added (`uds models add`), and the facts users choose by.

Torch-free at import and at run time (the API imports it): the facts come from `config.json` and the safetensors
headers (a JSON block at the start of each file), never from loading the weights.

A registration is one JSON file, `<models_dir>/registry/<slug>.json`, written under a temporary name and renamed,
so two processes registering at once never leave half a file, and every worker that mounts the same data folder
sees the same models (distributed mode: the shared volume). A hub model's files are downloaded into
`<models_dir>/<slug>/`, a GGUF file is converted into it (uds/gguf_import.py); a local folder stays where it is (it
must be visible to the workers at the same path).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import struct
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

REGISTRY_FOLDER = "registry"
# Sources whose folder `uds models add` made in the data folder (removing the model deletes it).
CREATED_HERE = ("hub", "gguf")
# The files a transformers causal LM needs; other formats in a hub repo (.bin, .gguf, .onnx) are left behind.
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
# config.json keys that hold the context length, in the order transformers' architectures use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
# A safetensors header is JSON; bigger than this is not a header (a corrupt or hostile file).
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


class RegistryError(ValueError):
    """A model cannot be registered or found; the message says what to do."""


@dataclass
class ModelFacts:
    """What a user needs to choose a model, all read without torch. None where the files do not say."""

    architecture: str | None = None
    model_type: str | None = None
    parameters: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    hidden_size: int | None = None
    layers: int | None = None
    tied_embeddings: bool | None = None
    # True: logits are hidden @ W.T, scored on the logits-free route; False: the explicit fallback (chunked logits).
    linear_head: bool | None = None
    head_note: str | None = None
    linear_modules: list[str] | None = None  # leaf names of 2-D weights: what lora_targets may name


@dataclass
class Registration:
    name: str
    path: str  # the folder to load; relative to the data folder when it is inside it
    source: str  # "hub", "folder" or "gguf"
    revision: str | None = None
    added_at: str = ""
    facts: ModelFacts = field(default_factory=ModelFacts)
    # A GGUF import: the file's quantization ("Q4_1") and name (hub id/file for a hub download).
    quantization: str | None = None
    original_file: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "Registration":
        facts = ModelFacts(
            **{k: v for k, v in (data.get("facts") or {}).items() if k in ModelFacts.__dataclass_fields__}
        )
        return cls(
            name=data["name"],
            path=data["path"],
            source=data.get("source", "folder"),
            revision=data.get("revision"),
            added_at=data.get("added_at", ""),
            facts=facts,
            quantization=data.get("quantization"),
            original_file=data.get("original_file"),
        )

    def folder(self, models_dir: str | os.PathLike) -> Path:
        # Stored relative to the data folder (models_dir's parent) so the volume may be mounted anywhere.
        path = Path(self.path)
        return path if path.is_absolute() else Path(models_dir).parent / path


# ---- facts ---------------------------------------------------------------------------------------------------


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The tensor table of one .safetensors file: {name: {"dtype", "shape", "data_offsets"}}."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise RegistryError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise RegistryError(f"{path} is not a safetensors file (header of {length} bytes)")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    return sorted(folder.glob("*.safetensors"))


def _tensor_table(folder: Path) -> dict[str, list[int]]:
    table = {}
    for path in weight_files(folder):
        for name, info in read_safetensors_header(path).items():
            table[name] = list(info.get("shape", []))
    return table


def _head_note(config: dict, table: dict[str, list[int]]) -> str | None:
    """Why the logits are not `hidden @ W.T` (so scoring takes the explicit route), or None when they are."""
    if config.get("final_logit_softcapping"):
        return f"logit soft-capping at {config['final_logit_softcapping']}"
    for key, what in (("logit_scale", "logits scaled by"), ("logits_scaling", "logits divided by")):
        if config.get(key) not in (None, 1, 1.0):
            return f"{what} {config[key]}"
    if any(name.endswith("lm_head.bias") for name in table):
        return "a bias on lm_head"
    return None


def _text_config(config: dict) -> dict:
    # Multimodal configs keep the language model's sizes in text_config.
    return {**config, **(config.get("text_config") or {})}


def read_facts(folder: str | os.PathLike) -> ModelFacts:
    """The facts of a transformers model folder, from config.json and the safetensors headers."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise RegistryError(f"{folder} is not a transformers model folder (it has no config.json)")
    try:
        config = _text_config(json.loads(config_path.read_text()))
    except ValueError as exc:
        raise RegistryError(f"{config_path} is not valid JSON: {exc}") from None
    table = _tensor_table(folder)
    note = _head_note(config, table)
    architectures = config.get("architectures") or [None]
    tied = config.get("tie_word_embeddings")
    return ModelFacts(
        architecture=architectures[0],
        model_type=config.get("model_type"),
        parameters=sum(_numel(shape) for shape in table.values()) if table else None,
        vocab_size=config.get("vocab_size"),
        context_length=next((config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int)), None),
        hidden_size=config.get("hidden_size"),
        layers=config.get("num_hidden_layers"),
        tied_embeddings=bool(tied) if tied is not None else ("lm_head.weight" not in table if table else None),
        linear_head=note is None,
        head_note=note,
        linear_modules=sorted(
            {
                n.rsplit(".", 2)[-2]
                for n, s in table.items()
                if n.endswith(".weight") and len(s) == 2 and n.count(".") >= 1
            }
        )
        or None,
    )


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


# ---- the registry on disk ------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A file name for a model name: hub ids' "/" as "--" (as the hub cache does), nothing outside [A-Za-z0-9._-]."""
    text = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "--"))
    if not text.strip("._-"):
        raise RegistryError(f"{name!r} is not a usable model name")
    return text


def _registry_dir(models_dir) -> Path:
    return Path(models_dir) / REGISTRY_FOLDER


def _record_path(models_dir, name: str) -> Path:
    return _registry_dir(models_dir) / f"{slug(name)}.json"


def list_registered(models_dir) -> list[Registration]:
    """Every registration, by name. A file that cannot be read is skipped rather than hiding all the others."""
    folder = _registry_dir(models_dir)
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(Registration.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda r: r.name)


def get_registered(models_dir, name: str) -> Registration | None:
    try:
        path = _record_path(models_dir, name)
    except RegistryError:
        return None
    if not path.is_file():
        return None
    registration = Registration.from_dict(json.loads(path.read_text()))
    return registration if registration.name == name else None  # two names with one slug: only the stored one


def _stored_path(folder: Path, models_dir) -> str:
    data_dir = Path(models_dir).resolve().parent
    folder = folder.resolve()
    return str(folder.relative_to(data_dir)) if folder.is_relative_to(data_dir) else str(folder)


def save_registration(
    models_dir,
    name: str,
    folder: str | os.PathLike,
    source: str,
    revision: str | None = None,
    quantization: str | None = None,
    original_file: str | None = None,
) -> Registration:
    """Check `folder` (config.json, readable weights) and record it under `name`, replacing an older record."""
    folder = Path(folder).expanduser()
    facts = read_facts(folder)
    if not weight_files(folder) and not list(folder.glob("*.bin")):
        raise RegistryError(f"{folder} has a config.json but no weights (*.safetensors or *.bin)")
    registration = Registration(
        name=name,
        path=_stored_path(folder, models_dir),
        source=source,
        revision=revision,
        added_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        facts=facts,
        quantization=quantization,
        original_file=original_file,
    )
    target = _record_path(models_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    temp.write_text(json.dumps(asdict(registration), indent=2))
    os.replace(temp, target)
    return registration


def remove_registration(models_dir, name: str) -> Registration:
    """Forget `name`; a hub download or GGUF conversion in the data folder is deleted too (a user's own folder never
    is)."""
    registration = get_registered(models_dir, name)
    if registration is None:
        raise RegistryError(f"no registered model named {name!r} (`uds models list` shows them)")
    _record_path(models_dir, name).unlink()
    if registration.source in CREATED_HERE:
        shutil.rmtree(registration.folder(models_dir), ignore_errors=True)
    return registration


def looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name)) and not os.path.exists(os.path.expanduser(name))


def download_hub_model(models_dir, repo_id: str, revision: str | None = None, snapshot_download=None) -> Path:
    """Fetch `repo_id` into `<models_dir>/<slug>` with huggingface_hub (it honours HF_TOKEN and HF_HUB_OFFLINE).

    `snapshot_download` is injectable for tests: nothing may reach the network there.
    """
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    folder = Path(models_dir) / slug(repo_id)
    token = os.environ.get("HF_TOKEN") or None
    snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(folder), allow_patterns=HUB_FILES, token=token)
    return folder
