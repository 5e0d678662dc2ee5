"""A running job's phase on its row: DbLogger writes each phase after the steps before it, and
leaving an evaluation records its duration; the trainer reports loading, training, evaluating and saving."""

from __future__ import annotations

import datetime as dt

import pytest

from api.models import Job
from tests.worker.test_db_logger import ME, metrics, running
from worker.db_logger import DbLogger


def test_phases_and_the_evaluation_time_reach_the_job_row(sessions, make_job, monkeypatch):
    import worker.db_logger as db_logger

    job_id = running(sessions, make_job)
    clock = [dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)]
    monkeypatch.setattr(db_logger, "utcnow", lambda: clock[0])
    logger = DbLogger(sessions, job_id, ME, flush_steps=100, flush_seconds=3600)
    logger.log_phase("loading")
    logger.log_phase("training")
    logger.log_step(metrics(1))
    logger.log_phase("evaluating", {"step": 2, "examples": 40})
    clock[0] += dt.timedelta(seconds=42)
    logger.log_phase("saving")
    logger.close()
    with sessions() as session:
        job = session.get(Job, job_id)
    assert (job.phase, job.eval_seconds, job.current_step) == ("saving", 42.0, 1)
    assert job.phase_started_at == clock[0]


@pytest.mark.slow
def test_the_trainer_reports_each_phase_in_order(tmp_path, tiny_model_dir):
    from tests.utils.datasets import write_dataset
    from uds.config import TrainConfig
    from uds.reporter import NullLogger
    from uds.trainer import train

    class Phases(NullLogger):
        def __init__(self):
            self.seen = []

        def log_phase(self, name, data=None):
            self.seen.append(name)

        def log_step(self, metrics):
            self.seen.append(f"step {metrics['step']}")

    data = write_dataset(tmp_path / "train.jsonl", 32, fmt="chat", seed=0)
    evals = write_dataset(tmp_path / "eval.jsonl", 4, fmt="chat", seed=1)
    logger = Phases()
    train(
        TrainConfig(
            model=tiny_model_dir,
            dataset_path=str(data),
            eval_dataset_path=str(evals),
            eval_every=1,
            output_dir=str(tmp_path / "out"),
            max_steps=2,
            max_seq_len=48,
            lora_r=2,
            lora_alpha=4,
        ),
        logger,
    )
    assert logger.seen == [
        "loading",
        "training",
        "evaluating",
        "training",
        "step 1",
        "evaluating",
        "training",
        "step 2",
        "saving",
    ]
