// Byte-level BPE training under a pre-tokenisation regex (what `mind4 train-tokenizer` runs).
//
// Pieces are counted once in a hash map; then each merge updates pair counts only in the words
// that contain the merged pair (an index from pair to words), so a merge costs the size of
// those words, not of the corpus. Deterministic: the pair with the highest count is merged;
// ties go to the pair whose left id is smaller, then whose right id is smaller. Ids 0..255 are
// the single bytes (id == byte value); merge k gets id 256 + k; special tokens follow.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tokenizer/vocabulary.h"

namespace mind4::tok {

struct TrainOptions {
  std::string pattern = kO200kPattern;
  int vocab_size = 4096;              // ordinary tokens + specials
  std::vector<std::string> specials;  // appended after the ordinary tokens
  // Called with (stage, done, total): stage is "read" (bytes) or "merge" (merges).
  std::function<void(const char* stage, uint64_t done, uint64_t total)> progress;
};

struct TrainStats {
  uint64_t bytes = 0, pieces = 0, unique_pieces = 0;
  int merges = 0;  // may be fewer than asked when the corpus runs out of pairs
};

Vocabulary train_bpe(const std::vector<std::string>& files, const TrainOptions& options,
                     TrainStats* stats = nullptr);

}  // namespace mind4::tok
