#!/usr/bin/env bash
# On a GPU machine: build the CUDA line, make a random gpt-oss-20b-shaped MXFP4 checkpoint (in
# /tmp, never committed), run `mind4 bench --backend cuda`, then HF transformers at the same shape
# on the same card (scripts/bench_hf.py). Results go to stdout and, when OUT is set, to $OUT.
# Environment: BUILD (build dir), CKPT (checkpoint dir), RUNS (median of), PRESET (20b | 120b),
# HF=0 skips transformers, BENCH_ARGS (extra flags for mind4 bench).
set -euo pipefail
cd "$(dirname "$0")/.."
# Build dependencies carried to a bare machine (see docs/perf-notes.md, CUDA line).
[[ -f .devcarry/env.sh ]] && source .devcarry/env.sh
BUILD=${BUILD:-build-cuda}
PRESET=${PRESET:-20b}
CKPT=${CKPT:-/tmp/mind4-random-$PRESET}
RUNS=${RUNS:-5}
out=${OUT:-/tmp}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMIND4_BENCH=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" | grep -E "error|warning" || true
[[ -f $CKPT/config.json ]] || "$BUILD/mind4" random-checkpoint --out "$CKPT" --preset "$PRESET"
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.mem --format=csv
"$BUILD/mind4" bench --backend cuda --checkpoint "$CKPT" --runs "$RUNS" ${BENCH_ARGS:-} \
  | tee "$out/mind4_bench_$PRESET.txt"
if [[ ${HF:-1} == 1 ]]; then
  PYTHONUNBUFFERED=1 python3 scripts/bench_hf.py --config "$CKPT/config.json" --runs 3 \
    2> "$out/hf_bench_$PRESET.json" | tee "$out/hf_bench_$PRESET.txt"
fi
