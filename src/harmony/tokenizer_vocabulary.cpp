// harmony::Vocabulary over mind4::Tokenizer. Kept in its own file so that code using harmony
// with another vocabulary does not pull in the tokenizer.
#include "mind4/harmony.h"
#include "mind4/tokenizer.h"

namespace mind4::harmony {
namespace {

class TokenizerVocabulary final : public Vocabulary {
 public:
  explicit TokenizerVocabulary(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::optional<int> special_id(std::string_view text) const override {
    return tokenizer_.special_id(text);
  }
  bool is_special(int id) const override { return tokenizer_.is_special(id); }
  std::string_view token_bytes(int id) const override { return tokenizer_.token_bytes(id); }
  int vocab_size() const override { return tokenizer_.vocab_size(); }
  std::vector<int> encode_ordinary(std::string_view text) const override {
    return tokenizer_.encode(text);
  }

 private:
  const Tokenizer& tokenizer_;
};

}  // namespace

std::unique_ptr<Vocabulary> vocabulary_of(const Tokenizer& tokenizer) {
  return std::make_unique<TokenizerVocabulary>(tokenizer);
}

}  // namespace mind4::harmony
