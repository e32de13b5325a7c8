#!/usr/bin/env bash
# The README's main command: install what is missing, build, and run the main job.
# The engine (tokenizer, model, sampler, harmony) is being integrated; until it lands on main the
# main job reports what this build supports. It will run `mind4 generate` on the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target mind4
./build/mind4 info
