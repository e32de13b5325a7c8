// Encodes a text file with the tiktoken npm package using a .tiktoken vocabulary and its
// sidecar PATH.json (pattern, special tokens) as `mind4 train-tokenizer` writes them.
// Prints the ids separated by spaces. usage: node encode_file.js VOCAB.tiktoken TEXT_FILE
"use strict";
const fs = require("fs");
const path = require("path");
const [vocab, textFile] = process.argv.slice(2);
const pkg = path.resolve(__dirname, "../../third_party/node_modules/tiktoken");
const { Tiktoken } = require(path.join(pkg, "lite/tiktoken.cjs"));
const side = JSON.parse(fs.readFileSync(vocab + ".json", "utf8"));
const enc = new Tiktoken(fs.readFileSync(vocab, "utf8"), side.special_tokens, side.pattern);
const ids = enc.encode_ordinary(fs.readFileSync(textFile, "utf8"));
console.log(Array.from(ids).join(" ") + " ");
