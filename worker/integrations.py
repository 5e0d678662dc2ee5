"""Mirroring a job's step metrics to the trackers named in its `integrations` (MLflow, W&B offline).

The mirror wraps the job's logger (DbLogger under TimeLimitedLogger): every step still goes to the database first,
then onto a queue that one background thread drains into the trackers, so a slow or unreachable tracker never
slows a training step. A tracker that raises (down, refused, misconfigured) is dropped for the rest of the run and
the job gets a warning event saying so, from the training thread at its next step; the job itself carries on. The
database stays the record; a tracker is a copy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from typing import Any

from uds.records import METRIC_FIELDS, StepRecord

log = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0  # at the end, how long the last steps may take to reach the trackers
BATCH_STEPS = 40  # steps per tracker call (MLflow takes at most 1000 metrics a batch; a step has about 25)
SCALARS = METRIC_FIELDS  # the step metrics that are plain numbers: the same set the database stores


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of one step as tracker keys: the scalars, and the stats' means (`selected_utility_mean`, ...)."""
    out = {k: metrics.get(k) for k in SCALARS}
    for who, groups in (metrics.get("stats") or {}).items():
        for name, summary in (groups or {}).items() if isinstance(groups, dict) else ():
            if isinstance(summary, dict) and "mean" in summary:
                out[f"{who}_{name}_mean"] = summary["mean"]
    return {
        k: float(v)
        for k, v in out.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class MlflowTracker:
    name = "mlflow"

    def __init__(self, spec: dict, job_id: str):
        self.spec, self.job_id, self.client, self.run_id = spec, job_id, None, None

    def start(self) -> None:
        # An unreachable server must fail in seconds, not after MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.spec["tracking_uri"])
        experiment = self.client.get_experiment_by_name(self.spec["experiment"])
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(self.spec["experiment"])
        )
        # A resumed job continues its run (found by its tag) rather than starting a second one.
        found = self.client.search_runs([experiment_id], f"tags.uds_job_id = '{self.job_id}'", max_results=1)
        self.run_id = (
            found[0].info.run_id
            if found
            else self.client.create_run(
                experiment_id, run_name=self.spec.get("run_name") or self.job_id, tags={"uds_job_id": self.job_id}
            ).info.run_id
        )

    def log(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for step, values in steps for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class WandbTracker:
    """OpenAI's `{"type": "wandb", "wandb": {...}}`, in offline mode: written under the job's folder (`wandb sync`
    uploads it); a worker needs no W&B account or network."""

    name = "wandb"

    def __init__(self, spec: dict, job_id: str, folder: str):
        self.spec, self.job_id, self.folder, self.run = spec["wandb"], job_id, folder, None

    def start(self) -> None:
        import wandb

        os.makedirs(self.folder, exist_ok=True)
        self.run = wandb.init(
            mode="offline",
            dir=self.folder,
            project=self.spec["project"],
            entity=self.spec.get("entity"),
            name=self.spec.get("name") or self.job_id,
            tags=self.spec.get("tags"),
            id=self.job_id.replace("ftjob-", ""),
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, steps: list[tuple[int, dict[str, float]]]) -> None:
        for step, values in steps:
            self.run.log(values, step=step)

    def finish(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def make_tracker(spec: dict, job_id: str, job_dir: str):
    if spec["type"] == "mlflow":
        return MlflowTracker(spec, job_id)
    if spec["type"] == "wandb":
        return WandbTracker(spec, job_id, os.path.join(job_dir, "wandb"))
    raise ValueError(f"unknown integration type {spec['type']!r}")


class MirroredLogger:
    """The job's logger, with every step also queued for the trackers. Everything else is the inner logger's."""

    def __init__(self, inner, trackers: list):
        self.inner, self.trackers = inner, trackers
        self.steps: queue.Queue = queue.Queue()
        self.failures: queue.Queue = queue.Queue()  # (tracker, message), reported from the training thread
        self.thread = threading.Thread(target=self._run, name="uds-metrics-mirror", daemon=True)
        self.thread.start()

    def log_step(self, metrics: StepRecord) -> None:
        self.inner.log_step(metrics)
        self.steps.put((int(metrics["step"]), flat_metrics(metrics)))
        self.report_failures()

    def __getattr__(self, name):  # should_stop, log_event, flush, lost, ...
        return getattr(self.inner, name)

    def report_failures(self) -> None:
        while not self.failures.empty():
            name, message = self.failures.get()
            self.inner.log_event(
                "integration",
                f"{name}: {message}; the job continues without mirroring to it.",
                level="warning",
                data={"integration": name},
            )

    def close(self, ok: bool) -> None:
        """Send what is queued (bounded by DRAIN_SECONDS), end the trackers' runs, report what failed."""
        self.steps.put(None)
        self.thread.join(DRAIN_SECONDS)
        if self.thread.is_alive():
            self.failures.put(("mirror", f"the trackers did not take the last steps within {DRAIN_SECONDS:g} s"))
        else:
            for tracker in list(self.trackers):
                self._call(tracker, "finish the run", tracker.finish, ok)
        self.report_failures()

    def _run(self) -> None:
        for tracker in list(self.trackers):
            self._call(tracker, "could not start", tracker.start)
        while True:
            batch, done = self._next_batch()
            if batch:
                for tracker in list(self.trackers):
                    self._call(tracker, "could not log metrics", tracker.log, batch)
            if done:
                return

    def _next_batch(self) -> tuple[list, bool]:
        batch = [self.steps.get()]
        while len(batch) < BATCH_STEPS and not self.steps.empty() and batch[-1] is not None:
            batch.append(self.steps.get())
        done = batch[-1] is None
        return [b for b in batch if b is not None], done

    def _call(self, tracker, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - any tracker failure: warn, drop the tracker, keep training
            log.warning("integration %s %s", tracker.name, what, exc_info=True)
            self.trackers.remove(tracker)
            self.failures.put((tracker.name, f"{what} ({type(exc).__name__}: {str(exc)[:300]})"))


def check_target(spec: dict, allow_private: bool) -> None:
    """A tracker's URI checked again where it is used (the submit-time check may be days old, and DNS may point
    elsewhere now): TargetError for a target this deployment refuses. Where private targets are refused, MLflow
    follows no redirect either (a 307 to an internal address would bypass the check)."""
    from api.targets import check_url

    if spec.get("type") != "mlflow":
        return
    if not allow_private:
        os.environ["MLFLOW_ALLOW_HTTP_REDIRECTS"] = "false"
    check_url(spec["tracking_uri"], allow_private, ("http", "https", "file"))


@contextlib.contextmanager
def mirror_metrics(inner, integrations: list[dict] | None, job_id: str, job_dir: str, allow_private: bool = False):
    """`inner` itself when the job names no integration; else a MirroredLogger closed on the way out."""
    from api.targets import TargetError

    if not integrations:
        yield inner
        return
    trackers = []
    for spec in integrations:
        try:
            check_target(spec, allow_private)
            trackers.append(make_tracker(spec, job_id, job_dir))
        except TargetError as exc:
            inner.log_event("integration", f"{spec.get('type')}: refused target: {exc}; ignored.", level="warning")
        except ValueError as exc:
            inner.log_event("integration", f"{exc}; ignored.", level="warning")
    mirrored = MirroredLogger(inner, trackers)
    ok = False
    try:
        yield mirrored
        ok = True
    finally:
        mirrored.close(ok)
