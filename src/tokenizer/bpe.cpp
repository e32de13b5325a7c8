#include "tokenizer/bpe.h"

#include <algorithm>

#include "mind4/status.h"

namespace mind4::tok {

TokenTable::TokenTable(const Vocabulary& vocab) {
  size_t count = 0, total = 0;
  for (const auto& t : vocab.tokens) {
    if (!t.empty()) ++count, total += t.size();
  }
  size_t capacity = 16;
  while (capacity < count * 2) capacity <<= 1;  // load factor <= 0.5 keeps probes short
  slots_.assign(capacity, Slot{0, kNone});
  mask_ = capacity - 1;
  stored_.reserve(count);
  bytes_.reserve(total);
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    const std::string& t = vocab.tokens[id];
    if (t.empty()) continue;
    stored_.push_back({static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(t.size()),
                       {static_cast<uint32_t>(id), vocab.merge_rank[id]}});
    bytes_.append(t);
    uint64_t h = hash(t.data(), t.size());
    size_t i = h & mask_;
    while (slots_[i].entry != kNone) i = (i + 1) & mask_;
    slots_[i] = {static_cast<uint32_t>(h >> 32), static_cast<uint32_t>(stored_.size() - 1)};
  }
}

namespace {

constexpr uint32_t kNone = TokenTable::kNone;
// Above this many bytes the O(n * merges) array scan loses to the heap.
constexpr size_t kArrayScanLimit = 96;

void emit(const TokenTable& table, const char* data, size_t size, std::vector<int>& out) {
  const TokenTable::Entry* e = table.find(data, size);
  MIND4_CHECK(e != nullptr, Status::kInvalidArgument,
              "the vocabulary has no token for a byte sequence of length ", size,
              " (it lacks single-byte tokens)");
  out.push_back(static_cast<int>(e->id));
}

void merge_by_array_scan(const TokenTable& table, std::string_view piece, BpeScratch& s,
                         std::vector<int>& out) {
  const char* p = piece.data();
  const size_t n = piece.size();
  auto& bounds = s.bounds;
  auto& ranks = s.ranks;
  bounds.resize(n + 1);
  ranks.resize(n);
  for (size_t i = 0; i <= n; ++i) bounds[i] = static_cast<uint32_t>(i);
  size_t m = n;  // symbols; pairs are 0..m-2
  for (size_t k = 0; k + 1 < m; ++k) ranks[k] = table.rank_of(p + k, 2);
  auto pair_rank = [&](size_t k) {
    return table.rank_of(p + bounds[k], bounds[k + 2] - bounds[k]);
  };
  while (m > 1) {
    uint32_t best = kNone;
    size_t at = 0;
    for (size_t k = 0; k + 1 < m; ++k) {
      if (ranks[k] < best) best = ranks[k], at = k;
    }
    if (best == kNone) break;
    // Symbols `at` and `at+1` become one: drop boundary at+1 and pair at+1.
    std::copy(bounds.begin() + at + 2, bounds.begin() + m + 1, bounds.begin() + at + 1);
    if (at + 2 < m) std::copy(ranks.begin() + at + 2, ranks.begin() + m - 1, ranks.begin() + at + 1);
    --m;
    if (at > 0) ranks[at - 1] = pair_rank(at - 1);
    if (at + 1 < m) ranks[at] = pair_rank(at);
  }
  for (size_t k = 0; k < m; ++k) emit(table, p + bounds[k], bounds[k + 1] - bounds[k], out);
}

void merge_by_heap(const TokenTable& table, std::string_view piece, BpeScratch& s,
                   std::vector<int>& out) {
  const char* p = piece.data();
  const uint32_t n = static_cast<uint32_t>(piece.size());
  s.end.resize(n), s.prev.resize(n), s.next.resize(n);
  s.heap.clear();
  auto later = [](const BpeScratch::HeapItem& a, const BpeScratch::HeapItem& b) {
    return a.key > b.key;
  };
  auto push = [&](uint32_t start, uint32_t right_end) {
    uint32_t r = table.rank_of(p + start, right_end - start);
    if (r == kNone) return;
    s.heap.push_back({(static_cast<uint64_t>(r) << 32) | start, right_end});
    std::push_heap(s.heap.begin(), s.heap.end(), later);
  };
  for (uint32_t i = 0; i < n; ++i) {
    s.end[i] = i + 1;
    s.prev[i] = i == 0 ? kNone : i - 1;
    s.next[i] = i + 1 < n ? i + 1 : kNone;
  }
  for (uint32_t i = 0; i + 1 < n; ++i) push(i, i + 2);
  while (!s.heap.empty()) {
    std::pop_heap(s.heap.begin(), s.heap.end(), later);
    BpeScratch::HeapItem item = s.heap.back();
    s.heap.pop_back();
    uint32_t a = static_cast<uint32_t>(item.key);
    // Stale entries: `a` was absorbed (end == 0) or its right neighbour changed since.
    if (s.end[a] == 0) continue;
    uint32_t b = s.next[a];
    if (b == kNone || s.end[b] != item.right_end) continue;
    s.end[a] = s.end[b];
    s.end[b] = 0;
    s.next[a] = s.next[b];
    if (s.next[b] != kNone) s.prev[s.next[b]] = a;
    if (s.prev[a] != kNone) push(s.prev[a], s.end[a]);
    if (s.next[a] != kNone) push(a, s.end[s.next[a]]);
  }
  for (uint32_t i = 0; i != kNone; i = s.next[i]) emit(table, p + i, s.end[i] - i, out);
}

}  // namespace

void bpe_encode_piece(const TokenTable& table, std::string_view piece, BpeScratch& scratch,
                      std::vector<int>& out) {
  if (piece.empty()) return;
  if (piece.size() == 1) return emit(table, piece.data(), 1, out);
  if (piece.size() <= kArrayScanLimit) return merge_by_array_scan(table, piece, scratch, out);
  merge_by_heap(table, piece, scratch, out);
}

}  // namespace mind4::tok
