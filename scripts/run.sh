#!/usr/bin/env bash
# The README's main command: install what is missing, build, and run the main job.
# Until the bundled default model lands (training issue), the main job runs the engine on the
# committed HF-checked fixture model: tokenize a sentence, a forward pass, and the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target mind4
model=tests/fixtures/yarn32_mxfp4_mha
echo "== mind4 tokenize (o200k_harmony)"
./build/mind4 tokenize --text "Mind 4 reads the gpt-oss architecture end to end."
echo "== mind4 forward on $model (logits -> /tmp/mind4-logits.safetensors)"
./build/mind4 forward --checkpoint "$model" --tokens 1,2,3,4,5,6,7,8 --out /tmp/mind4-logits.safetensors
echo "== mind4 bench on $model"
./build/mind4 bench --checkpoint "$model" --prompt-tokens 64 --decode-tokens 32
