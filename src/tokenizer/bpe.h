// Rank-based byte-pair merging, identical to tiktoken's: in a piece, the adjacent pair whose
// concatenation has the lowest merge rank is merged first, the leftmost one on ties, until no
// adjacent pair forms a token. Short pieces use tiktoken's array scan (fastest for a handful of
// symbols); long pieces use a heap over a linked list so a 100 KB piece costs O(n log n).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocabulary.h"

namespace mind4::tok {

// Open-addressing map from token bytes to (id, merge rank), built once per vocabulary.
class TokenTable {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;
  struct Entry {
    uint32_t id;
    uint32_t rank;
  };

  explicit TokenTable(const Vocabulary& vocab);

  // Entry of the token spelled by these bytes, or nullptr.
  const Entry* find(const char* data, size_t size) const {
    uint64_t h = hash(data, size);
    uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.entry == kNone) return nullptr;
      if (s.tag == tag) {
        const Stored& e = stored_[s.entry];
        if (e.size == size && std::memcmp(bytes_.data() + e.offset, data, size) == 0)
          return &e.value;
      }
    }
  }
  uint32_t rank_of(const char* data, size_t size) const {
    const Entry* e = find(data, size);
    return e ? e->rank : kNone;
  }

  static uint64_t hash(const char* p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
      h ^= h >> 29;
      p += 8, n -= 8;
    }
    if (n) {
      uint64_t w = 0;
      std::memcpy(&w, p, n);
      h = (h ^ w) * 0x94D049BB133111EBull;
    }
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
  }

 private:
  struct Slot {
    uint32_t tag;
    uint32_t entry;
  };
  struct Stored {
    uint32_t offset;
    uint32_t size;
    Entry value;
  };
  std::vector<Slot> slots_;
  std::vector<Stored> stored_;
  std::string bytes_;
  size_t mask_ = 0;
};

// Reusable buffers of one encoding thread, so that merging allocates nothing once warm.
struct BpeScratch {
  std::vector<uint32_t> bounds, ranks;          // array scan
  std::vector<uint32_t> start, end, prev, next;  // linked list (long pieces)
  struct HeapItem {
    uint64_t key;  // rank << 32 | start: min-heap order = lowest rank, then leftmost
    uint32_t right_end;
  };
  std::vector<HeapItem> heap;
};

// Appends the ids of `piece` (any bytes) to `out`. Throws Error if a final symbol is no token
// (only possible for a vocabulary that lacks some single bytes).
void bpe_encode_piece(const TokenTable& table, std::string_view piece, BpeScratch& scratch,
                      std::vector<int>& out);

}  // namespace mind4::tok
