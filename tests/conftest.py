"""Fixtures shared by all tests. Nothing here may download anything: the model hub is switched off."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Offline before anything imports transformers or huggingface_hub: a test must fail, not download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# So `tests.utils` and the packages import however pytest is started (the editable install may predate them).
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.utils import datasets as dataset_factories  # noqa: E402


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory):
    """A fresh database at the head revision for each test package that asks (tests/api, tests/worker), once on
    SQLite and once on the real Postgres. One per package: the worker tests' sweeps must not meet the API tests' jobs."""
    from tests.utils.service import migrated_database

    with migrated_database(request.param, f"uds_{Path(request.node.path).name}", tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A uds-tiny model folder, built once per test session (through resolve_model, as the service does)."""
    from uds.models import TINY_MODEL, resolve_model

    return resolve_model(TINY_MODEL, models_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory) -> str:
    """The built-in real model (smollm2-135m-instruct), converted from its wheel's GGUF file once per test session
    into a temporary models folder, through resolve_model as the service does (about half a minute on 2 cores)."""
    from uds.models import REAL_MODEL, resolve_model

    return resolve_model(REAL_MODEL, models_dir=tmp_path_factory.mktemp("real-models"))


@pytest.fixture
def make_jsonl():
    """`make_jsonl(tmp_path, rows)` writes rows (dicts as JSON; str/bytes raw) to tmp_path/data.jsonl."""
    return dataset_factories.make_jsonl
