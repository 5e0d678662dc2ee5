"""The service holds the resume guarantee too: a job whose folder holds another run's checkpoint
fails with the sentence naming what differs, instead of continuing that run's weights."""

from __future__ import annotations

import shutil

import pytest

from api.models import Job
from tests.utils.service import migrated_sqlite
from worker.runner import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):  # trains for real: SQLite only, as test_runner_training
    return migrated_sqlite(tmp_path_factory, "resume-guard")


def test_a_job_does_not_resume_another_runs_checkpoint(sessions, make_job, tiny_in_data_dir):
    settings = tiny_in_data_dir
    finished = make_job(max_steps=2, checkpoint_every=1)
    assert run_job(finished, "me:1:cafe", settings) == "succeeded"
    other = make_job(max_steps=2, checkpoint_every=1, budget=0.5)
    # What a redelivered job would find had its folder been written by another configuration.
    shutil.copytree(settings.job_dir(finished) / "checkpoints", settings.job_dir(other) / "checkpoints")
    assert run_job(other, "me:1:cafe", settings) == "failed"
    with sessions() as session:
        job = session.get(Job, other)
    assert job.error_code == "checkpoint_mismatch"
    assert "budget 0.25 -> 0.5" in job.error_message and "--no-resume" in job.error_message
