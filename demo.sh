#!/usr/bin/env bash
# Installs the project into .venv and runs the main job on the embedded synthetic gestures:
# generate the dataset, train, evaluate (clip and video accuracy), quantize, export to
# TFLite and time it. Results land in runs/demo/ (report.md, plots, models).
# Extra arguments go to `python -m keras_efficient3d.demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[litert]"
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m keras_efficient3d.demo "$@"
