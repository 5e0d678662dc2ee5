"""The `uds train` logger: metrics and events as JSONL files, plus a progress bar with loss and ETA on stderr."""

from __future__ import annotations

import os
from typing import Any

from tqdm import tqdm

from uds.records import Phase, StepRecord
from uds.reporter import JsonlLogger


class ProgressLogger(JsonlLogger):
    def __init__(self, output_dir: str, show_bar: bool = True, resume: bool = True):
        super().__init__(output_dir, resume_from_step=_checkpoint_step(output_dir) if resume else 0)
        self.show_bar = show_bar
        self.bar: tqdm | None = None

    def log_step(self, metrics: StepRecord) -> None:
        super().log_step(metrics)
        if not self.show_bar:
            return
        if self.bar is None:
            self.bar = tqdm(total=metrics["total_steps"], initial=metrics["step"] - 1, unit="step", dynamic_ncols=True)
        postfix = {"loss": f"{metrics['loss']:.4f}", "picked": f"{metrics['selected']}/{metrics['candidates']}"}
        if metrics.get("eval_loss") is not None:
            postfix["eval"] = f"{metrics['eval_loss']:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def log_event(self, type: str, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        super().log_event(type, message, level, data)
        if self.show_bar:
            (self.bar.write if self.bar else tqdm.write)(message)

    def log_phase(self, name: Phase, data: dict[str, Any] | None = None) -> None:
        # Evaluation can take minutes after the bar reached its end; say what is being waited on.
        if self.show_bar and name == "evaluating":
            examples = (data or {}).get("examples")
            (self.bar.write if self.bar else tqdm.write)(
                f"Evaluating on {examples} examples..." if examples else "Evaluating..."
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _checkpoint_step(output_dir: str) -> int:
    """Step of the newest checkpoint, so the metrics file is cut back to where a resumed run continues."""
    from uds.checkpoint import latest_checkpoint

    latest = latest_checkpoint(os.path.join(output_dir, "checkpoints"))
    return latest.step if latest else 0
