#!/usr/bin/env bash
# The README's main command: install what is missing, build, and run the main job.
# The main job: generate text with the bundled default model (models/default, trained by
# `mind4 train` on the King James Bible), then measure it against the memory-bandwidth bound.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target mind4
echo "== mind4 generate (models/default)"
./build/mind4 generate "And God said" --max-new-tokens 80 --temperature 0.8 --seed 1
echo "== mind4 bench (models/default)"
./build/mind4 bench --checkpoint models/default --prompt-tokens 128 --decode-tokens 64
