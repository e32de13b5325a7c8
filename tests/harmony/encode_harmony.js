// The independent oracle of the harmony token tests: encodes rendered conversations with the
// tiktoken npm package (OpenAI's Rust tiktoken as WASM) over o200k_base plus the gpt-oss
// harmony special tokens, special-token text allowed, as openai/harmony's tests do
// (`encoding.encode(expected, allowed_special="all")`).
// usage: node encode_harmony.js STRINGS_FILE   (strings separated by NUL bytes)
// prints one line of space-separated ids per string.
"use strict";
const fs = require("fs");
const path = require("path");
const pkg = path.resolve(__dirname, "../../third_party/node_modules/tiktoken");
const { Tiktoken } = require(path.join(pkg, "lite/tiktoken.cjs"));
const o200k = require(path.join(pkg, "encoders/o200k_base.json"));
// The ids of openai/harmony's HarmonyEncodingName.HARMONY_GPT_OSS (o200k_harmony).
const specials = {
  "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
  "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
  "<|message|>": 200008, "<|call|>": 200012,
};
const enc = new Tiktoken(o200k.bpe_ranks, specials, o200k.pat_str);
const text = fs.readFileSync(process.argv[2], "utf8");
for (const s of text.split("\0")) {
  if (s.length) console.log(Array.from(enc.encode(s, "all")).join(" "));
}
