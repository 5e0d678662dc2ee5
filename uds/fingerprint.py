"""What a checkpoint was trained on: the settings that change results and a content hash of the training data.

A checkpoint is only a valid start for a run whose fingerprint equals the one stored with it; resuming a
different run would silently continue the wrong weights, optimizer and data position (and report a step count
of the old run). Bookkeeping (where files go, how often to checkpoint or evaluate, the device, memory-only
settings) is left out, so a run can be resumed elsewhere or with a smaller micro-batch.

Torch-free: the fingerprint is plain JSON.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from uds.config import TrainConfig

# Settings that do not change which examples are trained on or the weights a step produces.
# micro_batch_size: accumulation is exact, it only decides memory. gradient_checkpointing: recomputation only.
# recipe: a label; the settings it filled in are compared themselves. The data is compared by content, not path.
# epochs, max_steps: the run's length. Running the same command with more steps is how a run is trained longer
# (the README's resume); a checkpoint past the new length is refused by the trainer on its own.
BOOKKEEPING = frozenset(
    {
        "dataset_path",
        "eval_dataset_path",
        "output_dir",
        "models_dir",
        "recipe",
        "checkpoint_every",
        "keep_checkpoints",
        "eval_every",
        "eval_max_new_tokens",
        "device",
        "devices",  # a resumed job may run on another number of devices: the selection does not depend on it
        "gradient_checkpointing",
        "micro_batch_size",
        "epochs",
        "max_steps",
    }
)

_CHUNK = 1 << 20


def settings_of(config: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The settings of `config` (or of its `to_dict()`) that change results, by name, as JSON values.

    This is the one rule for what a resume may change: everything else must be the checkpoint's.
    """
    values = config if isinstance(config, Mapping) else config.to_dict()
    return _jsonable({name: value for name, value in values.items() if name not in BOOKKEEPING})


def file_sha256(path: str) -> str:
    """Content hash of `path`; a checkpoint every N steps re-hashes only a file that changed meanwhile."""
    stat = os.stat(path)
    return _sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(config: TrainConfig, data_sha256: str | None = None) -> dict[str, Any]:
    """{"settings": {...}, "data_sha256": hex}. The hash is read from the dataset file unless given."""
    data = data_sha256 if data_sha256 is not None else file_sha256(config.dataset_path)
    return {"settings": settings_of(config), "data_sha256": data}


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs, as short phrases ("budget 0.25 -> 0.5", "the training data"); empty when they match.

    A setting missing on one side (a field added by a newer version) counts only when the other side has a
    non-default value, so upgrading does not orphan every checkpoint.
    """
    found = []
    if stored.get("data_sha256") != current.get("data_sha256"):
        found.append("the training data")
    old, new = stored.get("settings", {}), current.get("settings", {})
    defaults = settings_of(TrainConfig())
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, defaults.get(name)), new.get(name, defaults.get(name))
        if before != after:
            found.append(f"{name} {_show(before)} -> {_show(after)}")
    return found


def mismatch_message(differing: list[str], checkpoint_step: int) -> str:
    """One sentence: what differs and the two ways out."""
    listed = ", ".join(differing[:5]) + (f" and {len(differing) - 5} more" if len(differing) > 5 else "")
    return (
        f"The checkpoint at step {checkpoint_step} in the output folder is from a different run ({listed}); "
        "start over with --no-resume (resume=False), or write to another --output-dir."
    )


def past_the_end_message(checkpoint_step: int, total_steps: int) -> str:
    return (
        f"The checkpoint at step {checkpoint_step} in the output folder is past this run's {total_steps} steps "
        "(epochs or max_steps is smaller, or the data shorter); start over with --no-resume (resume=False), "
        "or write to another --output-dir."
    )


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "unset" if value is None else str(value)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    # Tuples and lists compare equal once stored as JSON; keep them lists here too.
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}
