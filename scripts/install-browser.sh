#!/usr/bin/env bash
# What tests/test_ui_e2e.py needs: Debian's Chromium (/usr/bin/chromium) and the Python package
# `playwright`, whose bundled driver runs that Chromium through `executable_path`. Playwright's own
# browser download (`playwright install`) is not used and does not work on these machines.
# Idempotent: each step is skipped when already done. Run from anywhere; uses $PYTHON or .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi

if ! "$PYTHON" -c "import playwright.sync_api" 2>/dev/null; then
    "$PYTHON" -m pip install -q "playwright>=1.45"
fi

/usr/bin/chromium --version 2>/dev/null
"$PYTHON" -c "from importlib.metadata import version; print('playwright (Python)', version('playwright'))"
