"""A job on several devices: the worker that claimed it starts one process per device with torchrun's elastic agent
(uds.launch) and waits for them; the processes train with `uds.trainer.train` (uds.distributed).

- The claiming worker keeps the job's lease (its heartbeat) for as long as the processes run, so a process that
  dies and is restarted by the agent never looks like a lost job.
- Rank 0 is the one writer: in `worker.ranks` it reports exactly as a one-device job does (`train_in_process`:
  the DbLogger, the time limit, the metric mirrors), and hands its outcome back in a file (`outcome.json`); another
  rank writes that file only to report a failure of its own (the worker then stops the ranks left waiting).
- The agent restarts all processes when one dies (up to `uds.launch.DEFAULT_MAX_RESTARTS` times); they resume
  from the newest checkpoint and rank 0's DbLogger drops the steps after it, so every step is stored once.
- This worker shutting down: it writes the `stop` file, which rank 0 reads at the next step boundary; the job
  then stops resumable, as a one-device job does.

Everything the processes need is in `run.json` in the job's `devices/` folder: the job and worker ids, the
settings (without secrets) and the resolved training configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from api.settings import Settings
from uds.config import TrainConfig
from uds.launch import DEFAULT_MAX_RESTARTS, cpu_threads_per_process, rank_environment, torchrun_command

RUN_FILE = "run.json"
OUTCOME_FILE = "outcome.json"
STOP_FILE = "stop"
# Rank 0 has written its outcome; the others normally end with it. Any still running after this long are stuck
# at a collective rank 0 will never join (it failed alone, e.g. on a full disk), and are stopped.
STRAGGLER_SECONDS = 30.0


class DevicesFailed(Exception):
    """The processes ended without an outcome from rank 0: one kept dying past the agent's restarts."""


def run_folder(output_dir: Path) -> Path:
    return output_dir / "devices"


def write_run(folder: Path, job_id: str, worker_id: str, settings: Settings, config: TrainConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (OUTCOME_FILE, STOP_FILE):
        (folder / name).unlink(missing_ok=True)  # a previous attempt's
    run = {
        "job_id": job_id,
        "worker_id": worker_id,
        "settings": public_settings(settings),
        "config": config.to_dict(),
    }
    path = folder / RUN_FILE
    path.write_text(json.dumps(run), encoding="utf-8")
    return path


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON, secrets left out (the processes need the database and the limits, never a key)."""
    values = {name: value for name, value in settings.model_dump().items() if not isinstance(value, SecretStr)}
    return json.loads(json.dumps(values, default=str))


def read_run(path: str) -> tuple[str, str, Settings, TrainConfig]:
    run = json.loads(Path(path).read_text(encoding="utf-8"))
    return run["job_id"], run["worker_id"], Settings(**run["settings"]), TrainConfig.from_dict(run["config"])


def rank_config(config: TrainConfig) -> TrainConfig:
    """Each process's device: "cuda" (the trainer puts local rank i on the i-th visible GPU) or the CPU."""
    return dataclasses.replace(config, device="cpu" if _on_cpu(config.device) else "cuda")


def _on_cpu(device: str) -> bool:
    if device == "cpu":
        return True
    if device == "auto":
        import torch

        return not torch.cuda.is_available()
    return False


def visible_gpus(device: str, count: int, inherited: str | None) -> str:
    """CUDA_VISIBLE_DEVICES for a job on `count` GPUs of a worker whose device is `device` ("cuda" or "cuda:S":
    GPUs S .. S+count-1), through the worker's own CUDA_VISIBLE_DEVICES when it has one."""
    start = int(device.split(":", 1)[1]) if ":" in device else 0
    indexes = list(range(start, start + count))
    if inherited:
        names = [name.strip() for name in inherited.split(",") if name.strip()]
        if start + count > len(names):
            raise DevicesFailed(f"this worker sees {len(names)} GPUs ({inherited}); the job needs {start + count}")
        return ",".join(names[i] for i in indexes)
    return ",".join(map(str, indexes))


def launch(folder: Path, run_path: Path, config: TrainConfig, stop_event: threading.Event | None) -> dict[str, Any]:
    """Run the job's processes to the end; rank 0's outcome. Raises DevicesFailed when there is none."""
    on_cpu = _on_cpu(config.device)
    environment = rank_environment(threads=cpu_threads_per_process(config.devices) if on_cpu else None)
    if not on_cpu:
        environment["CUDA_VISIBLE_DEVICES"] = visible_gpus(
            config.device if config.device != "auto" else "cuda",
            config.devices,
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
    command = torchrun_command(config.devices, "worker.ranks", [str(run_path)], max_restarts=DEFAULT_MAX_RESTARTS)
    # A session of its own: the agent and its processes are stopped as one group when they must be.
    process = subprocess.Popen(command, env=environment, start_new_session=True)
    try:
        _wait(process, folder, stop_event)
    finally:
        if process.poll() is None:
            _stop_group(process)
    outcome = folder / OUTCOME_FILE
    if not outcome.is_file():
        raise DevicesFailed(
            f"a training process of this {config.devices}-device job kept failing (exit status {process.returncode} "
            f"after {DEFAULT_MAX_RESTARTS} restarts); the worker's log has its error"
        )
    return json.loads(outcome.read_text(encoding="utf-8"))


def _wait(process: subprocess.Popen, folder: Path, stop_event: threading.Event | None) -> None:
    outcome_seen: float | None = None
    stop_written = False
    while process.poll() is None:
        if not stop_written and stop_event is not None and stop_event.is_set():
            (folder / STOP_FILE).touch()  # once: rank 0 reads it at its next step boundary
            stop_written = True
        if outcome_seen is None and (folder / OUTCOME_FILE).is_file():
            outcome_seen = time.monotonic()
        if outcome_seen is not None and time.monotonic() - outcome_seen > STRAGGLER_SECONDS:
            return
        try:
            process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def write_outcome(folder: Path, outcome: dict[str, Any]) -> None:
    """The run's outcome (rank 0's, or the failure of any rank), published whole (a hard link of a finished file) and
    only by the first to write one: a rank that fails alone writes it, and rank 0's error at the collective its
    peer left (a closed connection) must not replace the cause."""
    temporary = folder / f"{OUTCOME_FILE}.tmp-{os.getpid()}"
    temporary.write_text(json.dumps(outcome, default=str), encoding="utf-8")
    try:
        os.link(temporary, folder / OUTCOME_FILE)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def watch_stop_file(folder: Path, stop_event: threading.Event) -> threading.Thread:
    """Set `stop_event` when the worker writes the stop file (it is shutting down)."""

    def watch() -> None:
        while not stop_event.is_set():
            if (folder / STOP_FILE).exists():
                stop_event.set()
                return
            time.sleep(0.25)

    thread = threading.Thread(target=watch, name="uds-stop-file", daemon=True)
    thread.start()
    return thread
