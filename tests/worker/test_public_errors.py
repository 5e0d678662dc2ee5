"""A crash inside training shows the tenant what failed, never a traceback or the server's source paths; the
traceback goes to the server log."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

import uds.trainer
from api.events import tenant_safe
from api.models import JobEvent
from tests.utils.factories import job_row
from worker.runner import run_job

SOURCE = uds.trainer.__file__


def crash_inside_the_library(*args, **kwargs):
    def deep():
        raise RuntimeError(f"tensor mismatch, see {SOURCE}:123 and /usr/lib/python3.11/site-packages/torch/nn.py")

    deep()


def test_a_crash_shows_no_traceback_nor_source_paths_to_the_tenant(sessions, make_job, settings, monkeypatch, caplog):
    monkeypatch.setattr(uds.trainer, "train", crash_inside_the_library)
    job_id = make_job()
    with caplog.at_level(logging.ERROR, logger="worker.runner"):
        assert run_job(job_id, "me:1:cafe", settings) == "failed"

    job = job_row(sessions, job_id)
    assert job.error_code == "internal_error" and "RuntimeError: tensor mismatch" in job.error_message
    with sessions() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
    shown = [job.error_message] + [f"{e.message} {e.data}" for e in events]
    for text in shown:
        assert "Traceback" not in text and ".py" not in text and 'File "' not in text, text
    assert "<server file>" in job.error_message
    assert "Traceback" in caplog.text and SOURCE in caplog.text  # the operator still has it all


@pytest.mark.parametrize(
    "raw, kept",
    [
        ('Traceback (most recent call last):\n  File "/srv/app/worker/runner.py", line 3, in run\nValueError: x', ""),
        ("bad value in C:\\srv\\app\\uds\\trainer.py", "bad value in "),
        ("dataset file-abc has 3 rows; loss nan at step 2/10", "dataset file-abc has 3 rows; loss nan at step 2/10"),
    ],
)
def test_tenant_safe_keeps_the_message_and_drops_server_internals(raw, kept):
    cleaned = tenant_safe(raw)
    assert cleaned.startswith(kept) and ".py" not in cleaned and "Traceback" not in cleaned
