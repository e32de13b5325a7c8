// Builds the tokenizer benchmark text (~3 MB: KJV English and Russian prose from the Debian
// package fortunes-ru, interleaved in 64 KB chunks) and measures the tiktoken npm package's
// single-thread encode speed on it.
// usage: node tests/tokenizer/bench_tiktoken.js KJV_FILE RU_DIR OUT_TEXT
"use strict";
const fs = require("fs");
const path = require("path");

const [kjvFile, ruDir, outFile] = process.argv.slice(2);
const kjv = fs.readFileSync(kjvFile, "utf8");
let ru = "";
for (const f of fs.readdirSync(ruDir).sort()) {
  if (f.endsWith(".dat") || f.endsWith(".u8")) continue;
  const p = path.join(ruDir, f);
  if (fs.statSync(p).isFile()) ru += fs.readFileSync(p, "utf8");
}
const half = 1500000;  // characters of each language; Russian is ~2 bytes per character
const en = kjv.slice(0, half), rus = ru.slice(0, half / 2 + 200000);
let text = "";
for (let i = 0, j = 0; i < en.length || j < rus.length; i += 65536, j += 65536) {
  text += en.slice(i, i + 65536) + rus.slice(j, j + 65536);
}
fs.writeFileSync(outFile, text);
const bytes = Buffer.byteLength(text, "utf8");

const pkg = path.resolve(__dirname, "../../third_party/node_modules/tiktoken");
const { Tiktoken } = require(path.join(pkg, "lite/tiktoken.cjs"));
const o200k = require(path.join(pkg, "encoders/o200k_base.json"));
const enc = new Tiktoken(o200k.bpe_ranks, o200k.special_tokens, o200k.pat_str);
let best = Infinity, tokens = 0;
for (let r = 0; r < 3; ++r) {
  const t0 = process.hrtime.bigint();
  tokens = enc.encode_ordinary(text).length;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  best = Math.min(best, s);
}
console.log(JSON.stringify({ bytes, tokens, seconds: best, mb_per_s: bytes / 1e6 / best }));
