"""api/ must never import torch (or worker/): the API starts fast and runs where no ML stack is installed."""

from __future__ import annotations

import subprocess
import sys

from tests.utils.service import REPO, child_env

PROBE = """
import sys
from fastapi.testclient import TestClient
from api.main import create_app
from api.settings import Settings
import api.cli, api.dispatch
settings = Settings(data_dir=sys.argv[1], require_auth=False, min_examples=1)
with TestClient(create_app(settings), client=("127.0.0.1", 1)) as client:
    data = b'{"prompt": "a", "completion": "b"}\\n'
    ds = client.post("/api/v1/datasets", files={"file": ("a.jsonl", data)}).json()
    job = client.post("/api/v1/jobs", json={"dataset_id": ds["id"], "model": "uds-tiny"}).json()
    assert job["status"] == "queued", job
    client.get(f"/api/v1/jobs/{job['id']}/selections")
    client.get("/api/v1/models"); client.get("/readyz"); client.get("/")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft", "worker", "numpy"))
print(",".join(heavy))
"""


def test_api_does_not_import_torch_or_worker(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO, env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1:] in ([""], []), f"imported: {result.stdout}"
