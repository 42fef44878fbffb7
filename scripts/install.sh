#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs Vocalis with its bundled models and the official `openai` SDK (the
# README's examples use it). `--dev` adds the test tools and the voice-agent frameworks of the compatibility suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extra="[client]"
[ "${1:-}" = "--dev" ] && extra="[client,dev,compat]"
.venv/bin/pip install --disable-pip-version-check -q -e ".${extra}"
.venv/bin/pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
.venv/bin/vocalis models prepare
# Chromium, for the browser console's test (skipped where it cannot be installed: it needs root and apt).
if [ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
        || echo "install.sh: Chromium could not be installed; the console's browser test will be skipped" >&2
fi
# The official JavaScript SDK, for its end-to-end test (skipped where Node.js is not installed).
if [ "${1:-}" = "--dev" ] && command -v npm >/dev/null; then
    (cd tests/js && npm install --no-audit --no-fund --no-package-lock --silent)
fi
