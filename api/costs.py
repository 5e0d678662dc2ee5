"""What a job's settings cost, bounded per deployment before the job is accepted.

TrainConfig checks that each setting is sane on its own; it cannot know what this deployment affords. Settings
that are fine alone multiply: buffer_size x proj_r_seq x proj_r_voc float64 values are allocated when the job
starts and saved in every checkpoint ({"buffer_size": 2000, "proj_r_seq": 512, "proj_r_voc": 512} is 4.2 GB; the
maxima ask for petabytes). So each cost is computed from the resolved configuration and refused at submit time with
400 `job_too_costly`, naming the setting to lower and the limit (with its UDS_ variable).

Costs (bytes are upper bounds; the vocabulary is UDS_COST_VOCAB_SIZE, an upper bound for any allowed model):
- selector memory: the buffer (buffer_size x (r_seq * r_voc + 1) float64) plus the projection matrices
  (vocab x r_voc + r_seq x max_seq_len float32, and d x r_voc, small next to them);
- checkpoint state on disk: the buffer in each of keep_checkpoints checkpoints;
- checkpoints written: total_steps / checkpoint_every;
- candidates scored in one step (candidate_batch_size x groups_per_step) and in the whole job (each one is a row
  of `selections`), and optimizer steps (also bounded by the 64-bit step columns' range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from api.errors import APIError, param_error
from api.settings import Settings

FLOAT64, FLOAT32 = 8, 4


@dataclass(frozen=True)
class JobShape:
    """What the configuration leaves to the dataset, computed by the job service with uds.config."""

    total_steps: int
    candidates_per_step: int


def buffer_bytes(config: dict[str, Any]) -> int:
    # Each entry is one projection (r_seq * r_voc values) plus its squared norm, float64 (uds.scoring.MemoryBuffer).
    return config["buffer_size"] * (config["proj_r_seq"] * config["proj_r_voc"] + 1) * FLOAT64


def projection_bytes(config: dict[str, Any], vocab_size: int) -> int:
    return (vocab_size * config["proj_r_voc"] + config["proj_r_seq"] * config["max_seq_len"]) * FLOAT32


def uses_buffer(config: dict[str, Any]) -> bool:
    return config.get("method", "uds") == "uds"


def selector_memory_bytes(config: dict[str, Any], vocab_size: int) -> int:
    if not uses_buffer(config):
        return 0
    return buffer_bytes(config) + projection_bytes(config, vocab_size)


def checkpoint_state_bytes(config: dict[str, Any]) -> int:
    """The selector state kept on disk at once: what a job reserves against its tenant's storage quota."""
    per_checkpoint = buffer_bytes(config) if uses_buffer(config) else 0
    return per_checkpoint * config.get("keep_checkpoints", 1)


def _refuse(
    param: str, what: str, cost: int | float, limit: int, variable: str, unit: str = "", advice: str = "Lower"
) -> APIError:
    return param_error(
        param,
        f"{what} would be {cost:,}{unit}, over this server's limit of {limit:,}{unit} ({variable}). {advice} it.",
        code="job_too_costly",
    )


def check_job_devices(config: dict[str, Any], settings: Settings) -> None:
    """A job asking for more devices than any worker of this deployment offers would wait forever: refuse it now."""
    devices, limit = config.get("devices", 1), settings.job_devices_limit
    if devices > limit:
        raise param_error(
            "devices",
            f"this job asks for {devices} devices; the workers of this server offer at most {limit} to one job "
            f"(UDS_MAX_JOB_DEVICES, UDS_WORKER_DEVICES). Ask for {limit} or fewer: the selection is the same.",
            code="devices_unavailable",
        )


def check_job_cost(config: dict[str, Any], shape: JobShape, settings: Settings) -> None:
    """Raise APIError 400 `job_too_costly` for the first cost over its limit."""
    if config["max_seq_len"] > settings.max_seq_len:
        raise _refuse(
            "max_seq_len",
            "the sequence length",
            config["max_seq_len"],
            settings.max_seq_len,
            "UDS_MAX_SEQ_LEN",
            " tokens",
        )
    memory = selector_memory_bytes(config, settings.cost_vocab_size)
    if memory > settings.max_selector_memory_bytes:
        # Name what dominates: the buffer (buffer_size x r_seq x r_voc) or the vocabulary-side projection (r_voc).
        param = (
            "buffer_size"
            if buffer_bytes(config) >= projection_bytes(config, settings.cost_vocab_size)
            else "proj_r_voc"
        )
        raise _refuse(
            param,
            "the UDS memory buffer and projection matrices (buffer_size x proj_r_seq x proj_r_voc "
            "float64 + vocabulary x proj_r_voc float32)",
            memory,
            settings.max_selector_memory_bytes,
            "UDS_MAX_SELECTOR_MEMORY_BYTES",
            " bytes",
        )
    if config.get("keep_checkpoints", 1) > settings.max_keep_checkpoints:
        raise _refuse(
            "keep_checkpoints",
            "the checkpoints kept",
            config["keep_checkpoints"],
            settings.max_keep_checkpoints,
            "UDS_MAX_KEEP_CHECKPOINTS",
        )
    state = checkpoint_state_bytes(config)
    if state > settings.max_checkpoint_state_bytes:
        raise _refuse(
            "keep_checkpoints",
            "the selector state kept on disk (buffer x keep_checkpoints)",
            state,
            settings.max_checkpoint_state_bytes,
            "UDS_MAX_CHECKPOINT_STATE_BYTES",
            " bytes",
        )
    if shape.total_steps > settings.max_job_steps:
        param = "max_steps" if config.get("max_steps") is not None else "epochs"
        raise _refuse(
            param, "the number of optimizer steps", shape.total_steps, settings.max_job_steps, "UDS_MAX_JOB_STEPS"
        )
    if shape.candidates_per_step > settings.max_step_candidates:
        param = "groups_per_step" if config.get("groups_per_step") else "candidate_batch_size"
        raise _refuse(
            param,
            "the candidates scored in one step (candidate_batch_size x groups_per_step)",
            shape.candidates_per_step,
            settings.max_step_candidates,
            "UDS_MAX_STEP_CANDIDATES",
        )
    total = shape.total_steps * shape.candidates_per_step
    if total > settings.max_job_candidates:
        param = "max_steps" if config.get("max_steps") is not None else "epochs"
        raise _refuse(
            param,
            "the candidates scored over the job (steps x candidates per step, one selections row each)",
            total,
            settings.max_job_candidates,
            "UDS_MAX_JOB_CANDIDATES",
        )
    written = math.ceil(shape.total_steps / config["checkpoint_every"])
    if written > settings.max_checkpoints_per_job:
        raise _refuse(
            "checkpoint_every",
            "the number of checkpoints written (steps / checkpoint_every)",
            written,
            settings.max_checkpoints_per_job,
            "UDS_MAX_CHECKPOINTS_PER_JOB",
            advice="Raise",
        )
