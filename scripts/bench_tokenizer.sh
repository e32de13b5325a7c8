#!/usr/bin/env bash
# Encode throughput, one thread: mind4's o200k tokenizer vs the tiktoken npm package (WASM) on
# the same ~3 MB of mixed English (KJV) and Russian (fortunes-ru) prose. Prints MB/s and ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
cmake --build "$BUILD" --target mind4_bench >/dev/null
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
bible 'Gen1:1-Rev22:21' > "$work/kjv.txt"
node_json=$(node tests/tokenizer/bench_tiktoken.js "$work/kjv.txt" /usr/share/games/fortunes/ru \
  "$work/text.txt")
MIND4_BENCH_TOKENIZER_TEXT="$work/text.txt" taskset -c 0 "$BUILD/mind4_bench" \
  --benchmark_filter=BM_TokenizerEncodeO200k --benchmark_format=json > "$work/mind4.json"
node -e '
  const n = JSON.parse(process.argv[1]);
  const m = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
  const b = m.benchmarks.find(x => x.name.startsWith("BM_TokenizerEncodeO200k"));
  const mind4 = b.bytes_per_second / 1e6;
  console.log(`text: ${(n.bytes / 1e6).toFixed(2)} MB (${n.tokens} tokens), one thread`);
  console.log(`tiktoken npm (WASM): ${n.mb_per_s.toFixed(1)} MB/s`);
  console.log(`mind4:               ${mind4.toFixed(1)} MB/s`);
  console.log(`ratio:               ${(mind4 / n.mb_per_s).toFixed(2)}x`);
  console.log(`cpu: ${m.context.num_cpus} x ${m.context.mhz_per_cpu} MHz`);
' "$node_json" "$work/mind4.json"
