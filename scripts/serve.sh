#!/usr/bin/env bash
# Runs the service on a fresh machine: embedded default (SQLite, local files, in-process worker) on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/uds serve "$@"
