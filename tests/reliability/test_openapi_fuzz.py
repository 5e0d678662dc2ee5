"""Schemathesis against the service's own OpenAPI document, every operation of /api/v1 and /v1, in process (ASGI)
with a valid key: no 5xx, and every response matches the schema the document declares for it.

Bounded for CI: UDS_FUZZ_EXAMPLES examples per operation (default 25), no shrinking deadline; about a minute on
two cores. A few real objects exist (a dataset, a finished job) so that some generated requests reach past 404.
Run twice: on SQLite, and on Postgres, which refuses some text SQLite stores (a NUL is a 500 there if it ever
reaches a query).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets

import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis import checks
from sqlalchemy import update

from api.db import migrate, session_factory
from api.main import create_app, prepare
from api.models import Job, utcnow
from api.settings import Settings
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload
from tests.utils.service import fresh_postgres_database, unavailable

KEY = "uds-fuzz-" + secrets.token_hex(16)
EXAMPLES = int(os.environ.get("UDS_FUZZ_EXAMPLES", "25"))


def _build_app(database_url: str | None = None):
    import tempfile

    folder = tempfile.mkdtemp(prefix="uds-fuzz-")
    settings = Settings(
        data_dir=folder,
        database_url=database_url or f"sqlite:///{folder}/fuzz.db",
        broker_url=None,
        require_auth=True,
        bootstrap_api_key=KEY,
        bootstrap_tenant="fuzz",
        min_examples=2,
        max_upload_bytes=64 * 1024,
        embedded_worker=False,
    )
    app = create_app(settings)
    # Schemathesis calls the ASGI app without running its lifespan; do what the lifespan does.
    app.state.local_tenant_id = prepare(settings)
    from fastapi.testclient import TestClient

    client = TestClient(app)
    dataset = upload(client, KEY, jsonl(chat_rows(4))).json()
    job = create_job(client, KEY, dataset["id"]).json()
    with session_factory(settings.sqlalchemy_url).begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job["id"])
            .values(status="succeeded", finished_at=utcnow(), fine_tuned_model=f"ft:uds-tiny:fuzz::{job['id']}")
        )
    queued = create_job(client, KEY, dataset["id"]).json()  # and one still queued
    spare = upload(client, KEY, jsonl(chat_rows(3))).json()  # what generated DELETEs may remove
    comparison = client.post(
        "/api/v1/comparisons",
        headers=bearer(KEY),
        json={"dataset_id": dataset["id"], "eval_dataset_id": spare["id"], "methods": ["random"], "budgets": [0.5]},
    ).json()
    app.state.real_objects = dict(
        dataset=dataset["id"],
        jobs=[job["id"], queued["id"]],
        spare=spare["id"],
        models=["uds-tiny", f"ft:uds-tiny:fuzz::{job['id']}"],
        comparison=comparison["id"],
    )
    return app


def aim_at_real_objects(case, REAL: dict) -> None:
    """Random ids only ever reach the 404 branch; put real ids in the path and in the body's id fields, so the
    generated query parameters and bodies are exercised against objects that exist."""
    pick = hash(repr((case.query, case.body))) % 2
    for name in list(case.path_parameters or {}):
        if name in ("dataset_id", "file_id"):
            case.path_parameters[name] = REAL["spare"] if case.method.upper() == "DELETE" else REAL["dataset"]
        elif name == "job_id":
            case.path_parameters[name] = REAL["jobs"][pick]
        elif name == "model_id":
            case.path_parameters[name] = REAL["models"][pick]
        elif name == "comparison_id":
            case.path_parameters[name] = REAL["comparison"]
    if isinstance(case.body, dict):
        for field in ("dataset_id", "training_file", "eval_dataset_id"):
            if field in case.body and pick:
                case.body[field] = REAL["dataset"]
                case.body["model"] = "uds-tiny"


APP = _build_app()
API = r"^/(api/)?v1/"
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).include(path_regex=API)


def _postgres_app():
    """The same app on a fresh Postgres database (dropped at exit); (None, why) where Postgres is unreachable, and
    the Postgres test then skips (or fails under UDS_REQUIRE_SERVICES=1) naming why."""
    stack = contextlib.ExitStack()
    try:
        url = stack.enter_context(fresh_postgres_database("uds_fuzz"))
    except BaseException as exc:  # pytest's skip/fail outcome at import time
        return None, exc
    atexit.register(stack.close)
    migrate(url)
    return _build_app(url), None


PG_APP, PG_MISSING = _postgres_app()
postgres = schemathesis.openapi.from_asgi("/openapi.json", PG_APP or APP).include(path_regex=API)
FUZZ = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def call_and_validate(case) -> None:
    aim_at_real_objects(case, case.operation.schema.app.state.real_objects)
    case.call_and_validate(
        headers=bearer(KEY),
        checks=[checks.not_a_server_error, checks.response_schema_conformance, checks.content_type_conformance],
    )


@schema.parametrize()
@FUZZ
def test_api_conforms_to_its_openapi_document(case):
    call_and_validate(case)


@postgres.parametrize()
@FUZZ
def test_api_conforms_to_its_openapi_document_on_postgres(case):
    if PG_APP is None:
        unavailable("PostgreSQL", PG_MISSING)
    call_and_validate(case)


def test_the_document_covers_both_apis():
    paths = APP.openapi()["paths"]
    assert any(p.startswith("/api/v1/") for p in paths) and any(p.startswith("/v1/") for p in paths)
    assert len([op for p in paths.values() for op in p]) >= 25
