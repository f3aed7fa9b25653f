#!/usr/bin/env bash
# Set up the virtual environment (once), lint, and run the test suite, fully offline.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Space's browser test drives Debian's headless Chromium (never a browser downloaded by a test framework).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
source scripts/setup.sh
"$VENV/bin/ruff" check --quiet . || { echo "ruff found problems (pyproject.toml [tool.ruff]); fix them first" >&2; exit 1; }
"$VENV/bin/python" -m pytest -q "$@"
# The Ray fault-tolerance tests (marked `cluster`, left out above: a two-node cluster, killed workers), once, when the
# whole suite was asked for.
if [ $# -eq 0 ]; then
  "$VENV/bin/python" -m pytest -q -m cluster tests/test_ray_engine.py tests/test_ray_cluster.py
fi
