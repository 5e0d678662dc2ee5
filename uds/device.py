"""Where and in what precision a run computes: one place for the device, dtype and autocast choices.

CPU runs stay float32 end to end: bf16 matmuls are slow and lossy there, and float32 is what makes CPU runs
(and resumed CPU runs) bit-for-bit reproducible. CUDA runs load bf16 weights where the GPU supports it and
train under bf16 autocast.
"""

from __future__ import annotations

import contextlib

import torch


class DeviceUnavailable(ValueError):
    """A CUDA device was asked for on a machine without one."""


def resolve_device(name: str | torch.device | None) -> torch.device:
    """ "auto" (or None): CUDA when present, else the CPU. Asking for CUDA without it is an error, not a CPU run."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"Device {name!r} was requested but CUDA is not available on this worker.")
    return torch.device(name)


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on the CPU (see the module docstring)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_kind(device: torch.device, devices: int = 1) -> str:
    """What a job's measured speed is tied to: "cpu", or "cuda" with the GPU's name ("cuda NVIDIA H100 80GB HBM3"),
    and " x N" for a job on N devices (its rates are the whole job's, so they are compared only with N's)."""
    from uds.estimate import kind_on_devices

    kind = f"cuda {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type
    return kind_on_devices(kind, devices)
