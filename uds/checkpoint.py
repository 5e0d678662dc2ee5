"""Checkpoints as plain dicts on disk: the adapter (safetensors) plus everything a resumed run needs to continue
exactly (optimizer, scheduler, selector buffer, RNG states, counters).

A checkpoint folder is written under a temporary name and renamed when complete, so a crash mid-write never
leaves a folder that looks complete. `state.pt` holds tensors and builtins only and is read back with
`weights_only=True`: no arbitrary pickle is ever executed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from typing import Any

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

STATE_FILE = "state.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FINGERPRINT_FILE = "fingerprint.json"  # what the run was (uds/fingerprint.py), readable without loading the state
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_TEMP_DIR = re.compile(r"^step-\d+\.tmp-(\d+)$")


@dataclass
class Checkpoint:
    step: int
    path: str


def checkpoint_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step-{step:08d}")


def list_checkpoints(root: str) -> list[Checkpoint]:
    """Complete checkpoints, oldest first. Temporary folders of interrupted writes are ignored."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if (
            match
            and os.path.isfile(os.path.join(path, STATE_FILE))
            and os.path.isfile(os.path.join(path, ADAPTER_WEIGHTS))
        ):
            found.append(Checkpoint(step=int(match.group(1)), path=path))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(root: str) -> Checkpoint | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def remove_abandoned_writes(root: str) -> None:
    """Delete half-written checkpoint folders of other processes. Whoever loads or saves a job's checkpoints owns
    the job (one lease per running job), so a temp folder of another pid is a crashed or fenced-out writer's
    leftover (hundreds of MB), which the API's start-up sweep alone would keep until the next restart."""
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        match = _TEMP_DIR.match(name)
        if match and int(match.group(1)) != os.getpid():
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def save_checkpoint(
    root: str, step: int, model, state: dict[str, Any], keep: int, fingerprint: dict[str, Any] | None = None
) -> str:
    """Write the adapter, `state` and the run's `fingerprint`, then atomically publish the folder; prune to the
    newest `keep`."""
    os.makedirs(root, exist_ok=True)
    remove_abandoned_writes(root)
    final_path = checkpoint_dir(root, step)
    temp_path = f"{final_path}.tmp-{os.getpid()}"
    shutil.rmtree(temp_path, ignore_errors=True)
    model.save_pretrained(temp_path, safe_serialization=True)
    torch.save(state, os.path.join(temp_path, STATE_FILE))
    if fingerprint is not None:
        with open(os.path.join(temp_path, FINGERPRINT_FILE), "w", encoding="utf-8") as f:
            json.dump(fingerprint, f, sort_keys=True)
    if os.path.exists(final_path):
        shutil.rmtree(final_path)
    os.replace(temp_path, final_path)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final_path


def read_fingerprint(path: str) -> dict[str, Any] | None:
    """The fingerprint stored with the checkpoint at `path`; None for a checkpoint written before there were any."""
    try:
        with open(os.path.join(path, FINGERPRINT_FILE), encoding="utf-8") as f:
            stored = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Unreadable is not "matches": an unknown run must not be resumed silently.
        return {"settings": {}, "data_sha256": "unreadable"}
    return stored if isinstance(stored, dict) else {"settings": {}, "data_sha256": "unreadable"}


def load_checkpoint(path: str, model) -> dict[str, Any]:
    """Load the adapter weights into `model` in place and return the saved state dict."""
    remove_abandoned_writes(os.path.dirname(path))  # a resume: the crash that made us resume may have left one
    weights = load_file(os.path.join(path, ADAPTER_WEIGHTS), device=str(next(model.parameters()).device))
    set_peft_model_state_dict(model, weights)
    return torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
