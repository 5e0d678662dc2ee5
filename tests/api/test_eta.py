"""The ETA of a running job includes its evaluations: never "0 ms" while one is running."""

from __future__ import annotations

import datetime as dt

from api.eta import eta_seconds, evaluations_between
from api.models import Job

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _job(**values) -> Job:
    base = dict(
        status="running",
        total_steps=10,
        current_step=4,
        attempt_start_step=1,
        config={"eval_every": None},
        eval_dataset_id="file-x",
        attempt_started_at=T0,
        progress_at=T0 + dt.timedelta(seconds=30),
        phase="training",
        phase_started_at=None,
        eval_seconds=None,
    )
    return Job(**{**base, **values})


def test_evaluations_due_count_every_n_and_the_last_step_once():
    job = _job(config={"eval_every": 5})
    assert evaluations_between(job, 0, 10) == 2  # steps 5 and 10
    assert evaluations_between(job, 4, 9) == 1
    assert evaluations_between(_job(config={"eval_every": 3}), 0, 10) == 4  # 3, 6, 9 and the last
    assert evaluations_between(_job(eval_dataset_id=None), 0, 10) == 0


def test_steps_only_without_an_eval_file():
    # 3 steps in 30 s -> 10 s a step, 6 left.
    assert eta_seconds(_job(eval_dataset_id=None), T0 + dt.timedelta(seconds=30)) == 60.0


def test_an_unmeasured_final_evaluation_is_unknown_not_zero():
    assert eta_seconds(_job(), T0 + dt.timedelta(seconds=30)) is None
    final = _job(current_step=9, phase="evaluating", phase_started_at=T0 + dt.timedelta(seconds=100))
    assert eta_seconds(final, T0 + dt.timedelta(seconds=120)) is None


def test_a_measured_evaluation_is_added_and_counted_down_while_it_runs():
    # Evaluation every 2 steps, 20 s each; the window after step 1 (70 s) held the evaluations of steps 2 and 4,
    # so 3 steps took 30 s: 6 steps (60 s) and 3 evaluations (60 s) are left.
    job = _job(config={"eval_every": 2}, eval_seconds=20.0, progress_at=T0 + dt.timedelta(seconds=70))
    assert eta_seconds(job, T0 + dt.timedelta(seconds=70)) == 120.0
    evaluating = _job(
        config={"eval_every": 2},
        eval_seconds=20.0,
        current_step=9,
        phase="evaluating",
        phase_started_at=T0 + dt.timedelta(seconds=100),
        progress_at=T0 + dt.timedelta(seconds=90),
    )
    assert eta_seconds(evaluating, T0 + dt.timedelta(seconds=105)) == 15.0
    assert eta_seconds(evaluating, T0 + dt.timedelta(seconds=200)) == 0.0


def test_loading_and_saving_have_no_eta():
    assert eta_seconds(_job(phase="loading"), T0) is None
    assert eta_seconds(_job(phase="saving"), T0) is None
