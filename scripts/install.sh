#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs Vocalis with its bundled models. `--dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
.venv/bin/pip install --disable-pip-version-check -q -e ".${extra}"
.venv/bin/pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
.venv/bin/vocalis models prepare
