#!/usr/bin/env bash
# Installs the project and its test dependencies into .venv, lints the tree (ruff, configured in
# ruff.toml), then runs the whole test suite (slow tests included) on the TensorFlow backend and
# the core tier (tests marked `backends`: layers, models, conversion, save/load, presets) again
# on the JAX and PyTorch backends. Extra arguments go to the first pytest run,
# e.g. ./test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# pip's and setuptools' chatter (an editable build's warnings) goes to a log, shown on failure.
install() {
  if ! .venv/bin/python -m pip install --quiet "$@" >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "test.sh: pip install $* failed (its output above, and in .venv/install.log)" >&2
    exit 1
  fi
}
# Once per setup.py and constraints: a second run starts with the tests.
stamp=.venv/.installed-tests
wanted="$(cat setup.py .ci/constraints.txt | cksum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  install --upgrade pip
  # The constraints pin torch's CPU wheel: a plain `torch` would pull the multi-GB CUDA build.
  # PyPI has no `+cpu` build: PyTorch's own index serves it, where it can be reached (a
  # machine whose pip is set up with its own mirror or wheel folder gets it from there).
  cpu_index=https://download.pytorch.org/whl/cpu
  extra=()
  if .venv/bin/python -c "import urllib.request as u; u.urlopen('$cpu_index/', timeout=5)" 2>/dev/null; then
    extra=(--extra-index-url "$cpu_index")
  fi
  install ${extra[@]+"${extra[@]}"} -c .ci/constraints.txt -e ".[dev]"
  echo "$wanted" >"$stamp"
fi
.venv/bin/ruff check --quiet .
export TF_CPP_MIN_LOG_LEVEL=2
# The two backend tiers start first, each in its own process (a process has one backend),
# and run beside the main tier: they fill the time its two workers spend waiting on the
# subprocesses they start (one after the other, the tiers added 3.6 minutes to 16).
# XLA's backend optimisation off for the JAX tier and for the JAX processes the main tier's
# tests start (a .keras file loaded on the next backend: 58 against 35 CPU-seconds): they
# check results, not speed, and their compilations (a train step of a ShuffleNetV2: 80 s)
# take half the time. TensorFlow runs no XLA on a CPU (Keras' jit_compile="auto").
export XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true}"
logs=$(mktemp -d)
# JAX's persistent compilation cache, one for the run (in its temporary folder): the JAX tier
# and the main tier's JAX processes compile some steps more than once (a model saved, then
# loaded or resumed; the same small model in several tests). The JAX tier alone: 429 against
# 378 CPU-seconds.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$logs/jax-cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.5}"
# The PyTorch tier, the quicker, also runs the tier's slow tests (more model families).
declare -A marks=([jax]="backends and not slow" [torch]="backends")
for backend in jax torch; do
  KERAS_BACKEND=$backend \
    .venv/bin/python -m pytest -q -p no:cacheprovider -m "${marks[$backend]}" tests/test_backends.py \
    >"$logs/$backend.log" 2>&1 &
  eval "pid_$backend=$!"
done
# A Ctrl-C or a failure stops them too (background jobs of a script ignore SIGINT).
trap 'kill "$pid_jax" "$pid_torch" 2>/dev/null || true; rm -rf "$logs"' EXIT
# Two workers (pytest-xdist), one test file each at a time: many tests wait on subprocesses
# that import TensorFlow single-threaded. TEST_WORKERS=0 runs in this process. The files go
# out in the order tests/conftest.py gives them, the longest first.
workers="${TEST_WORKERS:-2}"
status=0
.venv/bin/python -m pytest -q -n "$workers" --dist loadfile --no-loadscope-reorder "$@" || status=$?
for backend in jax torch; do
  pid_var="pid_$backend"
  wait "${!pid_var}" || status=$?
  echo "== KERAS_BACKEND=$backend: the core tier (-m \"${marks[$backend]}\")"
  cat "$logs/$backend.log"
done
exit $status
