// Per-thread memo of piece -> ids for pieces that need merging. Prose repeats its words, so
// most multi-token pieces (inflected Russian words, rare English ones) are merged once and then
// copied. Fixed-capacity open addressing over two arenas: nothing is allocated once warm; when
// an arena fills, the cache starts over (cheaper than eviction bookkeeping).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mind4::tok {

class PieceCache {
 public:
  static constexpr size_t kMaxPiece = 64;  // longer pieces are rare and not worth keeping

  PieceCache() {
    slots_.assign(kSlots, Slot{});
    keys_.reserve(kKeyBytes);
    ids_.reserve(kIds);
  }

  // The owner's serial: a thread may encode with several tokenizers in turn.
  void bind(uint64_t owner) {
    if (owner != owner_) clear(), owner_ = owner;
  }

  bool lookup(std::string_view piece, uint64_t hash, std::vector<int>& out) const {
    for (size_t i = hash & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return false;
      if (s.hash == hash && s.key_len == piece.size() &&
          std::memcmp(keys_.data() + s.key_off, piece.data(), piece.size()) == 0) {
        out.insert(out.end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.ids_len);
        return true;
      }
    }
  }

  void insert(std::string_view piece, uint64_t hash, std::span<const int> ids) {
    if (used_ * 2 >= kSlots || keys_.size() + piece.size() > kKeyBytes ||
        ids_.size() + ids.size() > kIds)
      clear();
    size_t i = hash & (kSlots - 1);
    while (slots_[i].key_len != 0) i = (i + 1) & (kSlots - 1);
    slots_[i] = {hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(piece.size()),
                 static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(ids.size())};
    keys_.append(piece);
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    ++used_;
  }

 private:
  static constexpr size_t kSlots = 1 << 16;
  static constexpr size_t kKeyBytes = 1 << 20;
  static constexpr size_t kIds = 1 << 18;
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0, key_len = 0, ids_off = 0, ids_len = 0;
  };
  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    used_ = 0;
  }
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int> ids_;
  size_t used_ = 0;
  uint64_t owner_ = 0;
};

}  // namespace mind4::tok
