#!/usr/bin/env bash
# The test command: the whole CPU suite (tiny models built in code, AppTest, one headless
# Chromium test when chromium is installed). Slow real-model tests: ./test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")"
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec python -m pytest --durations=15 "$@"
