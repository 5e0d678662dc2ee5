"""`uds export` on a `uds train` output folder: the merged folder, or the GGUF file with its Modelfile, next to
the run; the same writers as the service's exports (tests/uds/test_gguf_export.py reads their files back)."""

from __future__ import annotations

import pytest

from cli.main import main
from tests.utils.gguf_models import add_random_adapter, build_gguf_ready_model


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """What `uds train --output-dir run --model FOLDER` leaves: run/adapter naming the base folder."""
    root = tmp_path_factory.mktemp("cli-export")
    base = build_gguf_ready_model(root / "base", "llama")
    add_random_adapter(base, root / "my-run" / "adapter")
    return root / "my-run"


def test_uds_export_writes_gguf_and_merged_next_to_the_run(run_folder, capsys):
    assert main(["export", str(run_folder), "--gguf", "--quantization", "q8_0"]) == 0
    out = run_folder / "export-gguf-q8_0"
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "my-run-q8_0.gguf"]
    assert capsys.readouterr().err.strip().endswith(f"cd {out} && ollama create my-run -f Modelfile")
    assert main(["export", str(run_folder)]) == 0
    assert (run_folder / "export-merged" / "model.safetensors").is_file()
    assert main(["export", str(run_folder)]) == 2  # never over an earlier export
    assert "exists" in capsys.readouterr().err


def test_uds_export_says_what_it_needs(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--quantization", "q8_0"]) == 2
    assert "--quantization applies to --gguf exports only" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing-here"), "--gguf"]) == 1
    assert "neither a finished `uds train` output folder" in capsys.readouterr().err
