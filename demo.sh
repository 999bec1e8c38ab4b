#!/usr/bin/env bash
# Installs the project into .venv and runs the main job on the embedded synthetic gestures:
# generate the dataset, train, evaluate (clip and video accuracy), quantize, export to
# TFLite and time it. Results land in runs/demo/ (report.md, plots, models).
# Extra arguments go to `python -m keras_efficient3d.demo` (see --help).
set -euo pipefail
# The repository's .venv, but the user's folder: --output=myrun lands where demo.sh was run.
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
# pip's and setuptools' chatter (an editable build's warnings) goes to a log, shown on failure.
install_log="$here/.venv/install.log"
install() {
  if ! "$here/.venv/bin/python" -m pip install --quiet "$@" >"$install_log" 2>&1; then
    cat "$install_log" >&2
    echo "demo.sh: pip install $* failed (its output above, and in $install_log)" >&2
    exit 1
  fi
}
# Once per setup.py: a second run starts at once, and runs with no package index to reach.
stamp="$here/.venv/.installed-demo"
wanted="$(cksum <"$here/setup.py")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  install --upgrade pip
  install -e "$here[litert]"
  echo "$wanted" >"$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL=2
exec "$here/.venv/bin/python" -m keras_efficient3d.demo "$@"
