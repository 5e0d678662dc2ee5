"""Importing a GGUF file (llama.cpp's format) as a transformers model folder that trains like any other.

The header is read first, with the `gguf` package (numpy, no torch): its architecture, tensor types and tokenizer are
checked against what the installed transformers can load, so an unsupported file is refused in seconds with one line
naming what it has and what is supported, not after a long load. Then transformers dequantizes it
(`from_pretrained(..., gguf_file=...)`) and the model (float32 safetensors), tokenizer with its chat template and
generation config are saved as a plain folder: LoRA trains on float weights, and every later load is a folder load.

The folder appears atomically (written under a staging name, then renamed), under a lock file, so two processes
converting the same file at once convert it once, and a crash or an error leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from uds.registry import Registration, RegistryError, save_registration, slug

GGUF_MAGIC = b"GGUF"
# Written into a converted folder: which file it came from, so adding the same file again reuses it.
SOURCE_FILE = "gguf_source.json"
# Tensor types every GGUF reader handles without dequantizing (they are plain floats).
FLOAT_TYPES = ("F32", "F16", "BF16")
# Keys of transformers' GGUF config table that are metadata groups, not architectures.
NOT_ARCHITECTURES = {"general", "tokenizer"}
DOWNLOADS_FOLDER = ".gguf-downloads"


class GGUFError(RegistryError):
    """A GGUF file cannot be imported; the message is one line naming what was found and what would work."""


@dataclass(frozen=True)
class GGUFInfo:
    """What the header of a GGUF file says, read without loading a tensor."""

    file: Path
    architecture: str
    quantization: str  # the file type llama.cpp records ("Q4_1"), or the type holding most of the weights
    tensor_types: dict[str, int]  # type name -> number of tensors of that type
    tokenizer: str | None  # tokenizer.ggml.model: "gpt2" (byte-level BPE), "llama" (sentencepiece), ...


# ---- the header ------------------------------------------------------------------------------------------------


def read_gguf_info(path: str | os.PathLike) -> GGUFInfo:
    """The header facts of a GGUF file; GGUFError for a file that is not GGUF, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file (it does not start with the GGUF magic bytes)")
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(path)
    except Exception as error:  # noqa: BLE001 - a damaged file fails anywhere in the reader's parsing
        raise GGUFError(f"{path.name} is not a readable GGUF file (truncated or corrupt: {_one_line(error)})") from None
    architecture = _field(reader, "general.architecture")
    if not architecture:
        raise GGUFError(f"{path.name} is not a model GGUF file (it has no general.architecture)")
    counts = Counter(t.tensor_type.name for t in reader.tensors)
    elements: Counter[str] = Counter()
    for tensor in reader.tensors:
        elements[tensor.tensor_type.name] += int(tensor.n_elements)
    file_type = _field(reader, "general.file_type")
    try:
        quantization = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        quantization = elements.most_common(1)[0][0] if elements else "none"
    return GGUFInfo(
        file=path,
        architecture=str(architecture),
        quantization=quantization,
        tensor_types=dict(sorted(counts.items())),
        tokenizer=_field(reader, "tokenizer.ggml.model"),
    )


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


# ---- what transformers supports ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """transformers' GGUF support, read from its own tables: a file it could not load is refused before loading."""

    architectures: frozenset[str]
    tensor_types: dict[str, frozenset[str]]  # architecture -> the types its loader dequantizes
    tokenizers: frozenset[str]

    def types_for(self, architecture: str) -> frozenset[str]:
        return self.tensor_types.get(_known_name(architecture, self.architectures) or "", frozenset())


def transformers_support() -> Support:
    """Two loaders in transformers: the newer one (its own torch dequantizer) for the architectures in GGUF_ARCHS,
    the older one (the `gguf` package's numpy dequantizer) for those in GGUF_SUPPORTED_ARCHITECTURES."""
    import gguf.quants
    from transformers.integrations.gguf import GGUF_ARCHS
    from transformers.integrations.gguf.dequant import GGML_NAME
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_TYPES
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    newer = frozenset(GGUF_ARCHS)
    older = frozenset(GGUF_SUPPORTED_ARCHITECTURES) - NOT_ARCHITECTURES - newer
    # The older loader calls gguf.quants.dequantize, which reads F32/F16 directly and the rest by these traits.
    older_types = frozenset({"F32", "F16"} | {t.name for t in gguf.quants._type_traits})
    newer_types = frozenset(set(FLOAT_TYPES) | set(GGML_NAME.values()))
    return Support(
        architectures=newer | older,
        tensor_types={**{a: older_types for a in older}, **{a: newer_types for a in newer}},
        tokenizers=frozenset(GGUF_TOKENIZER_TYPES),
    )


def _known_name(architecture: str, known: frozenset[str]) -> str | None:
    # llama.cpp spells some architectures differently from transformers' tables; transformers' reader renames these
    # (qwen2moe -> qwen2_moe, gpt-oss -> gpt_oss, t5encoder -> t5) before looking them up.
    candidates = (
        architecture,
        architecture.replace("-", "_"),
        re.sub(r"moe$", "_moe", architecture),
        architecture.removesuffix("encoder"),
    )
    return next((name for name in candidates if name in known), None)


def check_supported(info: GGUFInfo, support: Support | None = None) -> None:
    """GGUFError naming the unsupported architecture, tensor types or tokenizer, and what is supported."""
    support = support or transformers_support()
    name = info.file.name
    if _known_name(info.architecture, support.architectures) is None:
        raise GGUFError(
            f"{name}: architecture {info.architecture!r} is not supported by the installed transformers; "
            f"supported: {', '.join(sorted(support.architectures))}"
        )
    supported_types = support.types_for(info.architecture)
    unsupported = {t: n for t, n in info.tensor_types.items() if t not in supported_types}
    if unsupported:
        found = ", ".join(f"{t} ({n} tensors)" for t, n in unsupported.items())
        raise GGUFError(
            f"{name}: tensor type {found} cannot be dequantized for {info.architecture}; "
            f"supported: {', '.join(sorted(supported_types))}"
        )
    if info.tokenizer is None or info.tokenizer not in support.tokenizers:
        raise GGUFError(
            f"{name}: tokenizer {info.tokenizer!r} is not supported; supported: {', '.join(sorted(support.tokenizers))}"
        )


# ---- converting ----------------------------------------------------------------------------------------------


def convert_gguf(gguf_path: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Dequantize `gguf_path` into the transformers folder `target`, unless a complete one is already there.

    Concurrent callers for the same target convert once: the lock file makes the later ones wait and then find
    the folder. Progress bars (transformers' own) go to stderr.
    """
    target = Path(target)
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with conversion_lock(target):
        if _complete(target):  # converted by whoever held the lock before us
            return target
        if target.exists():
            raise GGUFError(f"{target} exists but is not a converted model; remove it to convert again")
        staging = target.parent / f".{target.name}.converting-{uuid.uuid4().hex}"
        try:
            _convert_into(Path(gguf_path), staging)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    # Folders appear by rename once complete, so a config.json means the whole folder is there.
    return (folder / "config.json").is_file()


@contextlib.contextmanager
def conversion_lock(target: Path):
    """An exclusive lock on `<target>.lock` beside the folder, held while converting into it. Where flock does not
    exist the staging-and-rename still keeps folders whole; two converters then only duplicate work."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_into(gguf_path: Path, folder: Path) -> None:
    """transformers' GGUF loader, fully dequantized (GgufConfig(dequantize=True): the loaded model then carries no
    quantizer, so save_pretrained writes plain float32 safetensors), then model and tokenizer saved into `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = gguf_path.resolve()
    common = dict(gguf_file=str(gguf_path), local_files_only=True, trust_remote_code=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **common)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), quantization_config=GgufConfig(dequantize=True), dtype=torch.float32, **common
        )
    except Exception as error:  # noqa: BLE001 - transformers' loader raises many kinds; all mean "not loadable"
        raise GGUFError(f"{gguf_path.name} could not be loaded: {type(error).__name__}: {_one_line(error)}") from error
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / SOURCE_FILE).write_text(
        json.dumps({"file": gguf_path.name, "bytes": gguf_path.stat().st_size}, indent=2) + "\n"
    )


# ---- importing as a registered model -----------------------------------------------------------------------------


def import_gguf(
    models_dir,
    gguf_path: str | os.PathLike,
    name: str,
    original_file: str | None = None,
    revision=None,
    announce=None,
) -> Registration:
    """Check, convert into `<models_dir>/<slug(name)>` and register `gguf_path` under `name` (source "gguf").

    `announce(info, folder)` runs once the header passed the checks, before the conversion (the CLI says what it
    found). Adding the same file under the same name again reuses the converted folder; a different model already
    in that folder is refused rather than overwritten.
    """
    info = read_gguf_info(gguf_path)
    check_supported(info)
    folder = Path(models_dir) / slug(name)
    if folder.exists() and not _converted_from(folder, info.file):
        raise GGUFError(
            f"{folder} already holds another model; `uds models remove {name}` first, or choose another --name"
        )
    if announce is not None:
        announce(info, folder)
    convert_gguf(info.file, folder)
    return save_registration(
        models_dir,
        name,
        folder,
        "gguf",
        revision,
        quantization=info.quantization,
        original_file=original_file or info.file.name,
    )


def _converted_from(folder: Path, gguf_path: Path) -> bool:
    try:
        recorded = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return _complete(folder) and recorded == {"file": gguf_path.name, "bytes": gguf_path.stat().st_size}


def import_hub_gguf(
    models_dir,
    repo_id: str,
    filename: str,
    name: str,
    revision: str | None = None,
    hf_hub_download=None,
    announce=None,
) -> Registration:
    """Fetch only `filename` of hub repo `repo_id` (huggingface_hub honours HF_TOKEN and HF_HUB_OFFLINE), import it,
    and delete the download: the converted folder is what jobs load.

    `hf_hub_download` is injectable for tests: nothing may reach the network there.
    """
    if not filename.endswith(".gguf"):
        raise GGUFError(f"--gguf-file must name a .gguf file in {repo_id}, not {filename!r}")
    if hf_hub_download is None:
        from huggingface_hub import hf_hub_download
    downloads = Path(models_dir) / DOWNLOADS_FOLDER / f"{slug(repo_id)}-{uuid.uuid4().hex}"
    try:
        path = hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            revision=revision,
            local_dir=str(downloads),
            token=os.environ.get("HF_TOKEN") or None,
        )
        return import_gguf(
            models_dir, path, name, original_file=f"{repo_id}/{filename}", revision=revision, announce=announce
        )
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
