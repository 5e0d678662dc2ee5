"""The import rules of the layout (uds/ the library, api/ the service, worker/ its jobs, cli/ the command), checked two ways:

- statically, by an AST walk over every module of uds/, api/, worker/ and cli/ that sees imports at any depth
  (inside functions too, where a lazy import hides from a run-time check): uds/ imports nothing of ours, api/ imports
  neither worker/ nor cli/ nor the ML stack, worker/ does not import cli/, and every uds module api/ imports is
  free of the ML stack at import time;
- at run time, by driving the API in a fresh interpreter and listing what it loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.service import REPO, child_env

HEAVY = {"torch", "transformers", "peft", "numpy", "safetensors", "tokenizers", "tqdm"}
FORBIDDEN = {  # package -> top-level packages it must never import, at any depth
    "uds": {"api", "worker", "cli"},
    "api": {"worker", "cli"} | HEAVY,
    "worker": {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file; `top_level_only`: those run when it is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this file's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            found += [(base, node.lineno)]
            # `from uds import tiny` imports the module uds.tiny
            found += [
                (f"{base}.{alias.name}", node.lineno) for alias in node.names if _is_module(f"{base}.{alias.name}")
            ]
    return found


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _source(name: str) -> Path:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def import_time_closure(name: str) -> set[str]:
    """Every module that importing `name` loads, as far as our own packages go (third-party ones as leaves)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if _is_module(current):
            parents = [".".join(current.split(".")[:i]) for i in range(1, current.count(".") + 1)]
            todo += parents + [m for m, _ in imports(_source(current), top_level_only=True)]
    return seen


# What worker/ may import of api/ (api/__init__.py describes the two rooms); the core imports only itself of api/.
PERSISTENCE_CORE = {
    "api",
    "api.models",
    "api.db",
    "api.settings",
    "api.events",
    "api.webhook_outbox",
    "api.dispatch",
    "api.ids",
    "api.targets",
}


def package_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_the_layout_allows(package):
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in package_files(package)
        for name, line in imports(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not violations, "\n".join(violations)


def test_the_worker_imports_only_the_persistence_core_of_the_api():
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in package_files("worker")
        for name, line in imports(path)
        if name.split(".")[0] == "api" and name not in PERSISTENCE_CORE
    ]
    assert not violations, "\n".join(violations)
    core = [name for name in PERSISTENCE_CORE if name != "api"]
    outside = [
        f"{name} imports {imported}"
        for name in core
        for imported, _ in imports(_source(name))
        if imported.split(".")[0] == "api" and imported not in PERSISTENCE_CORE
    ]
    assert not outside, "\n".join(outside)


def test_uds_modules_the_api_imports_load_no_ml_stack():
    used = {name for path in package_files("api") for name, _ in imports(path) if name.split(".")[0] == "uds"}
    assert used, "the walk found no uds import in api/ (it does validate configs and files with uds)"
    heavy = {name: sorted(m for m in import_time_closure(name) if m.split(".")[0] in HEAVY) for name in used}
    assert not {name: mods for name, mods in heavy.items() if mods}


def test_the_walk_sees_imports_inside_functions(tmp_path):
    sample = REPO / "api" / "_walk_probe_never_committed.py"
    sample.write_text("def f():\n    from worker.runner import run_job\n    import torch\n")
    try:
        assert {name for name, _ in imports(sample)} >= {"worker.runner", "torch"}
        assert imports(sample, top_level_only=True) == []
    finally:
        sample.unlink()


PROBE = """
import sys
from fastapi.testclient import TestClient
from api.main import create_app
from api.settings import Settings
import api.dispatch
settings = Settings(data_dir=sys.argv[1], require_auth=False, min_examples=1)
with TestClient(create_app(settings), client=("127.0.0.1", 1), base_url="http://127.0.0.1:8000") as client:
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
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1:] in ([""], []), f"imported: {result.stdout}"
