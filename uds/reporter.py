"""How the training loop reports: a small protocol, implemented by the CLI (JSONL file) and the worker (database).

The loop knows nothing of SQL, queues or terminals; it calls these four methods and asks `should_stop()` once
per step, which is how cancellation reaches it. `log_phase` (optional: see `report_phase`) says what a run waits on.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

from uds.records import Phase, StepRecord


def report_phase(logger: "TrainLogger", name: Phase, data: dict[str, Any] | None = None) -> None:
    """Tell `logger` the phase; loggers written before log_phase existed (no method) are left alone."""
    log_phase = getattr(logger, "log_phase", None)
    if log_phase is not None:
        log_phase(name, data)


class TrainLogger(Protocol):
    def log_step(self, metrics: StepRecord) -> None:
        """One optimizer step (`uds.records.StepRecord`; `selections` holds per-candidate rows)."""

    def log_event(self, type: str, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        """A status message a person reads (started, resumed, checkpoint saved, evaluation, finished)."""

    def log_checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        """A complete checkpoint now exists at `path`, taken after `step` steps."""

    def should_stop(self) -> bool:
        """True when the run must end at the next step boundary (cancellation)."""

    def flush(self) -> None:
        """Write anything buffered; called before checkpoints and at the end of the run."""

    def log_phase(self, name: Phase, data: dict[str, Any] | None = None) -> None:
        """The run entered phase `name`: what a person waits on between or after steps."""


class NullLogger:
    def log_step(self, metrics: StepRecord) -> None:
        pass

    def log_event(self, type: str, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        pass

    def log_checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def log_phase(self, name: Phase, data: dict[str, Any] | None = None) -> None:
        pass


class JsonlLogger(NullLogger):
    """Appends each step's metrics (without the per-candidate rows) to metrics.jsonl and events to events.jsonl.

    On resume, rows after the checkpoint step are dropped first, so the file has every step exactly once.
    """

    def __init__(self, directory: str, resume_from_step: int = 0):
        os.makedirs(directory, exist_ok=True)
        self.metrics_path = os.path.join(directory, "metrics.jsonl")
        self.selections_path = os.path.join(directory, "selections.jsonl")
        self.events_path = os.path.join(directory, "events.jsonl")
        for path in (self.metrics_path, self.selections_path):
            _truncate_after_step(path, resume_from_step)

    def log_step(self, metrics: StepRecord) -> None:
        selections = metrics.get("selections", [])
        row = {key: value for key, value in metrics.items() if key != "selections"}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.selections_path, "a", encoding="utf-8") as f:
            for selection in selections:
                f.write(json.dumps({"step": metrics["step"], **selection}) + "\n")

    def log_event(self, type: str, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": type, "level": level, "message": message, "data": data}) + "\n")


def _truncate_after_step(path: str, last_kept_step: int) -> None:
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= last_kept_step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(kept)
