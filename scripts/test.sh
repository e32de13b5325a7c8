#!/usr/bin/env bash
# The README's test command: install what is missing, build, run every test.
# MIND4_SANITIZERS=1 also builds and runs the suite under AddressSanitizer + UBSan (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs" --timeout 900)

if [[ "${MIND4_SANITIZERS:-0}" == 1 ]]; then
  echo "== the suite again under AddressSanitizer + UBSan =="
  # -O1 -g1: enough optimisation for the model tests to run quickly, enough debug info for
  # sanitizer reports with file and line, and a fraction of the compile time of -O2 -g.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMIND4_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMIND4_CUDA=OFF -DMIND4_BENCH=OFF
  cmake --build build-asan -j "$jobs"
  (cd build-asan && MIND4_UNDER_SANITIZER=1 ASAN_OPTIONS=detect_leaks=1 \
    ctest --output-on-failure -j "$jobs" --timeout 1800)
fi
