"""Worker tests: the real database (SQLite and Postgres), job rows made through the same code as the API."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from api.auth import get_or_create_tenant
from api.db import session_factory
from api.ids import new_dataset_id, new_job_id
from api.models import Dataset, Job, utcnow
from api.settings import Settings
from tests.utils.factories import TINY_JOB, chat_rows, jsonl
from tests.utils.service import with_tiny_model


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        heartbeat_seconds=0.5,
        stale_after_seconds=5,
        metrics_flush_steps=3,
        metrics_flush_seconds=60,
        device="cpu",
    )


@pytest.fixture
def sessions(settings):
    return session_factory(settings.sqlalchemy_url)


@pytest.fixture
def make_job(settings, sessions):
    """make_job(status="queued", rows=24, **config) -> job id, with its dataset stored like an upload.

    The database lives for the whole session, and every sweep (recover_jobs, redispatch_queued) looks at all of it:
    a job a test leaves queued or running would be swept by a later test's sweep. So they end `cancelled`.
    """
    made: list[str] = []

    def make(status: str = "queued", rows: int = 24, dataset_rows=None, **config) -> str:
        from uds.config import TrainConfig

        data = jsonl(dataset_rows or chat_rows(rows))
        dataset_id = new_dataset_id()
        relative = f"datasets/{dataset_id}.jsonl"
        settings.resolve(relative).parent.mkdir(parents=True, exist_ok=True)
        settings.resolve(relative).write_bytes(data)
        resolved = TrainConfig(**{**TINY_JOB, **config}).to_dict()
        for host_field in ("dataset_path", "eval_dataset_path", "output_dir", "models_dir", "device"):
            resolved.pop(host_field)
        with sessions.begin() as session:
            tenant = get_or_create_tenant(session, "worker-tests")
            session.add(
                Dataset(
                    id=dataset_id,
                    tenant_id=tenant.id,
                    filename="d.jsonl",
                    purpose="fine-tune",
                    format="chat",
                    bytes=len(data),
                    sha256="0" * 64,
                    n_examples=rows,
                    status="processed",
                    storage_path=relative,
                )
            )
            job_id = new_job_id()
            session.add(
                Job(
                    id=job_id,
                    tenant_id=tenant.id,
                    status=status,
                    cancel_requested=False,
                    model="uds-tiny",
                    method=resolved["method"],
                    config=resolved,
                    dataset_id=dataset_id,
                    seed=0,
                    created_at=utcnow(),
                    current_step=0,
                    total_steps=None,
                    examples_scored=0,
                    examples_trained=0,
                    tokens_trained=0,
                    attempts=0,
                    attempt_start_step=0,
                )
            )
        made.append(job_id)
        return job_id

    yield make
    with sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(made), Job.status.in_(("queued", "running")))
            .values(status="cancelled", worker_id=None, heartbeat_at=None)
        )


@pytest.fixture
def tiny_in_data_dir(settings, tiny_model_dir):
    """uds-tiny where the worker looks for it (settings.models_dir), without building it again."""
    with_tiny_model(settings.data_dir, tiny_model_dir)
    return settings


@pytest.fixture
def train_on(settings, sessions, make_job):
    """train_on(name, folder) -> the succeeded Job row of a job the worker trained on `folder`, registered as `name`."""
    from api.models import Job
    from uds.registry import save_registration
    from worker.runner import run_job

    def train(name: str, folder) -> Job:
        save_registration(settings.models_dir, name, folder, "folder")
        job_id = make_job(model=name)
        assert run_job(job_id, "w:tasks", settings) == "succeeded"
        with sessions() as session:
            return session.get(Job, job_id)

    return train
