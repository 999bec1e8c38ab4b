#!/usr/bin/env bash
# Installs the project and its test dependencies into .venv, lints the tree (ruff, configured in
# ruff.toml), then runs the whole test suite (slow tests included). Extra arguments go to pytest,
# e.g. ./test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
.venv/bin/ruff check --quiet .
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q "$@"
