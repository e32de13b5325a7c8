#include "tokenizer/trainer.h"

#include <algorithm>
#include <fstream>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "mind4/status.h"
#include "tokenizer/regex.h"

namespace mind4::tok {

namespace {

uint64_t pair_key(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

struct Word {
  std::vector<uint32_t> syms;
  int64_t count;
  uint32_t stamp = 0;  // last merge that rewrote this word (dedups the pair->words index)
};

struct Candidate {
  int64_t count;
  uint64_t pair;
  // Max-heap order: higher count first, then the smaller (left, right) ids.
  bool operator<(const Candidate& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

}  // namespace

Vocabulary train_bpe(const std::vector<std::string>& files, const TrainOptions& options,
                     TrainStats* stats_out) {
  const int ordinary = options.vocab_size - static_cast<int>(options.specials.size());
  MIND4_CHECK(ordinary >= 256, Status::kInvalidArgument, "vocabulary size ", options.vocab_size,
              " leaves no room for the 256 byte tokens and ", options.specials.size(),
              " special tokens");
  MIND4_CHECK(!files.empty(), Status::kInvalidArgument, "no input files to train on");
  Regex regex(options.pattern, "training pattern");
  TrainStats stats;

  // 1. Count pieces.
  uint64_t total_bytes = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary | std::ios::ate);
    MIND4_CHECK(in, Status::kIoError, "cannot open training file '", f, "'");
    total_bytes += static_cast<uint64_t>(in.tellg());
  }
  std::unordered_map<std::string, int64_t> piece_counts;
  piece_counts.reserve(1 << 18);
  uint64_t done_bytes = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    MIND4_CHECK(!in.bad(), Status::kIoError, "cannot read training file '", f, "'");
    const std::string text = std::move(ss).str();
    std::string key;
    size_t pos = 0, last_report = 0;
    auto add = [&](size_t b, size_t e) {
      key.assign(text, b, e - b);
      ++piece_counts[key];
      ++stats.pieces;
    };
    while (pos < text.size()) {
      size_t b, e;
      if (!regex.find(text, pos, b, e)) b = e = text.size();
      if (b > pos) add(pos, b);
      if (e == b) {
        if (b >= text.size()) break;
        e = b + 1;
      }
      add(b, e);
      pos = e;
      if (options.progress && pos - last_report > (1 << 20)) {
        options.progress("read", done_bytes + pos, total_bytes);
        last_report = pos;
      }
    }
    done_bytes += text.size();
  }
  stats.bytes = done_bytes;
  stats.unique_pieces = piece_counts.size();
  if (options.progress) options.progress("read", done_bytes, total_bytes);

  // 2. Words as byte ids, sorted so that the run does not depend on hash-map order.
  std::vector<std::pair<std::string, int64_t>> sorted(piece_counts.begin(), piece_counts.end());
  piece_counts = {};
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (auto& [piece, count] : sorted) {
    Word w{{}, count};
    for (unsigned char c : piece) w.syms.push_back(c);
    words.push_back(std::move(w));
  }
  sorted = {};

  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<uint32_t>> pair_words;
  pair_counts.reserve(1 << 16);
  for (uint32_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].syms;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = pair_key(s[i], s[i + 1]);
      pair_counts[k] += words[w].count;
      pair_words[k].push_back(w);
    }
  }
  std::priority_queue<Candidate> heap;
  for (auto& [k, c] : pair_counts) heap.push({c, k});

  // 3. Merge.
  Vocabulary v;
  v.name = "trained";
  v.pattern = options.pattern;
  for (int b = 0; b < 256; ++b) v.tokens.emplace_back(1, static_cast<char>(b));
  std::unordered_map<std::string, uint32_t> id_of;
  for (uint32_t b = 0; b < 256; ++b) id_of[v.tokens[b]] = b;
  const int wanted = ordinary - 256;
  uint32_t stamp = 0;
  std::vector<uint32_t> touched_words;
  std::unordered_set<uint64_t> new_pairs;
  while (static_cast<int>(v.tokens.size()) < ordinary && !heap.empty()) {
    Candidate top = heap.top();
    heap.pop();
    auto it = pair_counts.find(top.pair);
    int64_t now = it == pair_counts.end() ? 0 : it->second;
    if (now != top.count) {  // stale entry: requeue with the current count
      if (now > 0) heap.push({now, top.pair});
      continue;
    }
    if (now <= 0) break;
    uint32_t a = static_cast<uint32_t>(top.pair >> 32), b = static_cast<uint32_t>(top.pair);
    std::string bytes = v.tokens[a] + v.tokens[b];
    uint32_t merged;
    if (auto found = id_of.find(bytes); found != id_of.end()) {
      merged = found->second;  // same bytes reached by another split: reuse, keep ids unique
    } else {
      merged = static_cast<uint32_t>(v.tokens.size());
      id_of.emplace(bytes, merged);
      v.tokens.push_back(std::move(bytes));
      ++stats.merges;
    }
    ++stamp;
    new_pairs.clear();
    std::vector<uint32_t> list = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    for (uint32_t w : list) {
      Word& word = words[w];
      if (word.stamp == stamp) continue;
      word.stamp = stamp;
      auto& s = word.syms;
      bool has = false;
      for (size_t i = 0; i + 1 < s.size(); ++i) has |= (s[i] == a && s[i + 1] == b);
      if (!has) continue;  // stale index entry: an earlier merge rewrote this word
      for (size_t i = 0; i + 1 < s.size(); ++i) pair_counts[pair_key(s[i], s[i + 1])] -= word.count;
      size_t out = 0;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          s[out++] = merged, i += 2;
        } else {
          s[out++] = s[i++];
        }
      }
      s.resize(out);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        uint64_t k = pair_key(s[i], s[i + 1]);
        pair_counts[k] += word.count;
        if (s[i] == merged || s[i + 1] == merged) {
          pair_words[k].push_back(w);
          new_pairs.insert(k);
        }
      }
    }
    pair_counts.erase(top.pair);
    for (uint64_t k : new_pairs) heap.push({pair_counts[k], k});
    if (options.progress && (stats.merges % 16 == 0 || stats.merges == wanted))
      options.progress("merge", stats.merges, wanted);
  }
  if (options.progress) options.progress("merge", stats.merges, wanted);

  v.merge_rank.resize(v.tokens.size());
  for (size_t i = 0; i < v.tokens.size(); ++i) v.merge_rank[i] = static_cast<uint32_t>(i);
  int next_id = static_cast<int>(v.tokens.size());
  for (const auto& s : options.specials) {
    MIND4_CHECK(!s.empty(), Status::kInvalidArgument, "a special token may not be empty");
    v.specials.emplace_back(s, next_id++);
  }
  if (stats_out) *stats_out = stats;
  return v;
}

}  // namespace mind4::tok
