"""A job's step metrics mirrored to MLflow (a local file store) and W&B (offline mode) by the worker, and a tracker
outage (an unreachable server, a tracker that raises) that leaves the job succeeding with a warning event."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from api.models import JobEvent, StepMetric
from tests.utils.factories import set_job
from tests.utils.service import migrated_sqlite
from worker import integrations
from worker.integrations import MirroredLogger, flat_metrics
from worker.runner import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):  # these tests train for real: SQLite only
    return migrated_sqlite(tmp_path_factory, "integrations")


@pytest.fixture(autouse=True)
def mlflow_file_store(monkeypatch):
    # MLflow 3 refuses its file store unless asked: tests use it so that nothing but a folder is needed.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def losses(sessions, job_id) -> dict[int, float]:
    with sessions() as session:
        return dict(session.execute(select(StepMetric.step, StepMetric.loss).where(StepMetric.job_id == job_id)).all())


def warnings(sessions, job_id) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id, JobEvent.type == "integration"))
        )


def test_step_metrics_reach_mlflow(sessions, make_job, tiny_in_data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    job_id = make_job(max_steps=4, checkpoint_every=2)
    set_job(
        sessions,
        job_id,
        integrations=[{"type": "mlflow", "tracking_uri": uri, "experiment": "uds-tests", "run_name": None}],
    )
    assert run_job(job_id, "me:1:mlflow", tiny_in_data_dir) == "succeeded"

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("uds-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == job_id and run.data.tags["uds_job_id"] == job_id and run.info.status == "FINISHED"
    mirrored = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    assert mirrored == pytest.approx(losses(sessions, job_id)) and sorted(mirrored) == [1, 2, 3, 4]
    assert "selected_utility_mean" in run.data.metrics
    assert warnings(sessions, job_id) == []


def test_an_unreachable_tracker_never_fails_the_job(sessions, make_job, tiny_in_data_dir):
    job_id = make_job(max_steps=3)
    set_job(
        sessions,
        job_id,
        integrations=[{"type": "mlflow", "tracking_uri": "http://127.0.0.1:9", "experiment": "x", "run_name": None}],
    )
    assert run_job(job_id, "me:1:down", tiny_in_data_dir) == "succeeded"
    assert sorted(losses(sessions, job_id)) == [1, 2, 3]
    (message,) = warnings(sessions, job_id)
    assert message.startswith("mlflow: could not start") and "the job continues" in message


def test_a_tracker_that_raises_mid_run_is_dropped_with_one_warning(sessions, make_job, tiny_in_data_dir, monkeypatch):
    class Flaky:
        name = "flaky"
        logged: list = []

        def start(self):
            pass

        def log(self, steps):
            if any(step >= 2 for step, _ in steps):
                raise RuntimeError("tracker fell over")
            self.logged += steps

        def finish(self, ok):
            raise AssertionError("a dropped tracker is not called again")

    monkeypatch.setattr(integrations, "make_tracker", lambda spec, job_id, job_dir: Flaky())
    job_id = make_job(max_steps=4)
    set_job(sessions, job_id, integrations=[{"type": "mlflow", "tracking_uri": "http://x", "experiment": "x"}])
    assert run_job(job_id, "me:1:flaky", tiny_in_data_dir) == "succeeded"
    (message,) = warnings(sessions, job_id)
    assert "RuntimeError: tracker fell over" in message


def test_wandb_offline_run_is_written_under_the_job_folder(sessions, make_job, tiny_in_data_dir):
    pytest.importorskip("wandb")
    job_id = make_job(max_steps=3)
    set_job(
        sessions,
        job_id,
        integrations=[
            {"type": "wandb", "wandb": {"project": "uds-tests", "name": None, "entity": None, "tags": ["t"]}}
        ],
    )
    assert run_job(job_id, "me:1:wandb", tiny_in_data_dir) == "succeeded"
    assert warnings(sessions, job_id) == []
    runs = list((tiny_in_data_dir.job_dir(job_id) / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), runs


def test_a_slow_tracker_does_not_hold_the_training_thread():
    release = threading.Event()

    class Slow:
        name = "slow"

        def start(self):
            release.wait(10)

        def log(self, steps):
            pass

        def finish(self, ok):
            pass

    class Inner:
        events: list = []

        def log_step(self, metrics):
            pass

        def log_event(self, type, message, level="info", data=None):
            self.events.append(message)

    mirrored = MirroredLogger(Inner(), [Slow()])
    for step in range(1, 50):
        mirrored.log_step({"step": step, "loss": 1.0})  # returns at once while the tracker is still starting
    release.set()
    mirrored.close(ok=True)
    assert Inner.events == []


def test_flat_metrics_keep_finite_numbers_and_stat_means():
    step = {
        "step": 3,
        "loss": 2.5,
        "alpha": None,
        "grad_norm": float("nan"),
        "selected": 8,
        "tokens_trained": True,
        "stats": {"selected": {"utility": {"mean": 4.0, "std": 1.0}, "diversity": None}, "length": {"rho": 1}},
    }
    assert flat_metrics(step) == {"loss": 2.5, "selected": 8.0, "selected_utility_mean": 4.0}
