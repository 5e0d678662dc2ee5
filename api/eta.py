"""How long a running job has left: its remaining steps at the rate this attempt measured, plus its remaining
evaluations at the duration its last evaluation took. Torch-free (read from the job row only).

The step rate is measured from the end of the attempt's first step to its latest stored step; evaluations inside
that window are taken out of it, so an evaluation is neither counted twice nor spread over the steps.
"""

from __future__ import annotations

import datetime as dt

from api.models import Job
from uds.records import Phase

# While loading or saving, no step runs: there is no rate to extrapolate from.
_NO_STEPS: tuple[Phase, ...] = ("loading", "saving")
_EVALUATING: Phase = "evaluating"


def evaluations_between(job: Job, after: int, up_to: int) -> int:
    """Evaluations due at steps in (after, up_to]: every eval_every steps and at the last step, given an eval file."""
    total = job.total_steps or 0
    if job.eval_dataset_id is None or up_to <= after:
        return 0
    every = (job.config or {}).get("eval_every")
    count = (up_to // every - after // every) if every else 0
    if after < total <= up_to and not (every and total % every == 0):
        count += 1  # the final evaluation, when eval_every does not already land on the last step
    return count


def eta_seconds(job: Job, now: dt.datetime) -> float | None:
    """None while it cannot be estimated: not running, loading, saving, or no step (or evaluation) measured yet."""
    if job.status != "running" or not job.total_steps or job.phase in _NO_STEPS:
        return None
    evaluating = job.phase == _EVALUATING
    # An evaluation runs after its step and before the step is stored: the step it follows is current + 1.
    done_through = job.current_step + 1 if evaluating else job.current_step
    steps_left = max(0, job.total_steps - done_through)
    evals_left = evaluations_between(job, done_through, job.total_steps)
    if (evals_left or evaluating) and job.eval_seconds is None:
        return None  # the first evaluation is still to be measured; any figure would be a guess
    remaining = evals_left * (job.eval_seconds or 0.0)
    if evaluating and job.eval_seconds is not None:  # always set here: checked just above
        remaining += max(0.0, job.eval_seconds - _seconds(now, job.phase_started_at))
    if steps_left:
        per_step = _step_seconds(job)
        if per_step is None:
            return None
        since_progress = 0.0 if evaluating else _seconds(now, job.progress_at)
        remaining += max(0.0, steps_left * per_step - since_progress)
    return round(remaining, 1)


def _step_seconds(job: Job) -> float | None:
    if job.progress_at is None or job.attempt_started_at is None:
        return None
    done = job.current_step - job.attempt_start_step
    if done <= 0:
        return None
    window = (job.progress_at - job.attempt_started_at).total_seconds()
    window -= evaluations_between(job, job.attempt_start_step, job.current_step) * (job.eval_seconds or 0.0)
    return max(0.0, window) / done


def _seconds(now: dt.datetime, since: dt.datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())
