"""`uds models add|list|remove`: the base models the service's jobs (and `uds train`) may use by name.

Registrations live in the data folder (UDS_DATA_DIR/models/registry), so every worker that mounts it sees them and
they survive restarts; uds/registry.py has the format. A hub id is downloaded once, here, by the operator: jobs
never download.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from uds.registry import (
    RegistryError,
    download_hub_model,
    list_registered,
    looks_like_hub_id,
    remove_registration,
    save_registration,  # torch-free, like everything imported here: `uds models` must start fast
)
from uds.tiny import TINY_MODEL


def add_models_command(commands) -> None:
    models = commands.add_parser("models", help="register the base models jobs may use")
    sub = models.add_subparsers(title="models commands")
    add = sub.add_parser("add", help="register a local model folder, or download a hub id into the data folder")
    add.add_argument("source", help="a hub id (owner/name; HF_TOKEN for gated models) or a transformers folder")
    add.add_argument("--name", default=None, help="the name jobs use (default: the hub id, or the folder's name)")
    add.add_argument("--revision", default=None, help="pin a hub branch, tag or commit")
    add.set_defaults(handler=lambda args: models_add(args.source, name=args.name, revision=args.revision))
    listing = sub.add_parser("list", help="the registered models and their facts")
    listing.set_defaults(handler=lambda args: models_list())
    remove = sub.add_parser("remove", help="forget a model (a hub download is deleted; a folder is left alone)")
    remove.add_argument("name", help="the registered name, as `uds models list` shows it")
    remove.set_defaults(handler=lambda args: models_remove(args.name))


def _settings(settings):
    from api.settings import get_settings

    return settings or get_settings()


def models_add(
    source: str, name: str | None = None, revision: str | None = None, settings=None, snapshot_download=None
) -> int:
    """Register a local folder (checked, left in place) or download a hub id into the data folder and register it."""
    settings = _settings(settings)
    models_dir = settings.models_dir
    folder = Path(os.path.expanduser(source))
    try:
        if folder.is_dir():
            name = name or folder.resolve().name
            kind = "folder"
        elif looks_like_hub_id(source):
            name = name or source
            kind = "hub"
            print(f"downloading {source}{f' at {revision}' if revision else ''} into {models_dir} ...", file=sys.stderr)
            folder = download_hub_model(models_dir, source, revision, snapshot_download=snapshot_download)
        else:
            print(f"uds models add: {source} is neither a folder nor a hub id (owner/name)", file=sys.stderr)
            return 2
        if name == TINY_MODEL:
            print(f"uds models add: {TINY_MODEL} is built in; give this model another --name", file=sys.stderr)
            return 2
        registration = save_registration(models_dir, name, folder, kind, revision)
    except (RegistryError, OSError) as error:
        print(f"uds models add: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - huggingface_hub's errors (offline, 401, not found) are many classes
        print(f"uds models add: could not download {source}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"registered {registration.name}: {describe(registration.facts)}")
    print(f'use it with: uds train --model {registration.name} ...  or  "model": "{registration.name}" in a job')
    return 0


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
    print(f"{TINY_MODEL}\tbuiltin\ttest model, built on first use")
    for registration in list_registered(settings.models_dir):
        print(
            f"{registration.name}\t{registration.source}\t{describe(registration.facts)}\t"
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
    kept = "" if registration.source == "hub" else f" (the folder {registration.path} is left as it was)"
    print(f"removed {name}{kept}")
    return 0
