// A byte-level vocabulary for harmony tests that must not depend on the o200k tokenizer: ids
// 0..255 are the bytes, the harmony specials sit at their o200k_harmony ids. It also encodes a
// string "with specials allowed" (special-token text becomes the special id), which is how the
// token-level expectations are formed from the documented strings.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "mind4/harmony.h"

namespace mind4::harmony::testing {

class ByteVocab final : public Vocabulary {
 public:
  ByteVocab() {
    specials_ = {{"<|endoftext|>", 199999}, {"<|return|>", 200002}, {"<|constrain|>", 200003},
                 {"<|channel|>", 200005},   {"<|start|>", 200006},  {"<|end|>", 200007},
                 {"<|message|>", 200008},   {"<|call|>", 200012}};
  }
  explicit ByteVocab(std::map<std::string, int> specials) : specials_(std::move(specials)) {}

  std::optional<int> special_id(std::string_view text) const override {
    auto it = specials_.find(std::string(text));
    if (it == specials_.end()) return std::nullopt;
    return it->second;
  }
  bool is_special(int id) const override { return id >= 256 && !text_of(id).empty(); }
  std::string_view token_bytes(int id) const override {
    if (id < 256) return std::string_view(&kBytes[id], 1);
    return text_of(id);
  }
  int vocab_size() const override { return 201088; }
  std::vector<int> encode_ordinary(std::string_view text) const override {
    std::vector<int> ids;
    for (char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  std::vector<int> encode_allowing_special(std::string_view text) const {
    std::vector<int> ids;
    std::size_t i = 0;
    while (i < text.size()) {
      bool matched = false;
      for (const auto& [name, id] : specials_) {
        if (text.substr(i, name.size()) == name) {
          ids.push_back(id);
          i += name.size();
          matched = true;
          break;
        }
      }
      if (!matched) ids.push_back(static_cast<unsigned char>(text[i++]));
    }
    return ids;
  }

 private:
  std::string_view text_of(int id) const {
    for (const auto& [name, value] : specials_) {
      if (value == id) return name;
    }
    return {};
  }
  static inline const std::string kBytes = [] {
    std::string s(256, '\0');
    for (int i = 0; i < 256; ++i) s[i] = static_cast<char>(i);
    return s;
  }();
  std::map<std::string, int> specials_;
};

}  // namespace mind4::harmony::testing
