#!/usr/bin/env bash
# Set up the virtual environment (once) and run the test suite, fully offline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec "$VENV/bin/python" -m pytest -q "$@"
