#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the dev dependencies and Chromium, lints and type-checks
# (ruff, mypy: either failing fails the run), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh dev
if ! command -v chromium >/dev/null 2>&1; then
  # Browser tests drive Debian's Chromium; Playwright's own browser download cannot work offline.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will fail" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy uds api
exec .venv/bin/python -m pytest "$@"
