"""The official `openai` client against a live `uds serve` (embedded: SQLite, in-process worker, uds-tiny on CPU).

One server for the module. The main test is what a user of the OpenAI fine-tuning API does, with UDS settings in
`extra_body`: upload, create, poll until succeeded, read every step's metrics through paginated events, list the
checkpoints, download the result files, and load the adapter with peft and generate. The other tests are the
failure paths as the client raises them.
"""

from __future__ import annotations

import csv
import io
import secrets
import tarfile
import time

import openai
import pytest

from tests.utils.datasets import make_rows
from tests.utils.factories import jsonl
from tests.utils.service import Server, child_env, free_port, with_tiny_model

pytestmark = [pytest.mark.slow]

STEPS = 6
TERMINAL = ("succeeded", "failed", "cancelled")
UDS_SETTINGS = {  # a few real steps of uds-tiny: seconds
    "selection_method": "uds",
    "budget": 0.25,
    "max_steps": STEPS,
    "max_seq_len": 64,
    "micro_batch_size": 2,
    "lora_r": 4,
    "lora_alpha": 8,
    "checkpoint_every": 3,
    "warmup_ratio": 0.0,
    "eval_every": 3,
    "eval_max_new_tokens": 4,
}
HYPERPARAMETERS = {"n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": 6}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("openai")
    with_tiny_model(root / "data", tiny_model_dir)  # the session's uds-tiny, not built again
    key = "uds-" + secrets.token_urlsafe(24)
    server = Server(
        free_port(),
        child_env(
            UDS_DATA_DIR=str(root / "data"),
            UDS_REQUIRE_AUTH="true",
            UDS_BOOTSTRAP_API_KEY=key,
            UDS_BOOTSTRAP_TENANT="acme",
            UDS_MIN_EXAMPLES="4",
            UDS_METRICS_FLUSH_SECONDS="0.5",
        ),
        root / "server.log",
    )
    server.wait_ready()
    server.key = key
    yield server
    server.stop()
    print(f"server log: {server.log_path}\n{server.log(4000)}")  # shown by pytest when a test failed


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def training_file(client):
    return client.files.create(file=("train.jsonl", jsonl(make_rows(48, task="reverse", seed=1))), purpose="fine-tune")


def wait_for(client, job_id: str, statuses=TERMINAL, timeout: float = 150, step: int | None = None):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses and (step is None or job.progress["step"] >= step):
            return job
        assert job.status not in TERMINAL, f"job ended {job.status}: {job.error}"
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout}s"
        time.sleep(0.5)


def all_events(client, job_id: str, limit: int) -> list:
    """Page by hand with `after`, checking `has_more` on the way."""
    events, after = [], None
    while True:
        page = client.fine_tuning.jobs.list_events(job_id, limit=limit, **({"after": after} if after else {}))
        events += page.data
        assert len(page.data) <= limit
        if not page.has_more:
            return events
        assert len(page.data) == limit
        after = page.data[-1].id


def test_fine_tune_with_the_openai_client(client, server, training_file, tiny_model_dir, tmp_path):
    assert training_file.id.startswith("file-") and training_file.purpose == "fine-tune"
    assert training_file.status == "processed" and training_file.bytes > 0
    validation = client.files.create(
        file=("valid.jsonl", jsonl(make_rows(4, task="reverse", seed=2))), purpose="fine-tune"
    )

    job = client.fine_tuning.jobs.create(
        model="uds-tiny",
        training_file=training_file.id,
        validation_file=validation.id,
        suffix="reverser",
        seed=7,
        metadata={"team": "search"},
        method={"type": "supervised", "supervised": {"hyperparameters": HYPERPARAMETERS}},
        extra_body=UDS_SETTINGS,
    )
    assert job.object == "fine_tuning.job" and job.id.startswith("ftjob-")
    assert job.status in ("validating_files", "queued", "running")
    assert job.organization_id == "acme" and job.result_files == [] and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 8  # "auto" resolved
    assert job.hyperparameters.learning_rate_multiplier == 6
    assert job.method.type == "supervised" and job.method.supervised.hyperparameters.batch_size == 8
    assert job.seed == 7 and job.metadata == {"team": "search"} and job.validation_file == validation.id
    for name, value in UDS_SETTINGS.items():  # echoed back, resolved
        assert getattr(job, name) == value, name
    # batch_size is the examples trained per optimizer step; the selection group stays TrainConfig's 8.
    assert (
        job.train_batch_size == 8 and job.candidate_batch_size == 8 and job.learning_rate == pytest.approx(6 * 1.5e-4)
    )

    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.error is None and done.finished_at >= done.created_at and done.trained_tokens > 0
    assert done.fine_tuned_model == f"ft:uds-tiny:acme:reverser:{job.id}"
    assert done.estimated_finish is None and len(done.result_files) == 2

    # Every step's metrics event exactly once, whatever the page size; newest first; ids unique.
    events = all_events(client, job.id, limit=4)
    assert [e.id for e in events] == [e.id for e in all_events(client, job.id, limit=50)]
    assert [e.id for e in events] == [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=3)]  # auto-pages
    assert len({e.id for e in events}) == len(events)
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    metrics = [e for e in events if e.type == "metrics"]
    assert sorted(e.data["step"] for e in metrics) == list(range(1, STEPS + 1))
    for event in metrics:
        data = event.data
        assert event.object == "fine_tuning.job.event" and event.level == "info"
        assert data["total_steps"] == STEPS and data["train_loss"] > 0
        assert 0 <= data["train_mean_token_accuracy"] <= 1
        # 48 rows are 6 groups of 8: at least 4 steps an epoch leaves one group a step, k = round(0.25 * 8).
        assert data["candidates"] == 8 and data["selected"] == 2
        stats = data["selection_stats"]
        assert set(stats) == {"candidates", "selected", "groups", "length", "devices", "time_gather", "time_select"}
        assert stats["devices"] == 1 and stats["time_gather"] == 0.0 and stats["time_select"] >= 0
        assert data["selection_stats"]["groups"] == 1 and "spearman_utility_length" in data["selection_stats"]["length"]
        assert set(data["selection_stats"]["selected"]["utility"]) == {"mean", "std", "min", "max"}
        if data["step"] % 3 == 0:
            assert data["valid_loss"] > 0 and data["full_valid_loss"] == data["valid_loss"]
            assert 0 <= data["valid_exact_match"] <= 1
        else:
            assert "valid_loss" not in data
    messages = [e.message for e in events if e.type == "message"]
    assert any("queued" in m for m in messages) and any(m.startswith("Succeeded") for m in messages)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [6, 3] and checkpoints.has_more is False
    for checkpoint in checkpoints.data:
        assert checkpoint.object == "fine_tuning.job.checkpoint" and checkpoint.fine_tuning_job_id == job.id
        assert checkpoint.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        assert checkpoint.metrics.step == checkpoint.step_number and checkpoint.metrics.train_loss > 0
        assert checkpoint.metrics.valid_loss > 0
    page = client.fine_tuning.jobs.checkpoints.list(job.id, limit=1)
    assert [c.step_number for c in page.data] == [6] and page.has_more is True
    page = client.fine_tuning.jobs.checkpoints.list(job.id, limit=1, after=page.data[0].id)
    assert [c.step_number for c in page.data] == [3] and page.has_more is False

    # Result files: the per-step CSV and the adapter archive, both through files.content.
    csv_id, adapter_id = done.result_files
    files = {f.id: f for f in client.files.list(purpose="fine-tune-results")}
    assert {csv_id, adapter_id} <= set(files) and files[csv_id].purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(csv_id).text)))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert all(float(r["train_loss"]) > 0 and r["selected"] == "2" for r in rows)
    assert rows[2]["valid_loss"] and not rows[0]["valid_loss"]
    archive = client.files.content(adapter_id).content
    assert len(archive) == files[adapter_id].bytes == client.files.retrieve(adapter_id).bytes
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    adapter_dir = tmp_path / "adapter"
    assert (adapter_dir / "adapter_config.json").exists() and (adapter_dir / "adapter_model.safetensors").exists()
    assert client.files.content(training_file.id).content == jsonl(make_rows(48, task="reverse", seed=1))

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    inputs = tokenizer("Reverse: abcd", return_tensors="pt")
    with torch.no_grad():
        base_logits = base(**inputs).logits
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    with torch.no_grad():
        tuned_logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert not torch.allclose(base_logits, tuned_logits)  # the adapter is trained, not the zero init
    assert generated.shape[1] > inputs["input_ids"].shape[1]

    # The fine-tune is a model now.
    assert done.fine_tuned_model in {m.id for m in client.models.list()}
    model_object = client.models.retrieve(done.fine_tuned_model)
    assert model_object.owned_by == "acme" and model_object.created == done.finished_at

    with pytest.raises(openai.BadRequestError) as caught:  # a finished job cannot be cancelled (400, not 409)
        client.fine_tuning.jobs.cancel(job.id)
    assert caught.value.code == "job_not_cancellable"


def test_cancel_queued_and_running_jobs_and_list_with_limit_and_after(client, training_file):
    settings = {**UDS_SETTINGS, "max_steps": 400, "eval_every": None, "checkpoint_every": 1000}
    running = client.fine_tuning.jobs.create(model="uds-tiny", training_file=training_file.id, extra_body=settings)
    queued = client.fine_tuning.jobs.create(model="uds-tiny", training_file=training_file.id, extra_body=settings)
    # One job at a time in the embedded worker: the second waits in the queue and is cancelled there at once.
    cancelled = client.fine_tuning.jobs.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None

    wait_for(client, running.id, statuses=("running",), step=1, timeout=120)
    client.fine_tuning.jobs.cancel(running.id)  # stops before its next step
    stopped = wait_for(client, running.id, timeout=60)
    assert stopped.status == "cancelled" and stopped.fine_tuned_model is None and stopped.result_files == []
    assert any("Cancel" in e.message for e in client.fine_tuning.jobs.list_events(running.id, limit=100))
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(running.id)

    # limit/after by hand, and the client's auto-pagination, agree with one big page; has_more is exact.
    everything = client.fine_tuning.jobs.list(limit=100)
    assert everything.has_more is False and {queued.id, running.id} <= {j.id for j in everything.data}
    ids, after = [], None
    while True:
        page = client.fine_tuning.jobs.list(limit=1, **({"after": after} if after else {}))
        ids += [j.id for j in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert ids == [j.id for j in everything.data] == [j.id for j in client.fine_tuning.jobs.list(limit=2)]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "search"})] == [
        j.id for j in everything.data if j.metadata == {"team": "search"}
    ]


def test_failures_raise_the_matching_client_errors(client, server, training_file):
    bad = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' * 4
    bad += b'{"messages": [{"role": "user", "content": "no answer"}]}\n'
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    assert "line 5" in caught.value.message and caught.value.code == "invalid_dataset"
    assert caught.value.response.json()["problems"][0]["line"] == 5
    assert all(f.filename != "bad.jsonl" for f in client.files.list())

    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file.id)
    assert caught.value.param == "model" and "uds-tiny" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="uds-tiny", training_file="file-" + "0" * 24)
    assert caught.value.param == "training_file"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="uds-tiny", training_file=training_file.id, extra_body={"bugdet": 0.5})
    assert caught.value.param == "bugdet" and caught.value.code == "unknown_parameter"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-" + "0" * 24)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")

    stranger = openai.OpenAI(base_url=f"{server.url}/v1", api_key="uds-" + "x" * 40, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.fine_tuning.jobs.list()
    assert caught.value.code == "invalid_api_key"
