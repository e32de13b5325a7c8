// Token shards written by `mind4 prepare-data` and read by the trainer.
//
// A shard is <split>_NNNN.bin: a 32-byte little-endian header
//   "MIND4TOK" | u32 version (1) | u32 bytes per token (2 or 4) | u32 vocab_size | u32 0 |
//   u64 token count
// then the token ids. A directory holds train_*.bin and val_*.bin.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/params.h"

namespace mind4::train {

struct TokenShardHeader {
  uint32_t version = 1, width = 2, vocab_size = 0;
  uint64_t count = 0;
};

// Writes one shard atomically (temporary file, then rename).
void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens,
                       uint32_t vocab_size);

// All shards of one split, concatenated.
struct TokenSplit {
  std::vector<int32_t> tokens;
  uint32_t vocab_size = 0;
  std::vector<std::string> files;
};

// Reads dir/<split>_*.bin. Errors name the file: kIoError (missing directory, no shard),
// kCorruptFile (bad magic or version, a size that disagrees with the header, a token id outside
// the shard's vocabulary, shards of different vocabularies).
TokenSplit read_token_split(const std::string& dir, const std::string& split);

// Windows of seq+1 tokens at uniformly drawn offsets: inputs are the first seq, targets the last
// seq. The stream position is the RNG state, so a resumed run draws the same windows.
class BatchSampler {
 public:
  BatchSampler(const TokenSplit& data, int seq, uint64_t seed);
  void next(int batch, int* inputs, int* targets);
  uint64_t state() const { return rng_.state(); }
  void set_state(uint64_t s) { rng_.set_state(s); }

 private:
  const TokenSplit& data_;
  int seq_;
  TrainRng rng_;
};

// The fixed evaluation windows: `count` windows of seq+1 tokens spread evenly over the split.
void eval_window(const TokenSplit& data, int seq, int index, int count, int* inputs, int* targets);

}  // namespace mind4::train
