// A byte-level BPE vocabulary as read from disk, before it is turned into fast lookup tables.
// Three file formats lead here: tiktoken's `.tiktoken` text, tiktoken's JSON (the npm package's
// encoders/*.json) and Hugging Face `tokenizer.json` (byte-level BPE).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mind4::tok {

// The pre-tokenisation pattern of o200k_base (GPT-4o, gpt-oss).
extern const char* const kO200kPattern;
// The pre-tokenisation pattern of GPT-2 (r50k_base).
extern const char* const kGpt2Pattern;

struct Vocabulary {
  std::string name;
  std::string pattern;                 // regex that splits text into pieces
  std::vector<std::string> tokens;     // bytes of each ordinary token by id ("" = id unused)
  std::vector<uint32_t> merge_rank;    // by id: priority when two symbols merge into it
  std::vector<std::pair<std::string, int>> specials;  // text -> id
  // tiktoken looks a whole piece up before merging; HF byte-level BPE only does so when its
  // model has "ignore_merges": true.
  bool whole_piece_lookup = true;

  int vocab_size() const;  // one past the largest id, specials included
};

// Format detection by content: JSON with "bpe_ranks" (tiktoken JSON), JSON with "model"
// (Hugging Face), otherwise `.tiktoken` lines. A `.tiktoken` file may have a sidecar
// `PATH.json` ({"pattern": ..., "special_tokens": {...}}) written by the trainer.
Vocabulary load_vocabulary_file(const std::string& path);

// Parsers of file contents; `source` names the file in error messages.
Vocabulary parse_tiktoken_text(std::string_view text, const std::string& source);
Vocabulary parse_tiktoken_json(std::string_view text, const std::string& source);
Vocabulary parse_hf_tokenizer_json(std::string_view text, const std::string& source);

// Writes `.tiktoken` lines (base64 bytes, space, rank) for ids that have bytes, and the sidecar
// PATH.json with the pattern and special tokens.
void write_tiktoken_file(const Vocabulary& vocab, const std::string& path);

// Standard base64 (RFC 4648, with padding). Returns false on a malformed input.
bool base64_decode(std::string_view in, std::string& out);
std::string base64_encode(std::string_view in);

}  // namespace mind4::tok
