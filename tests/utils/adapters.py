"""Download a job's adapter archive and read its LoRA tensors, to compare two runs exactly."""

from __future__ import annotations

import tarfile
from pathlib import Path

import httpx


def adapter_tensors(client: httpx.Client, job_id: str, folder: Path, prefix: str = "/api/v1") -> dict:
    from safetensors.torch import load_file

    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{job_id}.tar.gz"
    with client.stream("GET", f"{prefix}/jobs/{job_id}/adapter") as response:
        assert response.status_code == 200, response.read()
        with open(archive, "wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / job_id, filter="data")
    return load_file(str(folder / job_id / "adapter" / "adapter_model.safetensors"))


def assert_same_tensors(expected: dict, actual: dict) -> None:
    import torch

    assert expected.keys() == actual.keys() and expected
    for name in expected:
        assert torch.equal(expected[name], actual[name]), (
            f"{name} differs: max |diff| {(expected[name].float() - actual[name].float()).abs().max().item()}"
        )
