#!/usr/bin/env bash
# The README's test command: install what is missing, build, run every test.
# The suite is built once, with AddressSanitizer + UndefinedBehaviorSanitizer, and every test runs
# under them: one build instead of two keeps CI within its time on a 2-core machine, and the
# checks it adds (buffer overruns, leaks, signed overflow) matter most for the bad-input tests.
# MIND4_TEST_BUILD=release builds an optimised suite without sanitizers instead (quicker to run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)

if [[ "${MIND4_TEST_BUILD:-sanitize}" == release ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build build -j "$jobs"
  (cd build && ctest --output-on-failure -j "$jobs" --timeout 900)
else
  # -O1 -g1: fast enough for the model tests, file and line in sanitizer reports.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMIND4_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMIND4_CUDA=OFF -DMIND4_BENCH=OFF
  cmake --build build-asan -j "$jobs"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure -j "$jobs" --timeout 1800)
fi
