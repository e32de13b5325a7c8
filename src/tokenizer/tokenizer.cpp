// mind4::Tokenizer: regex pre-tokenisation, whole-piece lookup, cached rank merging, specials.
#include "mind4/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <map>
#include <mutex>
#include <unordered_map>

#include "mind4/status.h"
#include "tokenizer/bpe.h"
#include "tokenizer/builtin.h"
#include "tokenizer/piece_cache.h"
#include "tokenizer/regex.h"
#include "tokenizer/vocabulary.h"

namespace mind4 {

namespace {

std::atomic<uint64_t> next_serial{1};

std::string escape_for_regex(std::string_view text) {
  std::string out;
  for (char c : text) {
    unsigned char u = c;
    if (u < 0x80 && !std::isalnum(u)) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

// A named namespace, not an anonymous one: Tokenizer::Impl (external linkage) holds a Core.
namespace tokenizer_detail {
// Immutable once built; shared by every Tokenizer loaded from the same built-in name.
struct Core {
  std::string name;
  tok::Vocabulary vocab;
  tok::TokenTable table;
  tok::Regex regex;
  std::vector<std::string_view> id_bytes;  // by id, specials included ("" = unused id)
  std::vector<uint8_t> special;
  std::unordered_map<std::string, int> special_ids;
  std::optional<tok::Regex> special_regex;
  uint64_t serial = next_serial++;

  explicit Core(tok::Vocabulary v)
      : name(v.name), vocab(std::move(v)), table(vocab), regex(vocab.pattern, vocab.name) {
    int n = vocab.vocab_size();
    id_bytes.assign(n, {});
    special.assign(n, 0);
    for (size_t id = 0; id < vocab.tokens.size(); ++id) id_bytes[id] = vocab.tokens[id];
    // Longest first, so that the alternation prefers "<|endoftext|>" over a prefix of it.
    std::vector<const std::pair<std::string, int>*> order;
    for (const auto& s : vocab.specials) {
      MIND4_CHECK(!s.first.empty(), Status::kCorruptFile, "vocabulary '", name,
                  "' has an empty special token (id ", s.second, ")");
      special_ids[s.first] = s.second;
      id_bytes[s.second] = s.first;
      special[s.second] = 1;
      order.push_back(&s);
    }
    if (!order.empty()) {
      std::stable_sort(order.begin(), order.end(),
                       [](auto* a, auto* b) { return a->first.size() > b->first.size(); });
      std::string alternation;
      for (auto* s : order) {
        if (!alternation.empty()) alternation += '|';
        alternation += escape_for_regex(s->first);
      }
      special_regex.emplace(alternation, name + " special tokens");
    }
  }
};
}  // namespace tokenizer_detail

namespace {

using tokenizer_detail::Core;

struct ThreadScratch {
  tok::BpeScratch bpe;
  tok::PieceCache cache;
};

ThreadScratch& scratch() {
  thread_local ThreadScratch s;
  return s;
}

void encode_piece(const Core& core, std::string_view piece, ThreadScratch& ts,
                  std::vector<int>& out) {
  if (core.vocab.whole_piece_lookup) {
    if (const auto* e = core.table.find(piece.data(), piece.size())) {
      out.push_back(static_cast<int>(e->id));
      return;
    }
  }
  if (piece.size() > tok::PieceCache::kMaxPiece) {
    tok::bpe_encode_piece(core.table, piece, ts.bpe, out);
    return;
  }
  uint64_t h = tok::TokenTable::hash(piece.data(), piece.size());
  if (ts.cache.lookup(piece, h, out)) return;
  size_t first = out.size();
  tok::bpe_encode_piece(core.table, piece, ts.bpe, out);
  ts.cache.insert(piece, h, std::span<const int>(out.data() + first, out.size() - first));
}

size_t utf8_length_at(std::string_view text, size_t i) {
  unsigned char c = text[i];
  size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  return std::min(n, text.size() - i);
}

void encode_ordinary(const Core& core, std::string_view text, std::vector<int>& out) {
  ThreadScratch& ts = scratch();
  ts.cache.bind(core.serial);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t b, e;
    if (!core.regex.find(text, pos, b, e)) b = e = text.size();
    // Bytes no match covers (invalid UTF-8, or what a custom pattern skips) are merged as a
    // piece of their own, so that decode(encode(x)) == x for any bytes.
    if (b > pos) encode_piece(core, text.substr(pos, b - pos), ts, out);
    if (e == b) {
      if (b >= text.size()) break;
      e = b + utf8_length_at(text, b);  // an empty match: take one character as a piece
    }
    encode_piece(core, text.substr(b, e - b), ts, out);
    pos = e;
  }
}

std::mutex builtin_mutex;
std::map<std::string, std::shared_ptr<const Core>> builtin_cores;

}  // namespace

struct Tokenizer::Impl {
  std::shared_ptr<const tokenizer_detail::Core> core;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& name_or_path) {
  {
    std::lock_guard lock(builtin_mutex);
    auto it = builtin_cores.find(name_or_path);
    if (it != builtin_cores.end()) return Tokenizer(std::make_unique<Impl>(Impl{it->second}));
  }
  if (auto builtin = tok::load_builtin(name_or_path)) {
    auto core = std::make_shared<const Core>(std::move(*builtin));
    std::lock_guard lock(builtin_mutex);
    builtin_cores.emplace(name_or_path, core);
    return Tokenizer(std::make_unique<Impl>(Impl{core}));
  }
  return from_vocabulary_file(name_or_path);
}

Tokenizer Tokenizer::from_vocabulary_file(const std::string& path) {
  return Tokenizer(
      std::make_unique<Impl>(Impl{std::make_shared<const Core>(tok::load_vocabulary_file(path))}));
}

std::vector<int> Tokenizer::encode(std::string_view text) const {
  std::vector<int> out;
  out.reserve(text.size() / 4 + 8);
  encode_ordinary(*impl_->core, text, out);
  return out;
}

std::vector<int> Tokenizer::encode_allowing_special(std::string_view text,
                                                    std::span<const std::string> allowed) const {
  const Core& core = *impl_->core;
  std::vector<int> out;
  out.reserve(text.size() / 4 + 8);
  for (const auto& a : allowed) {
    MIND4_CHECK(core.special_ids.count(a), Status::kInvalidArgument, "'", a,
                "' is not a special token of tokenizer ", core.name);
  }
  size_t pos = 0, search = 0, b = 0, e = 0;
  while (core.special_regex && search < text.size() &&
         core.special_regex->find(text, search, b, e)) {
    std::string_view found = text.substr(b, e - b);
    bool ok = allowed.empty() || std::find(allowed.begin(), allowed.end(), found) != allowed.end();
    if (!ok) {
      search = b + 1;  // a disallowed special stays text; look for the next one
      continue;
    }
    encode_ordinary(core, text.substr(pos, b - pos), out);
    out.push_back(core.special_ids.at(std::string(found)));
    pos = search = e;
  }
  encode_ordinary(core, text.substr(pos), out);
  return out;
}

std::string Tokenizer::decode(std::span<const int> ids) const {
  std::string out;
  size_t total = 0;
  for (int id : ids) total += token_bytes(id).size();
  out.reserve(total);
  for (int id : ids) out.append(impl_->core->id_bytes[id]);
  return out;
}

std::string_view Tokenizer::token_bytes(int id) const {
  const Core& core = *impl_->core;
  MIND4_CHECK(id >= 0 && id < static_cast<int>(core.id_bytes.size()), Status::kTokenOutOfRange,
              "token id ", id, " is out of range for tokenizer ", core.name, " (vocabulary size ",
              core.id_bytes.size(), ")");
  MIND4_CHECK(!core.id_bytes[id].empty(), Status::kTokenOutOfRange, "token id ", id,
              " is unused in tokenizer ", core.name);
  return core.id_bytes[id];
}

std::optional<int> Tokenizer::special_id(std::string_view text) const {
  const auto& ids = impl_->core->special_ids;
  auto it = ids.find(std::string(text));
  if (it == ids.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(int id) const {
  const Core& core = *impl_->core;
  return id >= 0 && id < static_cast<int>(core.special.size()) && core.special[id];
}

int Tokenizer::vocab_size() const {
  return static_cast<int>(impl_->core->id_bytes.size());
}

const std::string& Tokenizer::name() const {
  return impl_->core->name;
}

}  // namespace mind4
