// The independent oracle of the tokenizer tests: generates strings with a fixed seed, encodes
// them with the `tiktoken` npm package (a WASM build of OpenAI's Rust tiktoken) and writes
//   OUT/strings.bin: per string, u32 little-endian byte length + UTF-8 bytes
//   OUT/ids.bin:     per string, u32 count + u32 ids (o200k_base, encode_ordinary)
// The C++ test reads both, encodes the same strings with mind4 and compares.
//
// usage: node tests/tokenizer/oracle.js --out DIR [--count 10000] [--seed 1234]
//                                       [--prose FILE --prose-bytes 1200000]
"use strict";
const fs = require("fs");
const path = require("path");

function parseArgs(argv) {
  const args = { count: 10000, seed: 1234, prose: null, proseBytes: 1200000, out: null };
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (k === "--count") args.count = parseInt(v, 10);
    else if (k === "--seed") args.seed = parseInt(v, 10);
    else if (k === "--prose") args.prose = v;
    else if (k === "--prose-bytes") args.proseBytes = parseInt(v, 10);
    else if (k === "--out") args.out = v;
    else throw new Error("unknown option " + k);
  }
  if (!args.out) throw new Error("--out DIR is required");
  return args;
}

function loadTiktoken() {
  const root = path.resolve(__dirname, "../..");
  const pkg = path.join(root, "third_party/node_modules/tiktoken");
  if (!fs.existsSync(path.join(pkg, "encoders/o200k_base.json"))) {
    console.error("oracle.js: the tiktoken npm package is missing from " + pkg +
                  "; run `bash scripts/setup.sh`");
    process.exit(3);
  }
  const { Tiktoken } = require(path.join(pkg, "lite/tiktoken.cjs"));
  const o200k = require(path.join(pkg, "encoders/o200k_base.json"));
  return new Tiktoken(o200k.bpe_ranks, o200k.special_tokens, o200k.pat_str);
}

// mulberry32: small, fast, and the same on every machine.
function rng(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Code point ranges of scripts, all assigned since Unicode 13 (PCRE2 and Rust's regex crate
// may carry different Unicode versions; characters new in 15/16 are left out on purpose).
const SCRIPTS = {
  latin: [[0x41, 0x5a], [0x61, 0x7a], [0xc0, 0xff], [0x100, 0x17f], [0x180, 0x24f]],
  cyrillic: [[0x410, 0x44f], [0x400, 0x40f], [0x450, 0x45f], [0x460, 0x481], [0x48a, 0x4ff]],
  greek: [[0x391, 0x3a1], [0x3a3, 0x3a9], [0x3b1, 0x3c9], [0x386, 0x386], [0x388, 0x38a],
          [0x3ac, 0x3ce], [0x1f00, 0x1f15]],
  cjk: [[0x4e00, 0x9fa5], [0x3041, 0x3096], [0x30a1, 0x30fa], [0xac00, 0xd7a3], [0x3001, 0x3003],
        [0xff01, 0xff5e]],
  arabic: [[0x621, 0x64a], [0x64b, 0x652], [0x660, 0x669], [0x6f0, 0x6f9], [0x60c, 0x60c],
           [0x61f, 0x61f]],
  devanagari: [[0x905, 0x939], [0x93e, 0x94d], [0x901, 0x903], [0x966, 0x96f], [0x964, 0x965]],
  hebrew_thai: [[0x5d0, 0x5ea], [0x5b0, 0x5bd], [0xe01, 0xe30], [0xe31, 0xe3a], [0xe40, 0xe4e]],
  combining: [[0x300, 0x36f], [0x1ab0, 0x1abd], [0x20d0, 0x20dc]],
  symbols: [[0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e], [0xa1, 0xbf], [0x2010, 0x2027],
            [0x2030, 0x205e], [0x2190, 0x21ff], [0x2200, 0x22ff], [0x20a0, 0x20bf]],
  numbers: [[0x30, 0x39], [0x660, 0x669], [0x966, 0x96f], [0xff10, 0xff19], [0xb2, 0xb3],
            [0x2160, 0x216f], [0x2460, 0x2473], [0xbc, 0xbe]],
};
const WHITESPACE = [" ", " ", " ", "\t", "\n", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009",
                    "\u0085", "\u000b", "\u000c", "\u2028", "\u202f", "\u1680"];
const EMOJI_BASE = [0x1f600, 0x1f64f, 0x1f300, 0x1f5ff, 0x1f680, 0x1f6c5, 0x1f90c, 0x1f93a];
const SKIN = [0x1f3fb, 0x1f3fc, 0x1f3fd, 0x1f3fe, 0x1f3ff];
const ZWJ_FAMILIES = ["\u{1f468}\u200d\u{1f469}\u200d\u{1f467}\u200d\u{1f466}",
                      "\u{1f469}\u200d\u2764\ufe0f\u200d\u{1f468}", "\u{1f3f3}\ufe0f\u200d\u{1f308}",
                      "\u{1f9d1}\u{1f3fd}\u200d\u{1f4bb}", "\u{1f44b}\u{1f3ff}", "\u2764\ufe0f",
                      "\u{1f1fa}\u{1f1f8}", "\u{1f1ef}\u{1f1f5}", "#\ufe0f\u20e3"];
const CONTRACTIONS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'vE", "'m", "'M",
                      "'ll", "'LL", "'lL", "'d", "'D", "'\u017f", "\u2019s", "'"];
const WORDS = ["the", "The", "THE", "hello", "World", "don", "I", "we", "They", "it", "McDonald",
               "iPhone", "naïve", "Straße", "Москва", "привет", "ΑΘΗΝΑ", "λόγος", "東京", "こんにちは",
               "مرحبا", "नमस्ते", "日本語", "user", "HTTPServer", "x", "ab", "DéJà"];
const CODE = [
  "int main(int argc, char** argv) {\n  return 0;\n}\n",
  "def f(x):\n    return [y**2 for y in range(x) if y % 2 == 0]\n",
  "const add = (a, b) => a + b; // sum\n",
  "for (size_t i = 0; i < n; ++i) { out[i] = a[i] * b[i] + c; }\n",
  "if __name__ == \"__main__\":\n\tmain()\n",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;\n",
  "#include <vector>\nstd::vector<int> v{1, 2, 3};\n",
  "fn main() { println!(\"{}\", 42); }\n",
  "    x = {'a': 1, \"b\": [2, 3]}  # comment\n",
  "<div class=\"x\">&amp; <b>bold</b></div>\r\n",
  "https://example.com/path/to?q=1&r=%20#frag",
  "/usr/local/bin//x.sh -- --flag=value\n\n\n",
  "<|endoftext|> <|start|>user<|message|>hi<|end|>",
];

function makeGenerator(rand) {
  const int = (n) => Math.floor(rand() * n);
  const pick = (arr) => arr[int(arr.length)];
  const fromRanges = (ranges) => {
    const [lo, hi] = pick(ranges);
    return String.fromCodePoint(lo + int(hi - lo + 1));
  };
  const scriptNames = Object.keys(SCRIPTS);
  const fragment = () => {
    switch (int(12)) {
      case 0: case 1: {  // a run of one script
        const s = SCRIPTS[pick(scriptNames)];
        let out = "";
        for (let i = 1 + int(12); i > 0; --i) out += fromRanges(s);
        return out;
      }
      case 2: {  // whitespace run
        let out = "";
        for (let i = 1 + int(6); i > 0; --i) out += pick(WHITESPACE);
        return out;
      }
      case 3: {  // digits, sometimes long
        let out = "";
        for (let i = 1 + int(rand() < 0.2 ? 40 : 6); i > 0; --i) out += fromRanges(SCRIPTS.numbers);
        return out;
      }
      case 4: return pick(WORDS) + pick(CONTRACTIONS);
      case 5: {  // emoji, skin tones, ZWJ sequences
        if (rand() < 0.5) return pick(ZWJ_FAMILIES);
        const k = int(EMOJI_BASE.length / 2) * 2;
        const cp = EMOJI_BASE[k] + int(EMOJI_BASE[k + 1] - EMOJI_BASE[k] + 1);
        return String.fromCodePoint(cp) + (rand() < 0.4 ? String.fromCodePoint(pick(SKIN)) : "");
      }
      case 6: return pick(CODE);
      case 7: {  // letters followed by combining marks
        return fromRanges(SCRIPTS.latin) + fromRanges(SCRIPTS.combining) +
               (rand() < 0.5 ? fromRanges(SCRIPTS.combining) : "");
      }
      case 8: return pick(WORDS);
      case 9: {
        let out = "";
        for (let i = 1 + int(8); i > 0; --i) out += fromRanges(SCRIPTS.symbols);
        return out;
      }
      case 10: return " " + pick(WORDS);
      default: return pick(WHITESPACE) + pick(WORDS) + pick(CONTRACTIONS);
    }
  };
  return () => {
    let s = "";
    const n = 1 + int(rand() < 0.1 ? 60 : 10);
    for (let i = 0; i < n; ++i) s += fragment();
    return s;
  };
}

// Long adversarial strings: one character class repeated (the BPE's worst case).
function longRuns() {
  return [" ".repeat(5000), "a".repeat(20000), "\n".repeat(3000), "7".repeat(1001),
          "ab".repeat(4000), "Я".repeat(3000), "🙂".repeat(500), "!?".repeat(2000), ""];
}

function proseStrings(file, maxBytes, rand) {
  const text = fs.readFileSync(file, "utf8");
  const out = [];
  let pos = 0, bytes = 0;
  while (pos < text.length && bytes < maxBytes) {
    const len = 20 + Math.floor(rand() * 3000);
    let end = Math.min(text.length, pos + len);
    // Never cut a surrogate pair in half: the pieces must stay valid Unicode.
    if (end < text.length && /[\ud800-\udbff]/.test(text[end - 1])) ++end;
    const s = text.slice(pos, end);
    out.push(s);
    bytes += Buffer.byteLength(s, "utf8");
    pos = end;
  }
  return out;
}

function main() {
  const args = parseArgs(process.argv);
  const enc = loadTiktoken();
  const rand = rng(args.seed);
  const gen = makeGenerator(rand);
  const strings = longRuns();
  for (let i = 0; i < args.count; ++i) strings.push(gen());
  if (args.prose) strings.push(...proseStrings(args.prose, args.proseBytes, rand));

  const strParts = [], idParts = [];
  for (const s of strings) {
    const b = Buffer.from(s, "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    strParts.push(len, b);
    const ids = enc.encode_ordinary(s);
    const ib = Buffer.alloc(4 + 4 * ids.length);
    ib.writeUInt32LE(ids.length, 0);
    for (let i = 0; i < ids.length; ++i) ib.writeUInt32LE(ids[i], 4 + 4 * i);
    idParts.push(ib);
  }
  enc.free();
  fs.mkdirSync(args.out, { recursive: true });
  fs.writeFileSync(path.join(args.out, "strings.bin"), Buffer.concat(strParts));
  fs.writeFileSync(path.join(args.out, "ids.bin"), Buffer.concat(idParts));
  console.log(`oracle.js: ${strings.length} strings written to ${args.out}`);
}

main();
