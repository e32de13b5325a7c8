#include "tokenizer/vocabulary.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "mind4/status.h"

namespace mind4::tok {

const char* const kO200kPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MIND4_CHECK(in, Status::kIoError, "cannot open vocabulary file '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  MIND4_CHECK(!in.bad(), Status::kIoError, "cannot read vocabulary file '", path, "'");
  return std::move(ss).str();
}

int8_t base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool parse_int(std::string_view s, int64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Places a token at `id`, growing the table; rejects duplicates of id or bytes.
void put_token(Vocabulary& v, int64_t id, std::string bytes, const std::string& source,
               std::unordered_map<std::string, int>& seen, size_t line) {
  MIND4_CHECK(id >= 0 && id < (1 << 30), Status::kCorruptFile, "vocabulary file '", source,
              "' line ", line, ": token id ", id, " out of range");
  MIND4_CHECK(!bytes.empty(), Status::kCorruptFile, "vocabulary file '", source, "' line ", line,
              ": empty token");
  if (static_cast<size_t>(id) >= v.tokens.size()) {
    v.tokens.resize(id + 1);
    v.merge_rank.resize(id + 1, kNoRank);
  }
  MIND4_CHECK(v.tokens[id].empty(), Status::kCorruptFile, "vocabulary file '", source, "' line ",
              line, ": token id ", id, " appears twice");
  auto [it, inserted] = seen.emplace(bytes, static_cast<int>(id));
  MIND4_CHECK(inserted, Status::kCorruptFile, "vocabulary file '", source, "' line ", line,
              ": the bytes of token ", id, " are already token ", it->second);
  v.tokens[id] = std::move(bytes);
  v.merge_rank[id] = static_cast<uint32_t>(id);
}

// Lines of "BASE64 RANK", or tiktoken-npm's compact "! START BASE64 BASE64 ..." lines.
void parse_rank_lines(std::string_view text, const std::string& source, Vocabulary& v) {
  std::unordered_map<std::string, int> seen;
  seen.reserve(1 << 18);
  size_t line_no = 0;
  std::string bytes;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    std::vector<std::string_view> fields;
    for (size_t pos = 0; pos <= line.size();) {
      size_t sp = line.find(' ', pos);
      if (sp == std::string_view::npos) sp = line.size();
      if (sp > pos) fields.push_back(line.substr(pos, sp - pos));
      pos = sp + 1;
    }
    if (fields[0] == "!") {
      int64_t next = 0;
      MIND4_CHECK(fields.size() >= 2 && parse_int(fields[1], next), Status::kCorruptFile,
                  "vocabulary file '", source, "' line ", line_no,
                  ": '!' must be followed by a start rank");
      for (size_t i = 2; i < fields.size(); ++i, ++next) {
        MIND4_CHECK(base64_decode(fields[i], bytes), Status::kCorruptFile, "vocabulary file '",
                    source, "' line ", line_no, ": bad base64 '", fields[i], "'");
        put_token(v, next, bytes, source, seen, line_no);
      }
      continue;
    }
    int64_t rank = 0;
    MIND4_CHECK(fields.size() == 2 && parse_int(fields[1], rank), Status::kCorruptFile,
                "vocabulary file '", source, "' line ", line_no,
                ": expected 'BASE64 RANK', got '", line.substr(0, 80), "'");
    MIND4_CHECK(base64_decode(fields[0], bytes), Status::kCorruptFile, "vocabulary file '",
                source, "' line ", line_no, ": bad base64 '", fields[0].substr(0, 80), "'");
    put_token(v, rank, bytes, source, seen, line_no);
  }
  MIND4_CHECK(!seen.empty(), Status::kCorruptFile, "vocabulary file '", source,
              "' holds no tokens");
}

void add_specials(Vocabulary& v, const nlohmann::json& specials, const std::string& source) {
  MIND4_CHECK(specials.is_object(), Status::kCorruptFile, "vocabulary file '", source,
              "': special_tokens must be an object of text -> id");
  for (auto& [text, id] : specials.items()) {
    MIND4_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < (1 << 30),
                Status::kCorruptFile, "vocabulary file '", source, "': special token '", text,
                "' has no valid id");
    v.specials.emplace_back(text, id.get<int>());
  }
}

// GPT-2's printable stand-ins for bytes: Hugging Face byte-level vocabularies spell bytes
// with these code points so that every token is a printable string.
std::vector<int> gpt2_unicode_to_byte() {
  std::vector<int> map(324, -1);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    map[printable ? b : 256 + extra++] = b;
  }
  return map;
}

bool hf_token_bytes(std::string_view s, const std::vector<int>& u2b, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    unsigned char c = s[i];
    if (c < 0x80) {
      cp = c, i += 1;
    } else if ((c >> 5) == 6 && i + 1 < s.size()) {
      cp = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F), i += 2;
    } else {
      return false;  // all stand-ins are below U+0800
    }
    if (cp >= u2b.size() || u2b[cp] < 0) return false;
    out.push_back(static_cast<char>(u2b[cp]));
  }
  return !out.empty();
}

}  // namespace

int Vocabulary::vocab_size() const {
  int n = static_cast<int>(tokens.size());
  for (auto& [text, id] : specials) n = std::max(n, id + 1);
  return n;
}

bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    int8_t a = base64_value(in[i]), b = base64_value(in[i + 1]);
    if (a < 0 || b < 0) return false;
    out.push_back(static_cast<char>((a << 2) | (b >> 4)));
    bool last = i + 4 == in.size();
    if (in[i + 2] == '=') {
      if (!last || in[i + 3] != '=') return false;
      break;
    }
    int8_t c = base64_value(in[i + 2]);
    if (c < 0) return false;
    out.push_back(static_cast<char>(((b & 15) << 4) | (c >> 2)));
    if (in[i + 3] == '=') {
      if (!last) return false;
      break;
    }
    int8_t d = base64_value(in[i + 3]);
    if (d < 0) return false;
    out.push_back(static_cast<char>(((c & 3) << 6) | d));
  }
  return true;
}

std::string base64_encode(std::string_view in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out.push_back(kAlphabet[(n >> 18) & 63]);
    out.push_back(kAlphabet[(n >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=');
    out.push_back(i + 2 < in.size() ? kAlphabet[n & 63] : '=');
  }
  return out;
}

Vocabulary parse_tiktoken_text(std::string_view text, const std::string& source) {
  Vocabulary v;
  v.name = source;
  v.pattern = kO200kPattern;
  parse_rank_lines(text, source, v);
  return v;
}

Vocabulary parse_tiktoken_json(std::string_view text, const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  MIND4_CHECK(!j.is_discarded(), Status::kCorruptFile, "vocabulary file '", source,
              "' is not valid JSON");
  MIND4_CHECK(j.is_object() && j.contains("bpe_ranks") && j["bpe_ranks"].is_string(),
              Status::kCorruptFile, "vocabulary file '", source,
              "' has no string field 'bpe_ranks'");
  MIND4_CHECK(j.contains("pat_str") && j["pat_str"].is_string(), Status::kCorruptFile,
              "vocabulary file '", source, "' has no string field 'pat_str'");
  Vocabulary v;
  v.name = source;
  v.pattern = j["pat_str"].get<std::string>();
  parse_rank_lines(j["bpe_ranks"].get_ref<const std::string&>(), source, v);
  if (j.contains("special_tokens")) add_specials(v, j["special_tokens"], source);
  return v;
}

Vocabulary parse_hf_tokenizer_json(std::string_view text, const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  MIND4_CHECK(!j.is_discarded(), Status::kCorruptFile, "tokenizer file '", source,
              "' is not valid JSON");
  MIND4_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(),
              Status::kCorruptFile, "tokenizer file '", source, "' has no object 'model'");
  const auto& model = j["model"];
  MIND4_CHECK(model.value("type", std::string("BPE")) == "BPE", Status::kUnsupported,
              "tokenizer file '", source, "': model type '", model.value("type", ""),
              "' is not supported (only byte-level BPE)");
  MIND4_CHECK(model.contains("vocab") && model["vocab"].is_object() && model.contains("merges") &&
                  model["merges"].is_array(),
              Status::kCorruptFile, "tokenizer file '", source,
              "': model needs 'vocab' (object) and 'merges' (array)");
  Vocabulary v;
  v.name = source;
  v.whole_piece_lookup = model.value("ignore_merges", false);
  const std::vector<int> u2b = gpt2_unicode_to_byte();
  std::unordered_map<std::string, int> seen, by_text;
  std::string bytes;
  for (auto& [tok, id] : model["vocab"].items()) {
    MIND4_CHECK(id.is_number_integer(), Status::kCorruptFile, "tokenizer file '", source,
                "': vocab entry '", tok, "' has no integer id");
    MIND4_CHECK(hf_token_bytes(tok, u2b, bytes), Status::kUnsupported, "tokenizer file '",
                source, "': vocab entry '", tok,
                "' is not in GPT-2 byte-level form (only byte-level BPE is supported)");
    put_token(v, id.get<int64_t>(), bytes, source, seen, 0);
    v.merge_rank[id.get<int>()] = kNoRank;  // set below for tokens that a merge produces
    by_text.emplace(tok, id.get<int>());
  }
  uint32_t rank = 0;
  for (const auto& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      MIND4_CHECK(sp != std::string::npos, Status::kCorruptFile, "tokenizer file '", source,
                  "': merge '", s, "' is not 'A B'");
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else {
      MIND4_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                  Status::kCorruptFile, "tokenizer file '", source, "': merge ", rank,
                  " is neither 'A B' nor [A, B]");
      a = m[0], b = m[1];
    }
    auto it = by_text.find(a + b);
    MIND4_CHECK(it != by_text.end(), Status::kCorruptFile, "tokenizer file '", source,
                "': merge '", a, " ", b, "' makes a token missing from the vocab");
    // Tokenizers that list the same result twice use the first (lowest) rank.
    v.merge_rank[it->second] = std::min(v.merge_rank[it->second], rank++);
  }
  // Pre-tokenisation: the first Split regex, else ByteLevel's own GPT-2 regex.
  std::string pattern;
  bool byte_level_regex = false;
  auto visit = [&](const nlohmann::json& p, auto& self) -> void {
    if (!p.is_object()) return;
    std::string type = p.value("type", "");
    if (type == "Sequence" && p.contains("pretokenizers")) {
      for (auto& q : p["pretokenizers"]) self(q, self);
    } else if (type == "Split" && pattern.empty() && p.contains("pattern")) {
      const auto& pat = p["pattern"];
      if (pat.contains("Regex")) pattern = pat["Regex"].get<std::string>();
    } else if (type == "ByteLevel" && p.value("use_regex", true)) {
      byte_level_regex = true;
    }
  };
  if (j.contains("pre_tokenizer")) visit(j["pre_tokenizer"], visit);
  if (pattern.empty() && byte_level_regex) pattern = kGpt2Pattern;
  MIND4_CHECK(!pattern.empty(), Status::kUnsupported, "tokenizer file '", source,
              "': no Split regex or ByteLevel(use_regex) pre-tokenizer found");
  v.pattern = pattern;
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& t : j["added_tokens"]) {
      if (!t.contains("content") || !t.contains("id")) continue;
      std::string content = t["content"];
      int id = t["id"];
      // An added token that duplicates a vocab entry stays an ordinary token too.
      v.specials.emplace_back(content, id);
    }
  }
  return v;
}

Vocabulary load_vocabulary_file(const std::string& path) {
  std::string text = read_file(path);
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    if (text.find("\"bpe_ranks\"") != std::string::npos) return parse_tiktoken_json(text, path);
    return parse_hf_tokenizer_json(text, path);
  }
  Vocabulary v = parse_tiktoken_text(text, path);
  std::ifstream sidecar_in(path + ".json", std::ios::binary);
  if (sidecar_in) {
    std::ostringstream ss;
    ss << sidecar_in.rdbuf();
    std::string sidecar = path + ".json";
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    MIND4_CHECK(!j.is_discarded() && j.is_object(), Status::kCorruptFile, "vocabulary sidecar '",
                sidecar, "' is not a JSON object");
    if (j.contains("pattern")) {
      MIND4_CHECK(j["pattern"].is_string(), Status::kCorruptFile, "vocabulary sidecar '",
                  sidecar, "': 'pattern' must be a string");
      v.pattern = j["pattern"].get<std::string>();
    }
    if (j.contains("special_tokens")) add_specials(v, j["special_tokens"], sidecar);
  }
  return v;
}

void write_tiktoken_file(const Vocabulary& vocab, const std::string& path) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    MIND4_CHECK(out, Status::kIoError, "cannot write vocabulary file '", path, "'");
    for (size_t id = 0; id < vocab.tokens.size(); ++id) {
      if (vocab.tokens[id].empty()) continue;
      out << base64_encode(vocab.tokens[id]) << ' ' << id << '\n';
    }
    MIND4_CHECK(out.good(), Status::kIoError, "cannot write vocabulary file '", path, "'");
  }
  nlohmann::json side;
  side["pattern"] = vocab.pattern;
  side["special_tokens"] = nlohmann::json::object();
  for (auto& [text, id] : vocab.specials) side["special_tokens"][text] = id;
  std::ofstream out(path + ".json", std::ios::binary | std::ios::trunc);
  MIND4_CHECK(out, Status::kIoError, "cannot write vocabulary sidecar '", path, ".json'");
  out << side.dump(2) << '\n';
  MIND4_CHECK(out.good(), Status::kIoError, "cannot write vocabulary sidecar '", path, ".json'");
}

}  // namespace mind4::tok
