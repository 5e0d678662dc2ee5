"""/v1/fine_tuning/jobs and /v1/models through the official `openai` client: creation (hyperparameters, "auto",
UDS settings in extra_body), the job object, listing, cancel, events (one metrics event per step, paginated),
checkpoints, result files and models. No worker runs here: progress is written to the database directly, the way
the worker writes it (tests/e2e/test_openai_client.py trains for real)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from api.db import session_factory
from api.models import Checkpoint, Job, JobEvent, StepMetric
from tests.utils.factories import bearer, chat_rows, jsonl
from tests.utils.openai_server import oai, openai_server  # noqa: F401 (fixtures)

BASE_LR = 1.5e-4
STATS = {
    group: {score: {"mean": 1.0, "std": 0.5, "min": 0.0, "max": 2.0} for score in ("utility", "diversity", "score")}
    for group in ("candidates", "selected")
}
STATS.update(
    groups=4,
    length={  # a step's length diagnostic, as the trainer reports it (uds/diagnostics.py)
        "spearman_utility_length": 0.25,
        "spearman_score_length": -0.5,
        "groups_with_utility_rho": 4,
        "groups_with_score_rho": 3,
        "mean_length_candidates": 40.0,
        "mean_length_selected": 44.0,
    },
)


@pytest.fixture
def training_file(oai):
    return oai.files.create(file=("train.jsonl", jsonl(chat_rows(12))), purpose="fine-tune")


def create(client, training_file, **kwargs):
    return client.fine_tuning.jobs.create(model="uds-tiny", training_file=training_file.id, **kwargs)


def sessions(server):
    return session_factory(server.database_url)


# ---- creation --------------------------------------------------------------------------------------------


def test_auto_hyperparameters_resolve_to_the_defaults(oai, training_file):
    job = create(
        oai,
        training_file,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
            },
        },
    )
    assert job.hyperparameters.model_dump() == {"n_epochs": 1, "batch_size": 32, "learning_rate_multiplier": 1.0}
    assert job.method.supervised.hyperparameters.model_dump() == job.hyperparameters.model_dump()
    assert job.selection_method == "uds" and job.budget == 0.125 and job.alpha == "paper"  # the TrainConfig defaults
    assert job.train_batch_size == 32 and job.candidate_batch_size == 8
    plain = create(oai, training_file)  # nothing given at all
    assert plain.hyperparameters == job.hyperparameters and plain.seed == 0


def test_auto_takes_the_uds_settings_when_given(oai, training_file):
    job = create(
        oai,
        training_file,
        hyperparameters={"n_epochs": "auto", "batch_size": "auto"},
        extra_body={"epochs": 3, "train_batch_size": 4, "learning_rate": 3e-4},
    )
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == 2.0
    assert job.progress["total_steps"] == 3 * 2  # 12 examples: 2 groups of 8, one a step (too few for more), 3 epochs
    fixed = create(oai, training_file, extra_body={"budget": 0.25, "candidate_batch_size": 4, "groups_per_step": 3})
    assert fixed.hyperparameters.batch_size == 3  # groups_per_step fixes the step: 3 groups x k 1 of 4


@pytest.fixture
def larger_file(oai):
    return oai.files.create(file=("larger.jsonl", jsonl(chat_rows(64))), purpose="fine-tune")


@pytest.mark.parametrize("place", ["method", "legacy"])
def test_numbers_map_to_epochs_examples_per_step_and_learning_rate(oai, larger_file, place):
    hyper = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5}
    given = (
        {"method": {"type": "supervised", "supervised": {"hyperparameters": hyper}}}
        if place == "method"
        else {"hyperparameters": hyper}
    )
    job = create(oai, larger_file, **given, extra_body={"selection_method": "full", "candidate_batch_size": 2})
    assert job.hyperparameters.model_dump() == hyper
    assert job.epochs == 2 and job.train_batch_size == 8 and job.learning_rate == pytest.approx(0.5 * BASE_LR)
    assert job.candidate_batch_size == 2  # the selection group is a UDS setting of its own
    assert job.progress["total_steps"] == 2 * 8  # full data: ceil(64 / batch_size 8) steps an epoch, as OpenAI's
    selective = create(oai, larger_file, **given, extra_body={"budget": 0.25, "candidate_batch_size": 8})
    # k 2 of each group of 8: 4 groups (32 candidates) a step train on 8 examples; 8 groups an epoch, at least
    # 4 steps an epoch, so 2 groups a step here (uds.config.groups_per_step).
    assert selective.progress["total_steps"] == 2 * 4


def test_uds_settings_in_extra_body_are_echoed(oai, training_file):
    settings = {
        "selection_method": "max_loss",
        "budget": 0.25,
        "alpha": 0.5,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_targets": ["q_proj", "v_proj"],
        "max_seq_len": 128,
        "micro_batch_size": 2,
        "max_steps": 5,
        "loss_on": "answer",
        "name": "my run",
    }
    job = create(oai, training_file, extra_body=settings)
    for name, value in settings.items():
        assert getattr(job, name) == value, name
    again = oai.fine_tuning.jobs.retrieve(job.id)
    assert {name: getattr(again, name) for name in settings} == settings
    assert job.progress["total_steps"] == 5


def test_the_job_object_has_every_field_of_the_reference(oai, openai_server, training_file):
    job = create(oai, training_file, suffix="abc", seed=3, metadata={"k": "v"})
    raw = httpx.get(f"{openai_server.url}/v1/fine_tuning/jobs/{job.id}", headers=bearer(oai.api_key)).json()
    required = {name for name, field in FineTuningJob.model_fields.items() if field.is_required()}
    assert required <= set(raw)
    assert {"estimated_finish", "metadata", "method", "integrations"} <= set(raw)
    assert raw["object"] == "fine_tuning.job" and raw["id"].startswith("ftjob-") and len(raw["id"]) == 6 + 24
    assert isinstance(raw["created_at"], int) and raw["finished_at"] is None and raw["error"] is None
    assert isinstance(raw["organization_id"], str) and raw["organization_id"]
    assert raw["result_files"] == [] and raw["trained_tokens"] is None and raw["fine_tuned_model"] is None
    assert raw["status"] == "queued" and raw["training_file"] == training_file.id and raw["validation_file"] is None
    assert raw["seed"] == 3 and raw["metadata"] == {"k": "v"} and raw["user_provided_suffix"] == "abc"
    assert raw["estimated_finish"] is None and raw["integrations"] == []
    assert FineTuningJob.model_validate(raw).model_dump(exclude_unset=True)  # the client's own type accepts it


@pytest.mark.parametrize(
    "kwargs, param, code",
    [
        ({"model": "gpt-4o-mini"}, "model", "model_not_found"),
        ({"training_file": "file-" + "0" * 24}, "training_file", "file_not_found"),
        ({"validation_file": "file-" + "0" * 24}, "validation_file", "file_not_found"),
        ({"method": {"type": "dpo"}}, "method.type", "unsupported_method"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
            "method.supervised.hyperparameters.n_epochs",
            "invalid_value",
        ),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size", "invalid_value"),
        (
            {"hyperparameters": {"learning_rate_multiplier": 10_000}},
            "hyperparameters.learning_rate_multiplier",
            "invalid_value",
        ),
        (
            {
                "hyperparameters": {"n_epochs": 2},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
            },
            "method.supervised.hyperparameters.n_epochs",
            "invalid_value",
        ),
        (
            {"hyperparameters": {"batch_size": 8}, "extra_body": {"train_batch_size": 16}},
            "hyperparameters.batch_size",
            "invalid_value",
        ),
        (
            {"hyperparameters": {"batch_size": 8}, "extra_body": {"groups_per_step": 2}},
            "hyperparameters.batch_size",
            "invalid_value",
        ),
        ({"extra_body": {"bugdet": 0.5}}, "bugdet", "unknown_parameter"),
        ({"extra_body": {"dataset_id": "file-x"}}, "dataset_id", "unknown_parameter"),
        ({"extra_body": {"selection_method": "best"}}, "selection_method", "invalid_value"),
        ({"extra_body": {"budget": "half"}}, "budget", "invalid_value"),
        ({"extra_body": {"budget": 1.5}}, "budget", "invalid_value"),
        ({"suffix": "x" * 65}, "suffix", "invalid_value"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations", "unsupported_parameter"),
    ],
)
def test_invalid_requests_are_bad_requests_naming_the_parameter(oai, training_file, kwargs, param, code):
    body = {"model": "uds-tiny", "training_file": training_file.id, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        oai.fine_tuning.jobs.create(**body)
    assert caught.value.param == param, caught.value.message
    assert caught.value.code == code and caught.value.message
    assert list(oai.fine_tuning.jobs.list()) == []  # nothing was created


def test_another_tenants_training_file_is_unknown(oai, openai_server, training_file):
    with pytest.raises(openai.BadRequestError) as caught:
        create(openai_server.client(), training_file)
    assert caught.value.param == "training_file"


# ---- listing, retrieving, cancelling ---------------------------------------------------------------------


def test_list_with_limit_after_and_metadata(oai, openai_server, training_file):
    jobs = [create(oai, training_file, metadata=meta) for meta in ({"team": "a"}, {"team": "b"}, None, {"team": "a"})]
    newest_first = [j.id for j in reversed(jobs)]
    page = oai.fine_tuning.jobs.list(limit=3)
    assert [j.id for j in page.data] == newest_first[:3] and page.has_more is True
    page = oai.fine_tuning.jobs.list(limit=3, after=page.data[-1].id)
    assert [j.id for j in page.data] == newest_first[3:] and page.has_more is False
    assert [j.id for j in oai.fine_tuning.jobs.list(limit=1)] == newest_first  # the client's auto-pagination
    full = oai.fine_tuning.jobs.list(limit=4)
    assert full.has_more is False and full.first_id == newest_first[0] and full.last_id == newest_first[-1]
    assert [j.id for j in oai.fine_tuning.jobs.list(metadata={"team": "a"})] == [jobs[3].id, jobs[0].id]
    assert [j.id for j in oai.fine_tuning.jobs.list(metadata={"team": "c"})] == []
    response = httpx.get(
        f"{openai_server.url}/v1/fine_tuning/jobs", params={"metadata": "null"}, headers=bearer(oai.api_key)
    )
    assert [j["id"] for j in response.json()["data"]] == [jobs[2].id]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.fine_tuning.jobs.list(after="ftjob-" + "0" * 24)
    assert caught.value.param == "after"
    assert list(openai_server.client().fine_tuning.jobs.list()) == []  # tenancy


def test_cancel_a_queued_job_then_again(oai, openai_server, training_file):
    job = create(oai, training_file)
    cancelled = oai.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None and cancelled.error is None
    assert oai.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as caught:  # permanent: 400, never a 409 the client would retry
        oai.fine_tuning.jobs.cancel(job.id)
    assert caught.value.code == "job_not_cancellable"
    assert any("cancelled" in e.message for e in oai.fine_tuning.jobs.list_events(job.id))
    with pytest.raises(openai.NotFoundError):
        openai_server.client().fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.BadRequestError):
        oai.fine_tuning.jobs.pause(job.id)


def test_a_failed_job_reports_its_error(oai, openai_server, training_file):
    job = create(oai, training_file)
    with sessions(openai_server)() as session:
        row = session.get(Job, job.id)
        row.status, row.finished_at = "failed", row.created_at + dt.timedelta(seconds=5)
        row.error_code, row.error_message, row.error_param = (
            "dataset_missing",
            "Dataset x no longer exists.",
            "dataset_id",
        )
        session.commit()
    failed = oai.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.result_files == [] and failed.fine_tuned_model is None
    assert failed.error.code == "dataset_missing" and failed.error.param == "training_file"
    assert failed.error.message == "Dataset x no longer exists."


def test_a_running_job_has_an_estimated_finish(oai, openai_server, training_file):
    job = create(oai, training_file, extra_body={"max_steps": 10})
    now = dt.datetime.now(dt.timezone.utc)
    with sessions(openai_server)() as session:
        row = session.get(Job, job.id)
        row.status, row.started_at, row.worker_id, row.heartbeat_at = "running", now, "w", now
        row.attempt_started_at, row.progress_at, row.current_step, row.attempt_start_step = (
            now - dt.timedelta(seconds=8),
            now,
            4,
            0,
        )
        session.commit()
    running = oai.fine_tuning.jobs.retrieve(job.id)
    # 6 steps left at 2 s each.
    assert running.status == "running" and abs(running.estimated_finish - (now.timestamp() + 12)) <= 2
    assert running.trained_tokens is None and running.progress["step"] == 4


# ---- events, checkpoints, result files, models -----------------------------------------------------------


def add_steps(server, job_id: str, steps, start: dt.datetime, every: float = 1.0, eval_at=()):
    with sessions(server)() as session:
        for step in steps:
            session.add(
                StepMetric(
                    job_id=job_id,
                    step=step,
                    epoch=step / 10,
                    loss=2.0 / step,
                    token_accuracy=0.1 * step,
                    learning_rate=1e-4,
                    grad_norm=1.0,
                    tokens_trained=100,
                    candidates=8,
                    selected=2,
                    time_scoring=0.1,
                    time_training=0.2,
                    alpha=0.3,
                    eval_loss=1.5 if step in eval_at else None,
                    eval_accuracy=0.25 if step in eval_at else None,
                    stats=STATS,
                    created_at=start + dt.timedelta(seconds=every * step),
                )
            )
        session.commit()


def test_events_merge_one_metrics_event_per_step_with_the_messages(oai, openai_server, training_file):
    job = create(oai, training_file, extra_body={"max_steps": 7})
    created = oai.fine_tuning.jobs.retrieve(job.id).created_at
    start = dt.datetime.fromtimestamp(created + 1, dt.timezone.utc)
    add_steps(openai_server, job.id, range(1, 8), start, eval_at=(4,))
    with sessions(openai_server)() as session:
        # Stored events at the same instants as steps 2 and 5: the order must still be total and stable.
        for step in (2, 5, 5):
            session.add(
                JobEvent(
                    job_id=job.id,
                    created_at=start + dt.timedelta(seconds=step),
                    level="info",
                    type="checkpoint",
                    message=f"Checkpoint saved at step {step}.",
                    data={"step": step},
                )
            )
        session.add(
            JobEvent(
                job_id=job.id,
                created_at=start + dt.timedelta(seconds=9),
                level="warning",
                type="note",
                message="careful",
                data=None,
            )
        )
        session.commit()

    everything = oai.fine_tuning.jobs.list_events(job.id, limit=100)
    assert everything.has_more is False and len(everything.data) == 2 + 7 + 4
    for limit in (1, 2, 3, 5, 13):
        ids, after, pages = [], None, 0
        while True:
            page = oai.fine_tuning.jobs.list_events(job.id, limit=limit, **({"after": after} if after else {}))
            pages += 1
            ids += [e.id for e in page.data]
            if not page.has_more:
                break
            assert len(page.data) == limit
            after = page.data[-1].id
        assert ids == [e.id for e in everything.data], limit
        assert pages == -(-len(ids) // limit)  # has_more is exact: never an empty last page
    assert [e.created_at for e in everything.data] == sorted((e.created_at for e in everything.data), reverse=True)

    metrics = [e for e in everything.data if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [7, 6, 5, 4, 3, 2, 1]
    four = next(e for e in metrics if e.data["step"] == 4)
    assert four.object == "fine_tuning.job.event" and four.level == "info" and four.message.startswith("Step 4/7")
    assert four.data["total_steps"] == 7 and four.data["train_loss"] == 0.5
    assert four.data["train_mean_token_accuracy"] == pytest.approx(0.4)
    assert four.data["valid_loss"] == four.data["full_valid_loss"] == 1.5 and four.data["valid_exact_match"] == 0.25
    assert four.data["candidates"] == 8 and four.data["selected"] == 2 and four.data["alpha"] == 0.3
    assert four.data["selection_stats"] == STATS
    assert "valid_loss" not in next(e for e in metrics if e.data["step"] == 3).data
    note = next(e for e in everything.data if e.message == "careful")
    assert note.level == "warn" and note.type == "message" and note.data == {"kind": "note"}

    for bad in ("ftevent-999999", f"ftevent-{'0' * 24}-step-1", "nonsense"):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.fine_tuning.jobs.list_events(job.id, after=bad)
        assert caught.value.param == "after"


def test_checkpoints(oai, openai_server, training_file):
    job = create(oai, training_file, suffix="s")
    with sessions(openai_server)() as session:
        for step, eval_loss in ((3, None), (6, 1.25)):
            session.add(
                Checkpoint(
                    job_id=job.id,
                    step=step,
                    path=f"jobs/{job.id}/checkpoints/step-{step:08d}",
                    metrics={
                        "loss": 0.5,
                        "token_accuracy": 0.75,
                        "eval_loss": eval_loss,
                        "eval_accuracy": None if eval_loss is None else 0.5,
                    },
                )
            )
        session.commit()
    page = oai.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in page.data] == [6, 3] and page.has_more is False
    six = page.data[0]
    assert (
        six.object == "fine_tuning.job.checkpoint" and six.id.startswith("ftckpt-") and isinstance(six.created_at, int)
    )
    assert six.fine_tuning_job_id == job.id and six.available is False  # nothing on disk in this test
    org = job.organization_id
    assert six.fine_tuned_model_checkpoint == f"ft:uds-tiny:{org}:s:{job.id}:ckpt-step-6"
    assert six.metrics.step == 6 and six.metrics.train_loss == 0.5 and six.metrics.train_mean_token_accuracy == 0.75
    assert six.metrics.valid_loss == six.metrics.full_valid_loss == 1.25 and six.metrics.valid_exact_match == 0.5
    assert page.data[1].metrics.valid_loss is None
    first = oai.fine_tuning.jobs.checkpoints.list(job.id, limit=1)
    assert [c.step_number for c in first.data] == [6] and first.has_more is True
    rest = oai.fine_tuning.jobs.checkpoints.list(job.id, limit=1, after=first.data[0].id)
    assert [c.step_number for c in rest.data] == [3] and rest.has_more is False


def succeed(server, job_id: str, organization: str, archive: bytes, steps: int = 3) -> None:
    """What the worker leaves behind when a job succeeds."""
    from api.ids import fine_tuned_model_name

    relative = f"jobs/{job_id}/adapter.tar.gz"
    path = server.settings.resolve(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    with sessions(server)() as session:
        job = session.get(Job, job_id)
        add_steps(server, job_id, range(1, steps + 1), job.created_at)
        job.status, job.finished_at = "succeeded", job.created_at + dt.timedelta(seconds=30)
        job.current_step, job.tokens_trained = steps, 1234
        job.adapter_path, job.adapter_bytes, job.adapter_sha256 = relative, len(archive), "0" * 64
        job.fine_tuned_model = fine_tuned_model_name(job.model, organization, job.suffix, job.id)
        session.commit()


def test_a_succeeded_job_has_result_files_and_is_a_model(oai, openai_server, training_file):
    job = create(oai, training_file, suffix="done", extra_body={"max_steps": 3})
    archive = b"\x1f\x8b pretend this is a tar.gz"
    succeed(openai_server, job.id, job.organization_id, archive)

    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.trained_tokens == 1234 and done.estimated_finish is None
    assert done.fine_tuned_model == f"ft:uds-tiny:{job.organization_id}:done:{job.id}"
    assert len(done.result_files) == 2 and oai.fine_tuning.jobs.retrieve(job.id).result_files == done.result_files
    csv_id, adapter_id = done.result_files
    results = {f.id: f for f in oai.files.list(purpose="fine-tune-results")}
    assert set(results) == {csv_id, adapter_id}
    assert {f.purpose for f in results.values()} == {"fine-tune-results"}
    assert {f.id for f in oai.files.list()} == {training_file.id, csv_id, adapter_id}
    assert all(f.created_at == done.finished_at for f in results.values())

    text = oai.files.content(csv_id).text
    assert len(text.encode()) == results[csv_id].bytes
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[1]["train_loss"] == "1.0"
    assert rows[0]["selected"] == "2" and rows[0]["selected_utility_mean"] == "1.0" and rows[0]["valid_loss"] == ""
    assert rows[0]["groups"] == "4" and rows[0]["spearman_utility_length"] == "0.25"
    assert rows[0]["mean_length_selected"] == "44.0"
    assert oai.files.content(adapter_id).content == archive and results[adapter_id].bytes == len(archive)
    with pytest.raises(openai.BadRequestError) as caught:
        oai.files.delete(csv_id)
    assert caught.value.code == "file_not_deletable"
    with pytest.raises(openai.NotFoundError):
        openai_server.client().files.content(adapter_id)

    models = {m.id: m for m in oai.models.list()}
    assert "uds-tiny" in models and models["uds-tiny"].owned_by == "system"
    tuned = oai.models.retrieve(done.fine_tuned_model)
    assert tuned == models[done.fine_tuned_model] and tuned.owned_by == job.organization_id
    assert tuned.created == done.finished_at and tuned.object == "model"
    assert oai.models.retrieve("uds-tiny").id == "uds-tiny"
    with pytest.raises(openai.NotFoundError):
        openai_server.client().models.retrieve(done.fine_tuned_model)
    with pytest.raises(openai.BadRequestError):
        oai.fine_tuning.jobs.cancel(job.id)


def test_listing_files_records_result_files_of_jobs_never_retrieved(oai, openai_server, training_file):
    job = create(oai, training_file, extra_body={"max_steps": 3})
    succeed(openai_server, job.id, job.organization_id, b"archive")
    listed = {f.id for f in oai.files.list(purpose="fine-tune-results")}
    assert len(listed) == 2 and set(oai.fine_tuning.jobs.retrieve(job.id).result_files) == listed
