#!/usr/bin/env bash
# Set up the virtual environment (once) and run the test suite, fully offline.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Space's browser test drives Debian's headless Chromium (never a browser downloaded by a test framework).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
source scripts/setup.sh
exec "$VENV/bin/python" -m pytest -q "$@"
