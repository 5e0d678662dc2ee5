"""`uds models add|list|remove`: the base models the service's jobs (and `uds train`) may use by name.

Registrations live in the data folder (UDS_DATA_DIR/models/registry), so every worker that mounts it sees them and
they survive restarts; uds/registry.py has the format. A hub id is downloaded once, here, by the operator: jobs
never download. A GGUF file (local, or one file of a hub repo with --gguf-file) is converted once into a
transformers folder in the data folder (uds/gguf_import.py), then registered like any folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from uds.registry import (
    CREATED_HERE,
    RegistryError,
    download_hub_model,
    list_registered,
    looks_like_hub_id,
    remove_registration,
    save_registration,  # torch-free, like everything imported here: `uds models` must start fast
)
from uds.smollm2 import GGUF_FILE, INSTALL_COMMAND, QUANTIZATION, REAL_MODEL, wheel_gguf
from uds.tiny import TINY_MODEL

BUILTINS = (TINY_MODEL, REAL_MODEL)


def add_models_command(commands) -> None:
    models = commands.add_parser("models", help="register the base models jobs may use")
    sub = models.add_subparsers(title="models commands")
    add = sub.add_parser(
        "add",
        help="register a model folder or GGUF file, or download a hub id (or one GGUF file of it) into the data folder",
    )
    add.add_argument(
        "source", help="a hub id (owner/name; HF_TOKEN for gated models), a transformers folder or a .gguf file"
    )
    add.add_argument(
        "--name",
        default=None,
        help="the name jobs use (default: the hub id, the folder's name or the GGUF file's stem)",
    )
    add.add_argument("--revision", default=None, help="pin a hub branch, tag or commit")
    add.add_argument(
        "--gguf-file",
        default=None,
        help="with a hub id: fetch only this .gguf file of the repo and convert it (dequantized to float32)",
    )
    add.set_defaults(
        handler=lambda args: models_add(args.source, name=args.name, revision=args.revision, gguf_file=args.gguf_file)
    )
    listing = sub.add_parser("list", help="the registered models and their facts")
    listing.set_defaults(handler=lambda args: models_list())
    remove = sub.add_parser("remove", help="forget a model (a hub download is deleted; a folder is left alone)")
    remove.add_argument("name", help="the registered name, as `uds models list` shows it")
    remove.set_defaults(handler=lambda args: models_remove(args.name))


def _settings(settings):
    from api.settings import get_settings

    return settings or get_settings()


def models_add(
    source: str,
    name: str | None = None,
    revision: str | None = None,
    settings=None,
    snapshot_download=None,
    gguf_file: str | None = None,
    hf_hub_download=None,
) -> int:
    """Register a local folder (checked, left in place), convert a GGUF file (local or one file of a hub repo), or
    download a hub id into the data folder, and register it. `snapshot_download` / `hf_hub_download`: for tests."""
    settings = _settings(settings)
    models_dir = settings.models_dir
    folder = Path(os.path.expanduser(source))
    if gguf_file is not None and not looks_like_hub_id(source):
        print(f"uds models add: --gguf-file needs a hub id (owner/name), not {source}", file=sys.stderr)
        return 2
    default_name = Path(gguf_file).stem if gguf_file else folder.stem if folder.is_file() else folder.resolve().name
    name = name or (source if looks_like_hub_id(source) and not gguf_file else default_name)
    if name in BUILTINS:
        print(f"uds models add: {name} is built in; give this model another --name", file=sys.stderr)
        return 2
    try:
        if gguf_file is not None or folder.is_file():
            registration = _add_gguf(models_dir, source, folder, name, revision, gguf_file, hf_hub_download)
        elif folder.is_dir():
            registration = save_registration(models_dir, name, folder, "folder", revision)
        elif looks_like_hub_id(source):
            print(f"downloading {source}{f' at {revision}' if revision else ''} into {models_dir} ...", file=sys.stderr)
            folder = download_hub_model(models_dir, source, revision, snapshot_download=snapshot_download)
            registration = save_registration(models_dir, name, folder, "hub", revision)
        else:
            print(
                f"uds models add: {source} is neither a folder, a GGUF file nor a hub id (owner/name)", file=sys.stderr
            )
            return 2
    except (RegistryError, OSError) as error:
        print(f"uds models add: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - huggingface_hub's errors (offline, 401, not found) are many classes
        print(f"uds models add: could not download {source}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"registered {registration.name}: {describe(registration.facts)}{provenance(registration)}")
    print(f'use it with: uds train --model {registration.name} ...  or  "model": "{registration.name}" in a job')
    return 0


def _add_gguf(models_dir, source, path, name, revision, gguf_file, hf_hub_download):
    from uds.gguf_import import import_gguf, import_hub_gguf  # numpy and, to convert, torch: only when asked

    def announce(info, folder):
        found = f"{info.architecture}, {info.quantization}"
        print(f"converting {info.file.name} ({found}) into {folder}, dequantized to float32 ...", file=sys.stderr)

    if gguf_file is not None:
        print(f"downloading {gguf_file} of {source} ...", file=sys.stderr)
        return import_hub_gguf(
            models_dir, source, gguf_file, name, revision, hf_hub_download=hf_hub_download, announce=announce
        )
    return import_gguf(models_dir, path, name, announce=announce)


def provenance(registration) -> str:
    """Where a GGUF import came from, for one line of output; empty for other sources."""
    if registration.source != "gguf":
        return ""
    return f" (from GGUF {registration.original_file}, {registration.quantization})"


def describe(facts) -> str:
    parts = [facts.architecture or "unknown architecture"]
    if facts.parameters:
        parts.append(
            f"{facts.parameters / 1e6:.1f}M parameters" if facts.parameters >= 1e5 else f"{facts.parameters} parameters"
        )
    if facts.vocab_size:
        parts.append(f"vocabulary {facts.vocab_size}")
    if facts.context_length:
        parts.append(f"context {facts.context_length}")
    parts.append("linear head" if facts.linear_head else f"explicit-logits head ({facts.head_note})")
    return ", ".join(parts)


def models_list(settings=None) -> int:
    settings = _settings(settings)
    converted = settings.models_dir / REAL_MODEL
    origin = f"SmolLM2-135M-Instruct from GGUF {GGUF_FILE} ({QUANTIZATION})"
    if (converted / "config.json").is_file():
        real = f"{origin}, converted\t{converted}"
    elif wheel_gguf() is not None:
        real = f"{origin}, converted on first use"
    else:
        real = f"not installed: {INSTALL_COMMAND}"
    print(f"{REAL_MODEL}\tbuiltin\t{real}")
    print(f"{TINY_MODEL}\tbuiltin\ttest model, built on first use")
    for registration in list_registered(settings.models_dir):
        print(
            f"{registration.name}\t{registration.source}\t{describe(registration.facts)}{provenance(registration)}\t"
            f"{registration.folder(settings.models_dir)}"
        )
    return 0


def models_remove(name: str, settings=None) -> int:
    settings = _settings(settings)
    try:
        registration = remove_registration(settings.models_dir, name)
    except RegistryError as error:
        print(f"uds models remove: {error}", file=sys.stderr)
        return 1
    kept = "" if registration.source in CREATED_HERE else f" (the folder {registration.path} is left as it was)"
    print(f"removed {name}{kept}")
    return 0
